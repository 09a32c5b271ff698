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
            FileHandle.standardError.write("ferry: nothing to resume between \(path) and \(peer) here; starting a fresh copy\n".data(using: .utf8)!)
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
