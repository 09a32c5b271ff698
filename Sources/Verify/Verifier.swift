import Chunks
import Foundation
import Glibc
import Ledger
import NBD

/// Re-reads an image from the medium, compares every chunk with the ledger, and reports every
/// mismatch as coalesced byte ranges. A checker never stops at the first problem, and never says
/// "ok" for a byte it did not read: chunks beyond a shrunken image or that failed to read are bad.
public enum Verifier {
    /// How many times a chunk that mismatched is read again before the verdict.
    static let rereads = 3

    /// - `live`: read the image as it is now even when the copy took a ZFS snapshot of it (which
    ///   is otherwise what is read: the exact image the ledger describes).
    /// - `maxRate`: read at most this many bytes a second (so the VMs on the pool keep their I/O).
    public static func run(target: String, imageId: Int64?, ledger: Ledger, progress: ProgressCounter,
                           live: Bool = false, maxRate: UInt64? = nil, resume: Bool = false) throws -> VerifyReport {
        let started = monotonicSeconds()
        let record = try findImage(target: target, imageId: imageId, ledger: ledger)
        guard let expectedSize = record.size, let count = record.chunkCount else {
            throw FerryError(.ledger, "image \(record.id) in \(ledger.path) has no recorded size")
        }
        let rows = try ledger.chunks(image: record.id)
        guard rows.count == count, rows.enumerated().allSatisfy({ $0.offset == $0.element.index }) else {
            throw FerryError(.ledger, "ledger \(ledger.path) holds \(rows.count) chunk rows for image \(record.id), expected \(count)",
                             hint: "the ledger is damaged; restore it from a backup")
        }
        try LedgerCheck.check(record, rows: rows, in: ledger)
        let geometry = ChunkGeometry(size: expectedSize, chunkSize: record.chunkSize)
        // The snapshot stands for the recorded image only: another target checked against this
        // record (`--image ID` naming a copy elsewhere) is read as it is.
        let isRecorded = DeviceIdentity.of(target).canBe(record.names)
        let view = try ImageView.open(target: target, record: record, live: live || !isRecorded)
        defer { view.close() }
        // A source read through its container (or an NBD server) at copy time is read the same way.
        let file = try NBDImage.open(view.readFrom.path, recorded: record.container?.format,
                                     isRecordedPath: isRecorded && view.readFrom.kind == .live)
        defer { file.close() }   // before the view is closed: a clone in use cannot be destroyed
        guard file.kind != .stream else {
            throw FerryError(.usage, "\(target) is a stream; verify needs a file or block device")
        }
        var warnings: [String] = []
        if live, let snap = record.snapshot, snap.held, let name = snap.name {
            warnings.append("read the live image on purpose (--live), not the snapshot \(name) the copy took: differences may be the guest's writes")
        }
        if view.readFrom.kind == .live {
            // The snapshot's guid stands for the medium; the live image's medium must be the recorded one.
            try checkMedium(of: file, against: record)
            let holders = Footprint.holders(of: target, excluding: (file as? NBDImage)?.serverPid.map { [$0] } ?? [])
            if !holders.isEmpty {
                warnings.append("\(target) is open in \(holders.joined(separator: ", ")): differences from the ledger may be its writes (a running VM's), not damage"
                                + (record.snapshot?.held == true ? "; without --live the snapshot the copy took would be read" : "; a copy to ZFS keeps a snapshot that verify reads instead"))
            }
        }
        // Ranges the source could not read at copy time: zeros stand there, and the image is not
        // whole until a resend fills them.
        let unreadableAtCopy = try ledger.unreadable(image: record.id)
        // An image whose last unreadable range a resend filled has no whole-image SHA-256 yet:
        // this full read computes it (and records it only if every chunk matches).
        // --resume: the interrupted verify's place and what it had found, against the same read.
        var resumed: VerifyProgress?
        if resume {
            guard let p = try interruptedVerify(of: record.id, in: ledger) else {
                throw FerryError(.notFound, "the latest verify of image \(record.id) (\(target)) was not interrupted, so there is nothing to resume",
                                 hint: "run it without --resume")
            }
            // Only the same read continues: the same snapshot, or the same live path.
            let sameLive = view.readFrom.kind != .live || p.readFrom?.path == view.readFrom.path
            guard p.readFrom?.kind == view.readFrom.kind, p.snapshotGuid == view.guid, sameLive else {
                throw FerryError(.refused, "the interrupted verify of image \(record.id) read \(p.readFrom?.snapshot ?? "the live image") (guid \(p.snapshotGuid ?? "-")); this one would read \(view.readFrom.snapshot ?? "the live image") (guid \(view.guid ?? "-"))",
                                 hint: "run it without --resume, which reads the whole image again")
            }
            // A resume point the ledger holds must fit the image before anything trusts it.
            let count = record.chunkCount ?? 0
            guard p.resumeAt >= 0, p.resumeAt <= count,
                  (p.mismatched + p.unreadable + p.cached).allSatisfy({ $0 >= 0 && $0 < p.resumeAt }) else {
                throw FerryError(.ledger, "the resume point of image \(record.id)'s interrupted verify in \(ledger.path) does not fit the image (chunk \(p.resumeAt) of \(count))",
                                 hint: "run the verify without --resume")
            }
            resumed = p
        }
        let computeDigest = resumed == nil && record.digestPending && record.sha256 == nil && unreadableAtCopy.isEmpty
        let run = try ledger.startRun(image: record.id, kind: .verify)
        return try ledger.recording(run) {
            // Drop what the cache holds first, with or without O_DIRECT (a file system may accept
            // O_DIRECT and still serve from the cache), so every byte compared comes from the medium.
            file.dropCache()
            let actualSize = file.size ?? 0
            var sizeChanged = false
            if actualSize < expectedSize || (file.kind == .file && actualSize != expectedSize) { sizeChanged = true }
            let readable = min(actualSize, expectedSize)
            let readableChunks = ChunkGeometry(size: readable, chunkSize: record.chunkSize).count

            var mismatched: [Int] = resumed?.mismatched ?? []
            var unreadable = Set<Int>(resumed?.unreadable ?? [])
            // Chunks whose bytes could only have come from memory (see `ImageFile.onlyInMemory`).
            var cached = Set<Int>(resumed?.cached ?? [])
            var bytesRead: UInt64 = resumed?.bytesRead ?? 0
            let start = min(resumed?.resumeAt ?? 0, readableChunks)
            if start > 0 { progress.set(UInt64(start) * UInt64(record.chunkSize)) }
            // The chunks consumed so far are [0, next): a stop records `next` to resume at.
            var next = start
            let pace = maxRate.map { Pace(bytesPerSecond: $0) }
            let pump = ChunkPump(chunkSize: record.chunkSize)
            // Every chunk is visited; a chunk cut short by a shrunken image is read as far as it goes.
            let pass: PumpResult
            do {
            pass = try pump.run(indices: Array(start..<readableChunks), hasher: computeDigest ? SHA256Hasher() : nil, fill: { slot in
                let want = geometry.length(of: slot.index)
                let avail = Int(min(UInt64(want), readable - slot.offset))
                do {
                    let before = file.fetchedBytes
                    let n = try file.read(into: slot.buffer.pointer, count: avail, at: slot.offset)
                    bytesRead += file.fetchedBytes.map { $0 - before! } ?? UInt64(n)
                    try pace?.wait(after: UInt64(n))
                    if file.onlyInMemory(at: slot.offset, count: avail) { cached.insert(slot.index) }
                    if n < avail {
                        unreadable.insert(slot.index)
                        memset(slot.buffer.pointer + n, 0, avail - n)
                    }
                } catch let e as FerryError where e.code == .io {
                    unreadable.insert(slot.index)
                    memset(slot.buffer.pointer, 0, want)
                }
                if avail < want { memset(slot.buffer.pointer + avail, 0, want - avail) }
                return max(avail, 1)
            }, consume: { slot in
                if rows[slot.index].digest != slot.digest || slot.length != geometry.length(of: slot.index) {
                    mismatched.append(slot.index)
                }
                next = slot.index + 1
                progress.add(slot.length)
            })
            } catch var e as FerryError where e.code == .interrupted {
                // Where it stopped and what it had found, so `--resume` goes on from there.
                let saved = VerifyProgress(resumeAt: next, mismatched: mismatched.filter { $0 < next },
                                           unreadable: unreadable.filter { $0 < next }.sorted(), cached: cached.filter { $0 < next }.sorted(),
                                           bytesRead: bytesRead, readFrom: view.readFrom, snapshotGuid: view.guid)
                try? ledger.setRunDetail(run, Ledger.json(saved))
                e.hint = "chunks [0, \(next)) were read; `ferry verify --resume` continues from there"
                throw e
            }

            // A mismatch is read again, from the medium, `rereads` times. Wrong on every read:
            // corrupt. Right on some read: unstable (a `transient` finding), which is not intact
            // either: the medium returned wrong bytes at least once, and may do so again.
            var corrupt: [Int] = []
            var transient: [Int] = []
            let buffer = AlignedBuffer(capacity: record.chunkSize)
            for i in mismatched {
                let want = geometry.length(of: i)
                if unreadable.contains(i) || geometry.offset(of: i) + UInt64(want) > readable {
                    corrupt.append(i)
                    continue
                }
                var matched = 0
                for _ in 0..<Self.rereads {
                    file.dropCache()
                    do {
                        let before = file.fetchedBytes
                        let n = try file.read(into: buffer.pointer, count: want, at: geometry.offset(of: i))
                        bytesRead += file.fetchedBytes.map { $0 - before! } ?? UInt64(n)
                        if file.onlyInMemory(at: geometry.offset(of: i), count: want) { cached.insert(i) }
                        if n == want && Digest.sha256(buffer.pointer, n) == rows[i].digest { matched += 1 }
                    } catch let e as FerryError where e.code == .io {
                        unreadable.insert(i)
                    }
                }
                if matched > 0 && !unreadable.contains(i) { transient.append(i) } else { corrupt.append(i) }
            }
            // A chunk the medium did not return is bad, even when the zeros standing in for it happen
            // to hash like the recorded chunk (a zero chunk): it was not read, so it is not vouched for.
            for i in unreadable where !corrupt.contains(i) { corrupt.append(i) }
            // Chunks past the end of a shrunken image were not there to read: all bad.
            if readableChunks < count { corrupt.append(contentsOf: readableChunks..<count) }
            corrupt = Array(Set(corrupt)).sorted()

            let ranges = BadRange.coalesce(corrupt, geometry: geometry)
            var findings = ranges.map { r in
                Finding(kind: r.firstChunk == r.lastChunk && unreadable.contains(r.firstChunk) ? .unreadable : .corrupt,
                        firstChunk: r.firstChunk, lastChunk: r.lastChunk, offset: r.offset, length: r.length)
            }
            findings += BadRange.coalesce(transient, geometry: geometry).map {
                Finding(kind: .transient, firstChunk: $0.firstChunk, lastChunk: $0.lastChunk, offset: $0.offset, length: $0.length)
            }
            if sizeChanged {
                findings.append(Finding(kind: .size, firstChunk: readableChunks, lastChunk: max(readableChunks, count - 1),
                                        offset: readable, length: expectedSize > actualSize ? expectedSize - actualSize : actualSize - expectedSize,
                                        detail: "expected \(expectedSize) bytes, found \(actualSize)"))
            }
            let status: VerifyStatus = !corrupt.isEmpty || sizeChanged ? .corrupt : !transient.isEmpty ? .unstable
                : !cached.isEmpty ? .unverified : !unreadableAtCopy.isEmpty ? .incomplete : .ok
            var digestRecorded: String?
            if status == .ok, computeDigest, let whole = pass.wholeDigest, mismatched.isEmpty, unreadable.isEmpty {
                try ledger.recordDigest(image: record.id, sha256: whole)
                digestRecorded = whole.hex
            }
            // The findings belong to what was read: the run's detail names it (a snapshot by its guid).
            struct Detail: Encodable { var readFrom: ReadFrom; var snapshotGuid: String?; var resumedAt: Int? }
            try ledger.finishRun(run, image: record.id,
                                 Ledger.RunEnd(result: status.runResult, bytesRead: bytesRead, readMode: file.readMode,
                                               detail: Ledger.json(Detail(readFrom: view.readFrom, snapshotGuid: view.guid,
                                                                          resumedAt: start > 0 ? start : nil))),
                                 findings: findings)
            var report = VerifyReport(target: target, host: nil, ledger: ledger.path, imageId: record.id, runId: run, status: status,
                                expectedSize: expectedSize, actualSize: actualSize, chunkSize: record.chunkSize,
                                chunks: count, badChunks: corrupt.count, badRanges: ranges, transientChunks: transient,
                                cachedChunks: cached.isEmpty ? nil : cached.sorted(),
                                unreadableChunks: unreadable.sorted(), sizeChanged: sizeChanged, bytesRead: bytesRead,
                                readMode: file.readMode, seconds: monotonicSeconds() - started, record: RecordSummary(record),
                                unreadableAtCopy: unreadableAtCopy.isEmpty ? nil : unreadableAtCopy, digestRecorded: digestRecorded,
                                readFrom: view.readFrom, warnings: warnings.isEmpty ? nil : warnings,
                                resumedAt: start > 0 ? start : nil)
            report.format = file.format
            return report
        }
    }

    /// The saved place of an image's latest verify, when that verify was interrupted.
    public static func interruptedVerify(of image: Int64, in ledger: Ledger) throws -> VerifyProgress? {
        guard let last = try ledger.runs(image: image).last(where: { $0.kind == .verify }), last.result == .interrupted,
              let detail = last.detail else { return nil }
        return try? JSONDecoder().decode(VerifyProgress.self, from: Data(detail.utf8))
    }

    /// Refuses a block device whose medium is not the one the copy wrote: loop devices re-attached
    /// to other files, or disks renumbered, keep their /dev names but not their contents.
    public static func checkMedium(of file: any ImageMedium, against record: ImageRecord) throws {
        guard file.kind == .blockDevice, let recorded = record.medium else { return }
        let now = Footprint.medium(rdev: file.device)
        guard now?.id != recorded.id else { return }
        throw FerryError(.refused, "\(file.path) is \(now?.label ?? "a device ferry cannot identify") now, not \(recorded.label) that image \(record.id) recorded",
                         hint: "the name points at another medium since the copy; name the device that holds the image (or --image ID of the right record); nothing was read or written")
    }

    /// The image a verify of `target` checks against: `--image ID`, or the latest complete record
    /// known under any of the target's names.
    public static func findImage(target: String, imageId: Int64?, ledger: Ledger) throws -> ImageRecord {
        if let imageId {
            let r = try ledger.requireImage(imageId)
            guard r.complete else {
                throw FerryError(.refused, "image \(imageId) in \(ledger.path) never completed, so there is nothing trustworthy to verify against",
                                 hint: "finish the copy with `ferry copy --resume` first")
            }
            return r
        }
        let identity = DeviceIdentity.of(target)
        guard let r = try ledger.images(named: identity.names).first(where: { $0.complete && identity.canBe($0.names) }) else {
            throw FerryError(.notFound, "no completed copy of \(target) is recorded in ledger \(ledger.path)",
                             hint: "`ferry ledger list` shows what is recorded; pass --image ID or --ledger PATH")
        }
        return r
    }
}

/// Holds a reader to a rate: after each read it sleeps as long as the bytes so far are ahead of
/// the rate since the start.
final class Pace {
    let bytesPerSecond: Double
    private let started = monotonicSeconds()
    private var bytes: UInt64 = 0

    init(bytesPerSecond: UInt64) { self.bytesPerSecond = Double(max(bytesPerSecond, 1)) }

    func wait(after n: UInt64) throws {
        bytes += n
        let ahead = Double(bytes) / bytesPerSecond - (monotonicSeconds() - started)
        if ahead > 0 {
            try Interrupts.check()
            usleep(UInt32(min(ahead, 5) * 1_000_000))
        }
    }
}

/// Where an interrupted verify stopped, and what it had found before: chunks [0, resumeAt) were
/// read and compared.
public struct VerifyProgress: Codable, Sendable {
    public var resumeAt: Int
    public var mismatched: [Int]
    public var unreadable: [Int]
    public var cached: [Int]
    public var bytesRead: UInt64
    public var readFrom: ReadFrom?
    public var snapshotGuid: String?
}
