import Chunks
import Ledger

/// Where an interrupted copy continues: chunks [0, chunks) are durable at the destination and
/// recorded; `hasher` is the whole-image SHA-256 state after them.
public struct ResumePoint {
    public var chunks: Int
    public var hasher: SHA256Hasher
    /// True when the saved hash state could not be used and the prefix was re-read instead.
    public var rereadPrefix: Bool

    public var offset: UInt64 { 0 }
}

extension ResumePoint {
    /// Restores the whole-image hash state saved at a checkpoint. When the state is missing or was
    /// saved by an incompatible build, rebuilds it by re-reading chunks [0, chunks) of `source`
    /// (correct, but a second read of the prefix: said so in the output).
    static func hasher(saved: [UInt8]?, chunks: Int, chunkSize: Int,
                       reread: (Int, AlignedBuffer) throws -> Int) throws -> (SHA256Hasher, Bool) {
        if let saved, let h = SHA256Hasher(savedState: saved), h.byteCount == UInt64(chunks) * UInt64(chunkSize) {
            return (h, false)
        }
        var h = SHA256Hasher()
        let buf = AlignedBuffer(capacity: chunkSize)
        for i in 0..<chunks {
            let n = try reread(i, buf)
            h.update(buf.pointer, n)
        }
        return (h, true)
    }

    /// Re-reads chunk `index` with `read` and refuses unless it still hashes to `expected`.
    static func check(chunk index: Int, expected: Digest?, what: String, chunkSize: Int,
                      read: (Int, AlignedBuffer) throws -> Int) throws {
        let buf = AlignedBuffer(capacity: chunkSize)
        let n = try read(index, buf)
        let d = Digest.sha256(buf.pointer, n)
        guard let expected, d == expected else {
            throw FerryError(.refused, "cannot resume: chunk \(index) of the \(what) no longer matches the ledger",
                             hint: "the \(what) changed since the interrupted copy; start a fresh copy without --resume")
        }
    }
}
