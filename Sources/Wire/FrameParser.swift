import Chunks

/// The five bytes that open every frame: u32 big-endian length of (type + body), then the type.
/// Parsing them is pure: the length is checked against the cap of that frame type, so a damaged
/// stream or a hostile peer cannot make ferry allocate more than the type allows.
public struct FrameHead: Equatable, Sendable {
    public static let size = 5
    public var type: FrameType
    /// Bytes after the type byte; for a chunk frame, its header plus its payload.
    public var bodyLength: Int

    public init(type: FrameType, bodyLength: Int) { (self.type, self.bodyLength) = (type, bodyLength) }

    /// The largest body each frame type may carry. Only chunk frames carry image data; control
    /// frames are small, except the few whose JSON grows with the image (a resend plan names
    /// every chunk to repair, a resend result every chunk's outcome).
    public static func maxBody(_ type: FrameType) -> Int {
        switch type {
        case .chunk: return ChunkHeader.size + ChunkGeometry.maxChunkSize
        case .retransmit, .checkpoint, .checkpointAck, .progress: return 8
        case .hello, .end, .error: return 64 << 10
        // A chunk's word may list up to 2048 ranges still unreadable.
        case .supplied: return 1 << 20
        case .log: return 64 << 10
        case .unreadable: return UnreadableRanges.maxBody
        case .ready, .request, .result: return 64 << 20
        // A chunk's sub-block hashes: 256 MiB chunks of 4 KiB blocks, 32 bytes each, plus 16.
        case .subBlocks: return 16 + (ChunkGeometry.maxChunkSize / 4096) * 32
        }
    }

    public static func parse(_ b: UnsafeRawBufferPointer, peer: String) throws -> FrameHead {
        precondition(b.count >= size)
        let length = Int(b.loadBE(UInt32.self, at: 0))
        guard let type = FrameType(rawValue: b[4]) else {
            throw FerryError(.wire, "\(peer) sent an unknown frame type 0x\(String(b[4], radix: 16))",
                             hint: "check that both ends run compatible ferry versions")
        }
        guard length >= 1, length - 1 <= maxBody(type) else {
            throw FerryError(.wire, "\(peer) sent a \(type) frame of \(length) bytes; the stream is damaged or not ferry's",
                             hint: "check that the far side runs `ferry serve` and that nothing else writes to its stdout (e.g. a shell profile)")
        }
        let head = FrameHead(type: type, bodyLength: length - 1)
        if type == .chunk && head.bodyLength < ChunkHeader.size {
            throw FerryError(.wire, "\(peer) sent a truncated chunk frame")
        }
        return head
    }

    /// The head of a frame whose body is `bodyLength` bytes.
    public static func encode(_ type: FrameType, bodyLength: Int) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(size)
        out.appendBE(UInt32(bodyLength + 1))
        out.append(type.rawValue)
        return out
    }
}

/// One whole frame, as the pure parser yields it.
public enum Frame: Equatable, Sendable {
    case control(FrameType, [UInt8])
    case chunk(ChunkHeader, payload: [UInt8])
}

/// Splits bytes into frames with no I/O of its own: feed it what arrived, take whole frames out.
/// `Connection` reads the same heads with `FrameHead.parse` and `ChunkHeader.decode`; this type
/// lets tests drive those checks from fixture files and fuzzed bytes.
public struct FrameParser {
    private var buffer: [UInt8] = []
    private var start = 0
    public let peer: String

    public init(peer: String) { self.peer = peer }

    public mutating func append(_ bytes: [UInt8]) { buffer.append(contentsOf: bytes) }

    /// Bytes received but not yet part of a whole frame.
    public var pending: Int { buffer.count - start }

    /// The next whole frame, or nil until more bytes arrive.
    public mutating func next() throws -> Frame? {
        guard pending >= FrameHead.size else { return nil }
        let head = try buffer.withUnsafeBytes { try FrameHead.parse(UnsafeRawBufferPointer(rebasing: $0[start...]), peer: peer) }
        guard pending >= FrameHead.size + head.bodyLength else { return nil }
        let bodyStart = start + FrameHead.size
        let body = Array(buffer[bodyStart..<(bodyStart + head.bodyLength)])
        start = bodyStart + head.bodyLength
        if start > 1 << 20 { buffer.removeFirst(start); start = 0 }
        guard head.type == .chunk else { return .control(head.type, body) }
        let header = try body.withUnsafeBytes { try ChunkHeader.decode($0) }
        return .chunk(header, payload: Array(body[ChunkHeader.size...]))
    }

    /// Every whole frame in `bytes`; throws on the first malformed one, and when bytes are left
    /// over that do not make a whole frame.
    public static func frames(in bytes: [UInt8], peer: String = "the peer") throws -> [Frame] {
        var p = FrameParser(peer: peer)
        p.append(bytes)
        var out: [Frame] = []
        while let f = try p.next() { out.append(f) }
        guard p.pending == 0 else {
            throw FerryError(.wire, "\(peer) closed the connection in the middle of a frame (\(p.pending) bytes left)")
        }
        return out
    }
}

/// Frame heads as bytes. `Connection` sends a control frame as `FrameHead.encode` plus its body,
/// and a chunk frame as `chunkHead` plus its payload, in one writev without copying either.
public enum FrameSerializer {
    /// A chunk frame's head and header; the payload follows without a copy.
    public static func chunkHead(_ header: ChunkHeader, payloadLength: Int) -> [UInt8] {
        var out = FrameHead.encode(.chunk, bodyLength: ChunkHeader.size + payloadLength)
        header.encode(into: &out)
        return out
    }
}
