import Chunks
import Copy
import Glibc
import Ledger
import Verify
import Wire
import ZFS

/// The destination side of a resend: plans the repair from the ledger (the findings of the
/// image's latest verify, or of a fresh one), asks the source for the sub-blocks that differ,
/// writes them, makes them durable, and re-reads each chunk from the medium to confirm it now
/// matches the ledger. A chunk still wrong after `maxAttempts` is reported unrepairable.
public final class RepairTarget {
    public let path: String
    public let ledger: Ledger
    public let image: ImageRecord
    public let plan: ResendPlan
    /// The verify run whose findings this repair answers.
    public let verifyRun: Int64?
    public let verifyReport: VerifyReport?
    let findings: [Finding]
    let sizeChanged: Bool
    public static let maxAttempts = 3
    /// A repaired chunk is read back from the medium this many times, and every read must match:
    /// one good read from a medium that flaps proves nothing.
    static let readBacks = 3
    public static let defaultSubBlock = 64 << 10
    /// How many more times a resend's source tries each unreadable range after its first try.
    public static let defaultRetries = 2

    init(path: String, ledger: Ledger, image: ImageRecord, plan: ResendPlan, verifyRun: Int64?, verifyReport: VerifyReport?,
         findings: [Finding], sizeChanged: Bool) {
        (self.path, self.ledger, self.image, self.plan) = (path, ledger, image, plan)
        (self.verifyRun, self.verifyReport, self.findings, self.sizeChanged) = (verifyRun, verifyReport, findings, sizeChanged)
    }

    public static func prepare(path: String, ledger: Ledger, imageId: Int64?, verifyFirst: Bool, subBlockSize: Int,
                               retries: Int = defaultRetries, progress: ProgressCounter) throws -> RepairTarget {
        let image = try Verifier.findImage(target: path, imageId: imageId, ledger: ledger)
        // Never repair another image that now answers to the recorded name.
        try Verifier.checkMedium(of: try ImageFile.openForReading(path, direct: false), against: image)
        var report: VerifyReport?
        if verifyFirst {
            // The live image is what a resend repairs, so that is what its verify reads.
            report = try Verifier.run(target: path, imageId: image.id, ledger: ledger, progress: progress, live: true)
        }
        // A ZFS destination keeps the copy's snapshot, and verify reads that: its findings apply
        // to the live image only while the live image is still what the snapshot holds. Once
        // the guest wrote, a resend would overwrite its writes with the copy's bytes.
        if let snap = image.snapshot, snap.held, let name = snap.name {
            guard let found = try? ZFS.describe(name), found.guid == snap.guid else {
                throw FerryError(.refused, "the snapshot \(name) that image \(image.id) was copied into is gone or was taken again, so ferry cannot tell what the live image holds",
                                 hint: "verify it with `ferry verify --live` and repair from that, or copy again")
            }
            let written: UInt64
            do { written = try ZFS.written(since: found) } catch {
                throw FerryError(.refused, "cannot tell whether \(path) changed since the snapshot \(name): \(error)",
                                 hint: "a resend would overwrite any writes since; copy again, or release the snapshot (`ferry ledger release \(image.id)`) and repair the live image after `ferry verify --live`")
            }
            guard written == 0 else {
                throw FerryError(.refused, "\(path) changed since the snapshot \(name) (\(written) bytes written to \(found.dataset)): a resend would overwrite those writes with the copy's bytes",
                                 hint: "the damage found is in the snapshot; the running image may not share it. Copy again, or release the snapshot and repair the live image after `ferry verify --live`")
            }
        }
        // Ranges the source could not read at copy time are always tried again, verified or not.
        let gaps = try ledger.unreadable(image: image.id)
        let latest = try ledger.latestVerify(image: image.id)
        guard latest != nil || !gaps.isEmpty else {
            throw FerryError(.notFound, "image \(image.id) (\(path)) has never been verified, so there is no list of bad chunks",
                             hint: "run `ferry verify \(path)` first, or pass --verify")
        }
        // Unstable chunks (`transient`) are repaired too: a rewrite is how a drive remaps a weak
        // sector, and the read-back then checks it.
        let open = (latest?.findings ?? []).filter { $0.repairedBy == nil }
        let size = image.size ?? 0
        let geometry = ChunkGeometry(size: size, chunkSize: image.chunkSize)
        var indices = Set<Int>()
        for f in open where f.kind != .size {
            for i in f.firstChunk...f.lastChunk where i < geometry.count { indices.insert(i) }
        }
        for g in gaps where g.offset < size {
            let first = Int(g.offset / UInt64(image.chunkSize)), last = Int((g.end - 1) / UInt64(image.chunkSize))
            for i in first...min(last, geometry.count - 1) { indices.insert(i) }
        }
        let rows = try ledger.chunks(image: image.id)
        let chunks = indices.sorted().map { i -> ResendPlan.Chunk in
            let window = geometry.offset(of: i)..<geometry.offset(of: i) + UInt64(geometry.length(of: i))
            let inside = ByteRange.clipped(gaps, to: window)
            return ResendPlan.Chunk(index: i, sha256: rows[i].digest.hex, unreadable: inside.isEmpty ? nil : inside)
        }
        let sub = min(subBlockSize, image.chunkSize)
        var plan = ResendPlan(imageId: image.id, transferId: image.transferId, chunkSize: image.chunkSize, size: size,
                              subBlockSize: sub, chunks: chunks, host: ledger.host, ledger: ledger.path)
        plan.retries = retries
        return RepairTarget(path: path, ledger: ledger, image: image, plan: plan, verifyRun: latest?.run.id, verifyReport: report,
                            findings: open, sizeChanged: open.contains { $0.kind == .size })
    }

    public var nothingToRepair: Bool { plan.chunks.isEmpty && !sizeChanged }

    /// Repairs every planned chunk with the source at the other end of `connection`; sends the
    /// result to it and returns it.
    public func drive(_ connection: Connection, log: (String) -> Void, progress: ProgressCounter) throws -> ResendResult {
        let run = try ledger.startRun(image: image.id, kind: .resend)
        return try ledger.recording(run) {
            // A disk copied into a qcow2 is repaired through the same kind of server it was written with.
            let writer = DestinationWriter(path: path, chunkSize: image.chunkSize, writeZeros: false, ledger: ledger,
                                           format: image.container?.format ?? "raw")
            try writer.open(expectedSize: image.size, source: nil)
            // Claimed (another ferry writing it was refused just now, by name). A resend writes
            // the live image: one that another program has open (a running VM) would lose that
            // program's writes to the bytes the copy had.
            let holders = Footprint.holders(of: path, excluding: writer.serverPid.map { [$0] } ?? [])
            guard holders.isEmpty else {
                throw FerryError(.refused, "\(path) is open in \(holders.joined(separator: ", ")); a resend would overwrite what it writes",
                                 hint: "stop it (shut the VM down) and run the resend again; nothing was written")
            }
            let reader = try writer.reader()
            let geometry = ChunkGeometry(size: plan.size, chunkSize: plan.chunkSize)
            let chunkBuf = AlignedBuffer(capacity: plan.chunkSize)
            // The sub-blocks of one chunk are gathered here and written in runs: a file system
            // with records larger than a sub-block (ZFS, 128K) must not read back a damaged
            // record to change half of it.
            let blockBuf = AlignedBuffer(capacity: plan.chunkSize)
            var outcomes: [ResendResult.ChunkOutcome] = []
            var reread: UInt64 = 0

            /// Reads chunk `index` from the medium (not the cache), one sub-block at a time so that a
            /// bad sector costs only its sub-block: the hash of each sub-block, `.zero` (which never
            /// equals a real hash) for one the medium did not return in full.
            func subBlockDigests(_ index: Int) -> [Digest] {
                reader.dropCache()
                let length = geometry.length(of: index)
                var digests: [Digest] = []
                var start = 0
                while start < length {
                    let len = min(plan.subBlockSize, length - start)
                    let n = (try? reader.read(into: chunkBuf.pointer + start, count: len, at: geometry.offset(of: index) + UInt64(start))) ?? -1
                    reread += UInt64(max(n, 0))
                    digests.append(n == len ? Digest.sha256(chunkBuf.pointer + start, len) : .zero)
                    start += len
                }
                return digests
            }

            /// The whole chunk as the medium returns it now, or nil when it cannot be read in full.
            /// Bytes that could only come from memory (pages another process keeps mapped, with
            /// O_DIRECT refused) prove nothing about the medium: the repair stops there.
            func readBack(_ index: Int) throws -> Digest? {
                reader.dropCache()
                let length = geometry.length(of: index)
                guard let n = try? reader.read(into: chunkBuf.pointer, count: length, at: geometry.offset(of: index)) else { return nil }
                reread += UInt64(n)
                if reader.onlyInMemory(at: geometry.offset(of: index), count: length) {
                    throw FerryError(.refused, "chunk \(index) of \(path) was written and synced, but could only be read back from memory: another process keeps it mapped and O_DIRECT was refused",
                                     hint: "stop the program that maps \(path) (a running VM, say) and run the resend again to check it")
                }
                return n == length ? Digest.sha256(chunkBuf.pointer, n) : nil
            }

            for planned in plan.chunks {
                try Interrupts.check()
                let index = planned.index
                let length = geometry.length(of: index)
                var want = try planned.digest()
                var remaining: [ByteRange]?
                var attempts = 0
                var blocks = 0
                var written: UInt64 = 0
                var status: ResendResult.ChunkOutcome.Status = .failed
                var reason: String?
                while attempts < Self.maxAttempts {
                    attempts += 1
                    // What the destination holds now, sub-block by sub-block.
                    let digests = subBlockDigests(index)
                    try connection.send(.subBlocks, SubBlockDigests(chunk: UInt64(index), blockSize: UInt32(plan.subBlockSize),
                                                                    digests: digests).encode())
                    var writeFailure: FerryError?
                    let supplied = try receiveBlocks(connection, index: index, chunkOffset: geometry.offset(of: index),
                                                     length: length, writer: writer, buffer: blockBuf, log: log,
                                                     blocks: &blocks, written: &written, writeFailure: &writeFailure)
                    if supplied.status == .refused {
                        status = .refused
                        reason = supplied.reason
                        break
                    }
                    let gaps = planned.unreadable ?? []
                    var filling = supplied.status == .filled
                    let stillUnreadable = ByteRange.merged(supplied.stillUnreadable ?? [])
                    // The source may only fill a chunk that has unreadable ranges, and only say
                    // that some of those still do not read.
                    guard !filling || !gaps.isEmpty,
                          stillUnreadable.allSatisfy({ s in gaps.contains { $0.offset <= s.offset && s.length <= $0.end - s.offset } }) else {
                        throw FerryError(.wire, "\(connection.peerName) answered chunk \(index) with unreadable ranges it was not asked about")
                    }
                    if filling && stillUnreadable == gaps {
                        // Nothing more read at the source: the chunk and its record stay as they are,
                        // unless the destination's own bytes needed repairing too (blocks were sent).
                        remaining = stillUnreadable
                        if blocks == 0 && writeFailure == nil {
                            status = .stillUnreadable
                            break
                        }
                        filling = false
                    }
                    let forced = supplied.status == .sent && supplied.sha256 != planned.sha256
                    if filling { want = try Digest.fromWire(supplied.sha256, what: "the source's hash of chunk \(index)") }
                    if forced { want = try Digest.fromWire(supplied.sha256, what: "the source's hash of chunk \(index)") }
                    // Durable first, then read back from the medium and compare. A medium that fails
                    // the write or the sync fails this attempt, not the whole repair.
                    do {
                        if let writeFailure { throw writeFailure }
                        try writer.sync()
                    } catch let e as FerryError where e.code == .io && [.errno(EROFS), .errno(EPERM), .errno(EACCES)].contains(e.cause) {
                        throw FerryError(.refused, "\(path) cannot be written (\(e.message)): it is read-only, not failing",
                                         hint: "make it writable (a read-write mount or loop device, chattr -i) and run the resend again; nothing was marked repaired", cause: e.cause)
                    } catch let e as FerryError where e.code == .io {
                        log("chunk \(index): \(e.message)")
                        reason = e.message
                        continue
                    }
                    if try (0..<Self.readBacks).allSatisfy({ _ in try readBack(index) == want }) {
                        if filling {
                            // The bytes that did read at copy time are untouched: with the recorded
                            // ranges zeroed the chunk read back hashes as recorded.
                            let chunkStart = geometry.offset(of: index)
                            let zeroNow = isAllZero(chunkBuf.pointer, length)
                            for g in gaps { memset(chunkBuf.pointer + Int(g.offset - chunkStart), 0, Int(g.length)) }
                            guard Digest.sha256(chunkBuf.pointer, length) == planned.sha256Digest else {
                                throw FerryError(.wire, "\(connection.peerName) changed chunk \(index) outside its unreadable ranges",
                                                 hint: "the two ends disagree about the source; verify the destination and check the source")
                            }
                            // The chunk now holds what the source read; the ledger takes its hash
                            // and keeps only the ranges that still do not read.
                            let window = ByteRange(offset: geometry.offset(of: index), length: UInt64(length))
                            try ledger.fillChunk(image: image.id, index: index, window: window, digest: want,
                                                 zero: zeroNow, remaining: stillUnreadable)
                            status = stillUnreadable.isEmpty ? .filled : .partlyFilled
                            remaining = stillUnreadable
                            break
                        }
                        status = forced ? .forced : .repaired
                        if forced { try ledger.replaceChunk(image: image.id, index: index, digest: want, zero: isAllZero(chunkBuf.pointer, length)) }
                        break
                    }
                    log("chunk \(index) still reads back wrong after attempt \(attempts)")
                    reason = "still wrong after \(attempts) attempts: the medium does not keep what is written"
                }
                var outcome = ResendResult.ChunkOutcome(index: index, status: status, attempts: attempts, blocksWritten: blocks,
                                                        bytesWritten: written,
                                                        reason: [.repaired, .forced, .filled].contains(status) ? nil : reason)
                outcome.unreadable = remaining.flatMap { $0.isEmpty ? nil : $0 }
                outcomes.append(outcome)
                progress.add(length)
            }
            if sizeChanged, let file = writer.file, file.kind == .file {
                try file.setLength(plan.size)
                try writer.sync()
            }
            let repaired = Set(outcomes.filter { [.repaired, .forced, .filled].contains($0.status) }.map(\.index))
            let failed = outcomes.filter { $0.status == .failed }
            let refused = outcomes.filter { $0.status == .refused }
            let unrepairableFindings = BadRange.coalesce(failed.map(\.index), geometry: geometry).map {
                Finding(kind: .corrupt, firstChunk: $0.firstChunk, lastChunk: $0.lastChunk, offset: $0.offset, length: $0.length,
                        detail: "unrepairable")
            }
            let gapsLeft = try ledger.unreadable(image: image.id)
            let resultWord: RunResult = !failed.isEmpty ? .unrepairable : !refused.isEmpty ? .refused : !gapsLeft.isEmpty ? .incomplete : .repaired
            let detail = String(decoding: JSONBody.encode(outcomes), as: UTF8.self)
            try ledger.finishRun(run, image: image.id, Ledger.RunEnd(result: resultWord, bytesRead: reread,
                                                                     bytesWritten: writer.bytesWritten,
                                                                     bytesSent: connection.bytesReceived,
                                                                     readMode: reader.readMode, detail: detail),
                                 findings: unrepairableFindings)
            // A finding is repaired when every chunk in it is (a size finding: when the file was fixed).
            let done = findings.filter { f in
                f.kind == .size ? (sizeChanged && writer.file?.kind == .file && failed.isEmpty && refused.isEmpty)
                                : (f.firstChunk...f.lastChunk).allSatisfy { repaired.contains($0) || $0 >= geometry.count }
            }.compactMap(\.id)
            try ledger.markRepaired(findings: done, by: run)
            var result = ResendResult(host: ledger.host, ledger: ledger.path, imageId: image.id, runId: run, chunks: outcomes,
                                      bytesWritten: writer.bytesWritten, bytesReread: reread, readMode: reader.readMode)
            result.unreadableRemaining = gapsLeft
            // The live image was what the snapshot held (checked before), and now holds the
            // repairs too: the snapshot is taken again, so verify reads the repaired image.
            if !repaired.isEmpty, let snap = image.snapshot, snap.held, let name = snap.name {
                do {
                    try writer.sync()
                    if let found = try ZFS.describe(name), found.guid == snap.guid { try ZFS.destroy(name) }
                    let s = try ZFS.takeSnapshot(name)
                    var record = snap
                    (record.guid, record.createtxg, record.takenAt) = (s.guid, s.createtxg, Ledger.now())
                    try ledger.setSnapshot(image: image.id, record)
                    result.snapshot = name
                } catch {
                    result.snapshotError = "\(error)"
                }
            }
            try connection.sendJSON(.result, result)
            return result
        }
    }

    /// Takes the source's sub-block frames for one chunk, checks each against its hash, until the
    /// source's `supplied` frame ends the chunk; then writes them, adjacent ones as one write.
    private func receiveBlocks(_ connection: Connection, index: Int, chunkOffset: UInt64, length: Int, writer: DestinationWriter,
                               buffer: AlignedBuffer, log: (String) -> Void, blocks: inout Int, written: inout UInt64,
                               writeFailure: inout FerryError?) throws -> ChunkSupplied {
        var talk = Conversation(.resendDestination, peer: connection.peerName)
        // Sub-blocks that arrived intact: where in the chunk, how long, all zeros.
        var arrived: [(start: Int, length: Int, zero: Bool)] = []
        while true {
            let incoming = try connection.receive()
            try talk.admit(incoming)
            switch incoming {
            case .chunk(let h, let payloadLength):
                let raw = Int(h.rawLength)
                guard h.flags.contains(.partial), h.index == UInt64(index), h.offset >= chunkOffset, raw <= length,
                      h.offset - chunkOffset <= UInt64(length - raw), raw <= buffer.capacity else {
                    throw FerryError(.wire, "\(connection.peerName) sent a sub-block outside chunk \(index)")
                }
                let start = Int(h.offset - chunkOffset)
                let p = buffer.pointer + start
                if h.flags.contains(.zero) {
                    guard payloadLength == 0 else { throw FerryError(.wire, "zero sub-block carries a payload") }
                    memset(p, 0, raw)
                } else {
                    guard payloadLength == raw else { throw FerryError(.wire, "sub-block of \(raw) bytes carries \(payloadLength)") }
                    try connection.readPayload(into: p, count: raw)
                }
                // Damaged on the way: skip it; the read-back finds the block still wrong and asks again.
                guard Digest.sha256(p, raw) == h.digest else {
                    log("a sub-block of chunk \(index) arrived damaged; it will be asked for again")
                    arrived.removeAll { $0.start < start + raw && start < $0.start + $0.length }
                    continue
                }
                arrived.removeAll { $0.start < start + raw && start < $0.start + $0.length }
                arrived.append((start, raw, h.flags.contains(.zero)))
            case .control(.supplied, let body):
                let s = try JSONBody.decode(ChunkSupplied.self, body, what: "supplied")
                guard s.chunk == index else { throw FerryError(.wire, "\(connection.peerName) ended chunk \(s.chunk) while \(index) was open") }
                // Adjacent sub-blocks go out as one write. A write the medium refuses is
                // remembered for this attempt; the read-back decides.
                var runs: [(start: Int, length: Int, zero: Bool, count: Int)] = []
                for b in arrived.sorted(by: { $0.start < $1.start }) {
                    if let last = runs.last, last.start + last.length == b.start {
                        runs[runs.count - 1] = (last.start, last.length + b.length, last.zero && b.zero, last.count + 1)
                    } else {
                        runs.append((b.start, b.length, b.zero, 1))
                    }
                }
                for r in runs {
                    do {
                        try writer.write(buffer.pointer + r.start, count: r.length, at: chunkOffset + UInt64(r.start), zero: r.zero)
                        blocks += r.count
                        written += UInt64(r.length)
                    } catch let e as FerryError where e.code == .io {
                        writeFailure = e
                    }
                }
                return s
            case .control(let t, let body):
                try connection.other(t, body, during: "resend", log: log)
            }
        }
    }
}
