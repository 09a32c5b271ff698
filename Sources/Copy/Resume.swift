import Chunks
import Ledger

/// Continuing an interrupted copy at a checkpoint: chunks [0, n) are durable at the destination
/// and recorded at both ends. Before trusting that, each end re-reads its own chunk n-1 and
/// checks it against its ledger; the whole-image hash continues from the state saved at n (or,
/// when that state is missing or from an incompatible build, from a re-read of the prefix).
public enum Resume {
    /// Reads chunk `index` of an end into a buffer; returns its length.
    typealias ChunkReader = (Int, AlignedBuffer) throws -> Int

    static func restore(ledger: Ledger, image: ImageRecord, at n: Int, what: String, read: ChunkReader) throws -> SHA256Hasher {
        let buf = AlignedBuffer(capacity: image.chunkSize)
        let len = try read(n - 1, buf)
        guard let row = try ledger.chunk(image: image.id, index: n - 1),
              Digest.sha256(buf.pointer, len) == row.digest else {
            throw FerryError(.refused, "cannot resume: chunk \(n - 1) of the \(what) \(image.path) no longer matches the ledger",
                             hint: "the \(what) changed since the interrupted copy; start a fresh copy without --resume")
        }
        let saved = try ledger.checkpoints(image: image.id).first { $0.chunks == n }?.state
        if let saved, let h = SHA256Hasher(savedState: saved), h.byteCount == UInt64(n) * UInt64(image.chunkSize) {
            return h
        }
        var h = SHA256Hasher()
        for i in 0..<n {
            let m = try read(i, buf)
            h.update(buf.pointer, m)
        }
        return h
    }

    /// The chunk counts at which both ends hold a checkpoint: the largest is where to continue.
    public static func common(_ ours: [Int], _ theirs: [Int]) -> Int {
        Set(ours).intersection(theirs).max() ?? 0
    }
}

extension SourceReader {
    /// Re-attaches to an unfinished source record at checkpoint `n`; returns the hash state there.
    public func resume(ledger: Ledger, image: ImageRecord, at n: Int) throws -> SHA256Hasher {
        guard file.size != nil else {
            throw FerryError(.usage, "--resume needs a source that can be read at an offset; \(file.path) is a stream")
        }
        guard file.size == image.size else {
            throw FerryError(.refused, "cannot resume: \(file.path) is \(file.size ?? 0) bytes now, \(image.size ?? 0) when the copy started",
                             hint: "start a fresh copy without --resume")
        }
        let h = try Resume.restore(ledger: ledger, image: image, at: n, what: "source") { try readChunk($0, into: $1) }
        try reattach(ledger: ledger, image: image.id, upTo: n)
        return h
    }
}

extension DestinationWriter {
    /// Re-attaches to an unfinished destination record at checkpoint `n`; returns the hash state.
    public func resume(ledger: Ledger, image: ImageRecord, at n: Int) throws -> SHA256Hasher {
        let reader = try ImageFile.openForReading(path, direct: true)
        reader.dropCache()   // the check below must read the medium
        let geometry = ChunkGeometry(size: image.size ?? UInt64.max, chunkSize: image.chunkSize)
        let h = try Resume.restore(ledger: ledger, image: image, at: n, what: "destination") { i, buf in
            try reader.read(into: buf.pointer, count: geometry.length(of: i), at: geometry.offset(of: i))
        }
        try reattach(ledger: ledger, image: image.id, upTo: n)
        return h
    }
}
