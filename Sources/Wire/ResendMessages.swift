import Chunks

/// The repair plan the destination side makes from its ledger: which chunks to repair and the
/// hash each must have again.
public struct ResendPlan: Codable, Sendable, Equatable {
    public struct Chunk: Codable, Sendable, Equatable {
        public var index: Int
        /// The chunk's hash as recorded when it was copied (the reference the repair must meet).
        public var sha256: String
        /// Ranges of the chunk the source could not read at copy time (zeros in `sha256`): the
        /// source tries them again and fills what now reads.
        public var unreadable: [ByteRange]?
        public init(index: Int, sha256: String, unreadable: [ByteRange]? = nil) {
            (self.index, self.sha256, self.unreadable) = (index, sha256, unreadable)
        }

        /// The recorded hash, nil when it is not 64 hex digits.
        public var sha256Digest: Digest? { Digest(hex: sha256) }

        /// The recorded hash; a plan whose hash is not 64 hex digits is refused, never read as zero.
        public func digest() throws -> Digest {
            try Digest.fromWire(sha256, what: "the plan's hash of chunk \(index)")
        }
    }
    public var imageId: Int64
    public var transferId: String
    public var chunkSize: Int
    public var size: UInt64
    public var subBlockSize: Int
    public var chunks: [Chunk]
    public var host: String
    public var ledger: String
    /// How many more times the source tries each unreadable range after its first try.
    public var retries: Int?
    /// Checks what a peer could get wrong: every chunk inside the image, its unreadable ranges
    /// non-empty, in order, apart and inside that chunk, and the retries bounded.
    public func validate() throws {
        guard (0...100).contains(retries ?? 0) else { throw FerryError(.wire, "the plan asks for \(retries ?? 0) retries") }
        let g = ChunkGeometry(size: size, chunkSize: chunkSize)
        for c in chunks {
            guard c.index >= 0, c.index < g.count else { throw FerryError(.wire, "the plan names chunk \(c.index), outside the image") }
            let lo = g.offset(of: c.index), hi = lo + UInt64(g.length(of: c.index))
            var last: UInt64 = lo
            for (n, r) in (c.unreadable ?? []).enumerated() {
                guard r.length > 0, r.offset >= (n == 0 ? lo : last + 1), r.offset < hi, r.length <= hi - r.offset else {
                    throw FerryError(.wire, "the plan's unreadable range \(r.offset)+\(r.length) does not lie in order inside chunk \(c.index)")
                }
                last = r.end
            }
        }
    }

    public init(imageId: Int64, transferId: String, chunkSize: Int, size: UInt64, subBlockSize: Int, chunks: [Chunk],
                host: String, ledger: String) {
        (self.imageId, self.transferId, self.chunkSize, self.size, self.subBlockSize) = (imageId, transferId, chunkSize, size, subBlockSize)
        (self.chunks, self.host, self.ledger) = (chunks, host, ledger)
    }
}

/// The source side's word on one chunk, after its differing sub-blocks (if any) were sent.
public struct ChunkSupplied: Codable, Sendable {
    public enum Status: String, Codable, Sendable {
        case sent, refused
        /// A chunk with unreadable ranges was read again: `sha256` is its hash with what now
        /// reads in place, zeros still in `stillUnreadable`.
        case filled
    }
    public var chunk: Int
    public var status: Status
    public var blocks: Int
    /// The source chunk's hash now (differs from the plan's under --force, or when filled).
    public var sha256: String
    public var reason: String?
    public var stillUnreadable: [ByteRange]?
    public init(chunk: Int, status: Status, blocks: Int, sha256: String, reason: String? = nil) {
        (self.chunk, self.status, self.blocks, self.sha256, self.reason) = (chunk, status, blocks, sha256, reason)
    }
}

/// A request for the sub-blocks of one chunk that differ from the destination's: the chunk index,
/// the sub-block size, and the destination's hash of each sub-block (all-zero bytes for a block
/// it could not read, which never equals a real hash).
public struct SubBlockDigests: Equatable, Sendable {
    public var chunk: UInt64
    public var blockSize: UInt32
    public var digests: [Digest]

    public init(chunk: UInt64, blockSize: UInt32, digests: [Digest]) {
        (self.chunk, self.blockSize, self.digests) = (chunk, blockSize, digests)
    }

    public func encode() -> [UInt8] {
        var out = [UInt8]()
        out.appendBE(chunk)
        out.appendBE(blockSize)
        out.appendBE(UInt32(digests.count))
        for d in digests { out.append(contentsOf: d.bytes) }
        return out
    }

    public static func decode(_ b: [UInt8]) throws -> SubBlockDigests {
        guard b.count >= 16 else { throw FerryError(.wire, "sub-block frame too short") }
        return try b.withUnsafeBytes { p in
            let count = Int(p.loadBE(UInt32.self, at: 12))
            guard b.count == 16 + count * 32 else { throw FerryError(.wire, "sub-block frame holds \(b.count) bytes for \(count) hashes") }
            let digests = (0..<count).map { Digest(bytes: UnsafeRawBufferPointer(rebasing: p[(16 + $0 * 32)..<(48 + $0 * 32)])) }
            return SubBlockDigests(chunk: p.loadBE(UInt64.self, at: 0), blockSize: p.loadBE(UInt32.self, at: 8), digests: digests)
        }
    }
}

/// The outcome of a resend, per chunk and in total (the destination side's result frame).
public struct ResendResult: Codable, Sendable {
    public struct ChunkOutcome: Codable, Sendable {
        public enum Status: String, Codable, Sendable {
            case repaired, forced, refused, failed
            /// Every byte unreadable at copy time now read at the source, written and checked.
            case filled
            /// Some of them now read and were written; the rest (`unreadable`) still do not.
            case partlyFilled
            /// None of them read yet; nothing changed.
            case stillUnreadable
        }
        public var index: Int
        public var status: Status
        public var attempts: Int
        public var blocksWritten: Int
        public var bytesWritten: UInt64
        public var reason: String?
        /// The chunk's ranges still unreadable after this resend (filled and unreadable chunks).
        public var unreadable: [ByteRange]?
        public init(index: Int, status: Status, attempts: Int, blocksWritten: Int, bytesWritten: UInt64, reason: String? = nil) {
            (self.index, self.status, self.attempts, self.blocksWritten, self.bytesWritten) = (index, status, attempts, blocksWritten, bytesWritten)
            self.reason = reason
        }
    }
    public var host: String
    public var ledger: String
    public var imageId: Int64
    public var runId: Int64
    public var chunks: [ChunkOutcome]
    public var bytesWritten: UInt64
    public var bytesReread: UInt64
    /// How the destination read its chunks back (direct, or through a dropped cache).
    public var readMode: String?
    /// Every range of the image still unreadable after this resend, from its ledger.
    public var unreadableRemaining: [ByteRange]?
    /// A ZFS destination: the copy's snapshot, taken again to hold the repaired image (or why not).
    public var snapshot: String?
    public var snapshotError: String?
    public init(host: String, ledger: String, imageId: Int64, runId: Int64, chunks: [ChunkOutcome], bytesWritten: UInt64,
                bytesReread: UInt64, readMode: String? = nil) {
        (self.host, self.ledger, self.imageId, self.runId, self.chunks) = (host, ledger, imageId, runId, chunks)
        (self.bytesWritten, self.bytesReread, self.readMode) = (bytesWritten, bytesReread, readMode)
    }
}

/// The destination server's answer to a resend request: its plan (and the verify it ran first).
public struct ResendReady: Codable, Sendable {
    public var plan: ResendPlan
    public var verifyJSON: String?
    public init(plan: ResendPlan, verifyJSON: String?) { (self.plan, self.verifyJSON) = (plan, verifyJSON) }
}

extension Digest {
    /// A SHA-256 in hex from the peer; anything else is a protocol error.
    public static func fromWire(_ hex: String, what: String) throws -> Digest {
        guard let d = Digest(hex: hex) else { throw FerryError(.wire, "the peer sent \(what) as '\(hex.prefix(80))', not a SHA-256") }
        return d
    }
}
