import Chunks
import Foundation
import Ledger

/// Continuing an interrupted copy at a checkpoint n: chunks [0, n) are durable at the
/// destination and recorded at both ends. Here is where a copy resumes (one lookup per kind of
/// copy, all in this file) and what each end checks before it trusts that: it re-reads its own
/// chunk n-1 and checks it against its ledger; the whole-image hash continues from the state
/// saved at n (or, when that state is missing or from an incompatible build, from a re-read of
/// the prefix).
public enum Resume {
    /// Reads chunk `index` of an end into a buffer; returns its length.
    typealias ChunkReader = (Int, AlignedBuffer) throws -> Int

    /// How many checkpointed chunks a resume re-reads at an end it cannot otherwise vouch for
    /// (a block device, a destination), besides the last one; `--verify-prefix` re-reads all.
    static let sampleCount = 32

    /// The chunks of [0, n) that a resume re-reads: all of them, or chunk n-1 plus an even spread
    /// of `sampleCount` (`sampled` false: chunk n-1 only).
    static func indices(before n: Int, all: Bool, sampled: Bool) -> [Int] {
        if all || n <= sampleCount + 1 && sampled { return Array(0..<n) }
        guard sampled else { return [n - 1] }
        var out = Set([n - 1])
        for k in 0..<sampleCount { out.insert(k * (n - 1) / sampleCount) }
        return out.sorted()
    }

    /// Re-reads chunks `indices` of an end, compares each with its ledger row, and returns the
    /// whole-image hash state at chunk n (from the saved state, or from a re-read of the whole
    /// prefix, which then checks every chunk on the way) and a line saying what was checked.
    static func restore(ledger: Ledger, image: ImageRecord, at n: Int, what: String, indices: [Int],
                        read: ChunkReader) throws -> (SHA256Hasher, String) {
        let buf = AlignedBuffer(capacity: image.chunkSize)
        let saved = try ledger.checkpoints(image: image.id).first { $0.chunks == n }?.state
        var hasher: SHA256Hasher?
        if let saved, let h = SHA256Hasher(savedState: saved), h.byteCount == UInt64(n) * UInt64(image.chunkSize) {
            hasher = h
        }
        let toCheck = hasher == nil ? Array(0..<n) : indices
        let rows = toCheck.count > 64 ? Dictionary(uniqueKeysWithValues: try ledger.chunks(image: image.id).map { ($0.index, $0) }) : [:]
        var rebuilt = SHA256Hasher()
        for i in toCheck {
            let len = try read(i, buf)
            let row = toCheck.count > 64 ? rows[i] : try ledger.chunk(image: image.id, index: i)
            guard let row, Digest.sha256(buf.pointer, len) == row.digest else {
                let offset = UInt64(i) * UInt64(image.chunkSize)
                throw FerryError(.refused, "cannot resume: chunk \(i) (offset \(offset)) of the \(what) \(image.path) no longer holds what the interrupted copy recorded",
                                 hint: "the \(what) changed since then (written to, or a VM booted on it); start over without --resume, which copies everything again")
            }
            if hasher == nil { rebuilt.update(buf.pointer, len) }
        }
        let line = toCheck.count == n
            ? "all \(n) copied chunks of the \(what) re-read and match the ledger"
            : toCheck.count == 1
            ? "chunk \(n - 1) of the \(what) re-read and matches the ledger"
            : "\(toCheck.count) of \(n) copied chunks of the \(what) re-read and match the ledger (a sample; --verify-prefix re-reads all)"
        return (hasher ?? rebuilt, line)
    }

    /// The chunk size a resume continues with: the interrupted copy's. A different one named
    /// on the command line is refused, not silently replaced.
    public static func chunkSize(of prior: ImageRecord, options: CopyOptions) throws -> Int {
        if options.chunkSizeGiven && options.chunkSize != prior.chunkSize {
            throw FerryError(.usage, "--resume continues the interrupted copy with its chunk size, \(prior.chunkSize) bytes, not the \(options.chunkSize) given",
                             hint: "leave --chunk-size out (or give the same), or start over without --resume")
        }
        return prior.chunkSize
    }

    // MARK: Where a copy resumes, by who asks

    /// A local copy: the latest unfinished copy from `source` to `destination` in this ledger,
    /// found by both images' names.
    static func unfinishedLocal(source: String, destination: String, ledger: Ledger) throws -> (dst: ImageRecord, src: ImageRecord)? {
        let srcIdentity = DeviceIdentity.of(source)
        let dstIdentity = DeviceIdentity.of(destination)
        for dst in try ledger.images(named: dstIdentity.names)
        where dst.role == .destination && !dst.complete && dstIdentity.canBe(dst.names) {
            guard let peer = dst.peerImageId, let src = try ledger.image(peer), !src.complete,
                  srcIdentity.canBe(src.names) else { continue }
            return (dst, src)
        }
        return nil
    }

    /// The client of a remote copy: the unfinished record of this end of an earlier copy between
    /// the same two places, found by name and peer (nil, and a note saying so, when there is none).
    public static func unfinished(_ resume: Bool, role: ImageRole, path: String, peer: String, ledger: Ledger) throws -> ImageRecord? {
        guard resume else { return nil }
        let identity = DeviceIdentity.of(path)
        let prior = try ledger.images(named: identity.names).first {
            $0.role == role && !$0.complete && $0.peer == peer && identity.canBe($0.names)
        }
        if prior == nil {
            Console.err("ferry: nothing to resume between \(path) and \(peer) here; starting a fresh copy\n")
        }
        return prior
    }

    /// `ferry serve`: this end's unfinished record of the transfer, and the newest checkpoint
    /// that both ends hold (`theirs`: the client's, from the request; nil for a fresh copy).
    public static func point(transferId: String, role: ImageRole, theirs: [Int]?, ledger: Ledger) throws -> (ImageRecord, Int)? {
        guard let theirs,
              let prior = try ledger.images(transfer: transferId).last(where: { $0.role == role && !$0.complete })
        else { return nil }
        let n = common(try ledger.checkpointCounts(image: prior.id), theirs)
        return n > 0 ? (prior, n) : nil
    }

    /// The chunk counts at which both ends hold a checkpoint: the largest is where to continue.
    public static func common(_ ours: [Int], _ theirs: [Int]) -> Int {
        Set(ours).intersection(theirs).max() ?? 0
    }
}

extension SourceReader {
    /// Re-attaches to an unfinished source record at checkpoint `n` once the source is shown
    /// unchanged: a file by its identity and times against the record, a block device by a
    /// re-read of a sample of the copied chunks (all of them with `verifyPrefix`). Returns the
    /// hash state there and what was checked.
    public func resume(ledger: Ledger, image: ImageRecord, at n: Int, verifyPrefix: Bool) throws -> (SHA256Hasher, String) {
        guard file.size != nil else {
            throw FerryError(.usage, "--resume needs a source that can be read at an offset; \(file.path) is a stream")
        }
        guard file.size == image.size else {
            throw FerryError(.refused, "cannot resume: the source \(file.path) is \(file.size ?? 0) bytes now, \(image.size ?? 0) when the copy started",
                             hint: "the source changed; start over without --resume, which copies everything again")
        }
        let readAs = (file.format == "raw") ? nil : file.format
        guard image.container?.format == readAs else {
            throw FerryError(.refused, "cannot resume: the interrupted copy read \(file.path) as \(image.container?.format ?? "raw bytes"), this one would read it as \(readAs ?? "raw bytes")",
                             hint: "run --resume with the same --as-is or --source-format as the interrupted copy, or start over without --resume")
        }
        var lines: [String] = []
        var stampHolds = false
        if let now = file.stamp, let recorded = image.stamp {
            let changes = now.changes(since: recorded)
            guard changes.isEmpty else {
                throw FerryError(.refused, "cannot resume: the source \(file.path) changed since the interrupted copy began: " + changes.joined(separator: "; "),
                                 hint: "the bytes already copied may no longer be the source's; start over without --resume, which copies everything again")
            }
            stampHolds = true
            lines.append("source unchanged since the copy began (same file, size, mtime and ctime)")
        }
        // Chunks the interrupted run could not read in full are re-read around the same ranges.
        resumedUnreadable = try ledger.unreadable(image: image.id).filter { $0.offset < UInt64(n) * UInt64(image.chunkSize) }
        let (h, line) = try Resume.restore(ledger: ledger, image: image, at: n, what: "source",
                                           indices: Resume.indices(before: n, all: verifyPrefix, sampled: !stampHolds)) {
            try readChunk($0, into: $1)
        }
        lines.append(line)
        try reattach(ledger: ledger, image: image.id, upTo: n)
        return (h, lines.joined(separator: "; "))
    }
}

extension DestinationWriter {
    /// Refuses to resume a copy that wrote `prior` in another format than this one would: called
    /// before the destination is opened, since opening a qcow2 for writing may change its header.
    public func checkResumable(_ prior: ImageRecord) throws {
        guard (prior.container?.format ?? "raw") == format else {
            throw FerryError(.refused, "cannot resume: the interrupted copy wrote \(path) as \(prior.container?.format ?? "raw"), this one would write it as \(format)",
                             hint: "run --resume with the same --dest-format (and --as-is) as the interrupted copy, or start over without --resume")
        }
    }

    /// Re-attaches to an unfinished destination record at checkpoint `n` once a re-read from the
    /// medium of a sample of the copied chunks (all of them with `verifyPrefix`) matches the
    /// ledger: this end wrote past its checkpoint before it stopped, so its times say nothing.
    public func resume(ledger: Ledger, image: ImageRecord, at n: Int, verifyPrefix: Bool) throws -> (SHA256Hasher, String) {
        try checkResumable(image)
        if let recorded = image.stamp, let now = file?.stamp, now.device != recorded.device || now.inode != recorded.inode {
            throw FerryError(.refused, "cannot resume: \(path) is another file than the interrupted copy wrote (inode \(recorded.inode), now \(now.inode))",
                             hint: "start over without --resume, which copies everything again")
        }
        let reader = try reader()
        reader.dropCache()   // the check below must read the medium
        let geometry = ChunkGeometry(size: image.size ?? UInt64.max, chunkSize: image.chunkSize)
        let result = try Resume.restore(ledger: ledger, image: image, at: n, what: "destination",
                                        indices: Resume.indices(before: n, all: verifyPrefix, sampled: true)) { i, buf in
            // A file grows as chunks land: trailing zero chunks of the copied part are still
            // past its end, where they read as the zeros they will be.
            let want = geometry.length(of: i)
            let got = try reader.read(into: buf.pointer, count: want, at: geometry.offset(of: i))
            // Where O_DIRECT was refused, pages another process keeps mapped survive the drop:
            // such a chunk matched memory, not the medium, and proves nothing.
            if got > 0 && reader.onlyInMemory(at: geometry.offset(of: i), count: got) {
                throw FerryError(.refused, "cannot resume: chunk \(i) of \(path) could only be read from memory (another process keeps it mapped, and O_DIRECT was refused), so the part already copied cannot be checked",
                                 hint: "stop the program that maps \(path) and run the same ferry copy with --resume again")
            }
            if got < want && reader.kind == .file && reader.format == "raw" { memset(buf.pointer + got, 0, want - got); return want }
            return got
        }
        try reattach(ledger: ledger, image: image.id, upTo: n)
        return result
    }
}
