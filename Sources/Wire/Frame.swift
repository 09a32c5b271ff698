import Chunks

/// Frame types. A frame on the wire is: u32 big-endian length of (type + body), u8 type, body.
public enum FrameType: UInt8, Sendable {
    case hello = 0x01        // JSON Hello, each side sends one first
    case request = 0x02      // JSON Request, client -> server
    case ready = 0x03        // JSON Ready, server -> client
    case chunk = 0x10        // binary ChunkHeader + payload, sender -> receiver
    case retransmit = 0x11   // u64 chunk index, receiver -> sender: that chunk arrived damaged
    case checkpoint = 0x12   // u64 chunks, receiver -> sender: chunks [0, n) are durable
    case checkpointAck = 0x13 // u64 chunks, sender -> receiver: the sender recorded it too
    case end = 0x14          // JSON End, sender -> receiver: no more chunks
    case result = 0x15       // JSON, the far side's outcome of the operation
    case progress = 0x16     // u64 bytes done, server -> client
    case unreadable = 0x17   // UnreadableRanges, sender -> receiver, before its chunk: zeros stand there
    case log = 0x20          // UTF-8 text, shown as "remote: ..."
    case error = 0x21        // JSON WireError: the far side failed
    case subBlocks = 0x30    // resend: SubBlockDigests, destination -> source: send what differs
    case supplied = 0x32     // resend: JSON ChunkSupplied, source -> destination, ends one chunk
}

/// Flags of a chunk frame.
public struct ChunkFlags: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// All zeros: no payload crosses the wire.
    public static let zero = ChunkFlags(rawValue: 1)
    /// The payload is zstd-compressed.
    public static let zstd = ChunkFlags(rawValue: 2)
    /// A retransmission of a chunk that arrived damaged.
    public static let resent = ChunkFlags(rawValue: 4)
    /// A sub-block of a chunk (resend): `offset` is a byte offset in the image, not a chunk start.
    public static let partial = ChunkFlags(rawValue: 8)
}

/// The fixed header of a chunk frame body: index, flags, the sender's SHA-256 of the raw bytes,
/// the raw length, and (for partial frames) the byte offset.
public struct ChunkHeader: Equatable, Sendable {
    public var index: UInt64
    public var flags: ChunkFlags
    public var digest: Digest
    public var rawLength: UInt32
    public var offset: UInt64

    public static let size = 8 + 1 + 32 + 4 + 8

    public init(index: UInt64, flags: ChunkFlags, digest: Digest, rawLength: UInt32, offset: UInt64) {
        (self.index, self.flags, self.digest, self.rawLength, self.offset) = (index, flags, digest, rawLength, offset)
    }

    public func encode(into out: inout [UInt8]) {
        out.appendBE(index)
        out.append(flags.rawValue)
        out.append(contentsOf: digest.bytes)
        out.appendBE(rawLength)
        out.appendBE(offset)
    }

    public static func decode(_ b: UnsafeRawBufferPointer) throws -> ChunkHeader {
        guard b.count >= size else { throw FerryError(.wire, "chunk frame of \(b.count) bytes is shorter than its header") }
        return ChunkHeader(index: b.loadBE(UInt64.self, at: 0), flags: ChunkFlags(rawValue: b[8]),
                           digest: Digest(bytes: UnsafeRawBufferPointer(rebasing: b[9..<41])),
                           rawLength: b.loadBE(UInt32.self, at: 41), offset: b.loadBE(UInt64.self, at: 45))
    }
}

extension Array where Element == UInt8 {
    mutating func appendBE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.bigEndian) { append(contentsOf: $0) }
    }
}

extension UnsafeRawBufferPointer {
    func loadBE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

/// A chunk index or count from the peer, as an Int that cannot trap: at most 2^40 (a 64 KiB
/// chunk size puts that at 64 EiB).
public func chunkIndex(_ v: UInt64, what: String) throws -> Int {
    guard v <= 1 << 40 else { throw FerryError(.wire, "the peer sent an impossible \(what) (\(v))") }
    return Int(v)
}

/// The body of an unreadable frame: the ranges of one chunk the source could not read, which it
/// sends as zeros. u64 chunk index, then (u64 offset, u64 length) per range, in order.
public struct UnreadableRanges: Equatable, Sendable {
    public var chunk: UInt64
    public var ranges: [ByteRange]
    public static let maxRanges = 2048
    public static let maxBody = 8 + maxRanges * 16

    public init(chunk: UInt64, ranges: [ByteRange]) { (self.chunk, self.ranges) = (chunk, ranges) }

    public func encode() -> [UInt8] {
        var o = [UInt8]()
        o.appendBE(chunk)
        for r in ranges { o.appendBE(r.offset); o.appendBE(r.length) }
        return o
    }

    /// Parses a body and checks that the ranges are non-empty, in order, apart, and inside
    /// `window` (the chunk's bytes).
    public static func decode(_ b: [UInt8], window: (UInt64) throws -> Range<UInt64>) throws -> UnreadableRanges {
        guard b.count >= 24, (b.count - 8) % 16 == 0, b.count <= maxBody else {
            throw FerryError(.wire, "an unreadable-ranges frame of \(b.count) bytes is malformed")
        }
        return try b.withUnsafeBytes { p in
            let chunk = p.loadBE(UInt64.self, at: 0)
            let w = try window(chunk)
            var ranges: [ByteRange] = []
            var at = 8
            while at < b.count {
                let r = ByteRange(offset: p.loadBE(UInt64.self, at: at), length: p.loadBE(UInt64.self, at: at + 8))
                guard r.length > 0, r.offset >= w.lowerBound, r.offset <= w.upperBound, r.length <= w.upperBound - r.offset,
                      ranges.last.map({ $0.end < r.offset }) ?? true else {
                    throw FerryError(.wire, "unreadable range \(r.offset)+\(r.length) does not lie in order inside chunk \(chunk)")
                }
                ranges.append(r)
                at += 16
            }
            return UnreadableRanges(chunk: chunk, ranges: ranges)
        }
    }
}

/// A u64 body (retransmit, checkpoint, progress).
public enum U64Body {
    public static func encode(_ v: UInt64) -> [UInt8] { var o = [UInt8](); o.appendBE(v); return o }
    public static func decode(_ b: [UInt8]) throws -> UInt64 {
        guard b.count == 8 else { throw FerryError(.wire, "expected an 8-byte frame body, got \(b.count) bytes") }
        return b.withUnsafeBytes { $0.loadBE(UInt64.self, at: 0) }
    }
}
