import Chunks
import Glibc
import Ledger
import Wire

/// The receiving end of a remote copy (`ferry serve` on a push, the client on a pull): takes
/// chunk frames off the wire, hashes each one independently and compares with the sender's hash
/// before anything is written or fed to the whole-image hash, asks again (a bounded number of
/// times) for chunks that arrived damaged, writes through the DestinationWriter, and makes data
/// durable at checkpoints that the sender acknowledges.
public final class WireReceiver: ChunkOrigin {
    let connection: Connection
    let destination: DestinationWriter
    let ledger: Ledger
    let checkpointEvery: Int
    let log: (String) -> Void
    /// Called once, before the first chunk is written (a fresh copy truncates the file here).
    var beforeFirstWrite: (() throws -> Void)?
    private let codec = ZstdCodec(level: 1)
    private var scratch: AlignedBuffer?
    private let states = CheckpointStates()
    private var stash: [Int: (ChunkHeader, [UInt8])] = [:]
    private var attempts: [Int: Int] = [:]
    public private(set) var retransmissions = 0
    public private(set) var zeroFrames = 0
    public private(set) var end: End?
    /// Unreadable ranges announced for chunks not yet accepted.
    private var pendingUnreadable: [Int: [ByteRange]] = [:]
    /// Bytes the source could not read and sent as zeros, so far (for the progress line).
    public var unreadableBytes = ProgressCounter()
    private lazy var talk = Conversation(.copyReceiver, peer: connection.peerName)

    public static let maxAttempts = 3
    /// Chunks that arrived ahead of a damaged one are held in memory, up to this many bytes.
    static let maxStashBytes = 64 << 20
    var maxStash: Int { max(2, Self.maxStashBytes / destination.chunkSize) }
    /// The image size the sender announced, when it knew it (nil: a stream source).
    let expectedSize: UInt64?
    /// Index of a short chunk seen so far: only the last chunk may be short.
    private var shortChunk: Int?

    public init(connection: Connection, destination: DestinationWriter, ledger: Ledger, checkpointEvery: Int,
                expectedSize: UInt64?, beforeFirstWrite: (() throws -> Void)?, log: @escaping (String) -> Void) {
        self.expectedSize = expectedSize
        self.connection = connection
        self.destination = destination
        self.ledger = ledger
        self.checkpointEvery = checkpointEvery
        self.beforeFirstWrite = beforeFirstWrite
        self.log = log
    }

    public func run(startIndex: Int, hasher: SHA256Hasher, progress: ProgressCounter) throws -> PumpResult {
        // Durable first; the checkpoint is recorded here when the sender acknowledges it.
        let target = DestinationEnd(destination, checkpoints: .tell { [self] slot in
            states.put(slot.index + 1, slot.hasherAfter)
            try connection.send(.checkpoint, U64Body.encode(UInt64(slot.index + 1)))
        })
        do {
            return try CopyPass.run(from: self, to: target, startIndex: startIndex, hasher: hasher,
                                    checkpointEvery: checkpointEvery, progress: progress)
        } catch {
            // A checkpoint that could not be sent may mean the sender failed and said why first.
            throw connection.peerError(after: error) ?? error
        }
    }

    public var chunkSize: Int { destination.chunkSize }
    public func taken(_ slot: ChunkSlot) throws {}
    public func checkpointed(_ slot: ChunkSlot) throws {}

    /// An empty image: the destination is begun all the same.
    public func finished() throws {
        if let first = beforeFirstWrite { beforeFirstWrite = nil; try first() }
    }

    /// Fills `slot` with chunk `slot.index` as received and checked; 0 at the sender's End.
    public func fill(_ slot: ChunkSlot, pump: ChunkPump) throws -> Int {
        let want = slot.index
        while true {
            if let (header, data) = stash.removeValue(forKey: want) {
                data.withUnsafeBytes { _ = memcpy(slot.buffer.pointer, $0.baseAddress!, data.count) }
                if try accept(header, slot: slot, length: data.count, pump: pump) { return data.count }
                continue
            }
            // The sender's End may overtake a chunk it is still re-sending: keep reading until
            // every chunk it announced has arrived intact.
            if let end, want >= end.chunks {
                guard stash.isEmpty else {
                    throw FerryError(.wire, "\(connection.peerName) ended the copy with chunks \(stash.keys.sorted()) beyond its last chunk \(end.chunks - 1)")
                }
                return 0
            }
            let incoming = try connection.receive()
            try talk.admit(incoming)
            switch incoming {
            case .chunk(let header, let payloadLength):
                let index = try chunkIndex(header.index, what: "chunk index")
                let raw = Int(header.rawLength)
                try checkShape(index: index, raw: raw)
                if index < want {
                    try discard(payloadLength)   // a late duplicate
                    continue
                }
                if index > want {
                    guard stash.count < maxStash else {
                        throw FerryError(.wire, "\(connection.peerName) ran \(maxStash) chunks ahead of a damaged chunk \(want) without re-sending it")
                    }
                    let tmp = AlignedBuffer(capacity: destination.chunkSize)
                    try readPayload(header, payloadLength, into: tmp)
                    stash[index] = (header, Array(tmp.bytes(raw)))
                    continue
                }
                try readPayload(header, payloadLength, into: slot.buffer)
                if try accept(header, slot: slot, length: raw, pump: pump) { return raw }
            case .control(.unreadable, let body):
                let chunkSize = UInt64(destination.chunkSize)
                let u = try UnreadableRanges.decode(body) { chunk in
                    let index = try chunkIndex(chunk, what: "chunk index")
                    // Only for a chunk about to arrive: it precedes its chunk, within the stash's reach.
                    guard index >= want, index <= want + maxStash else {
                        throw FerryError(.wire, "\(connection.peerName) sent unreadable ranges for chunk \(index) while chunk \(want) was due")
                    }
                    let start = UInt64(index) * chunkSize
                    let end = expectedSize.map { min($0, start + chunkSize) } ?? start + chunkSize
                    guard start < end else {
                        throw FerryError(.wire, "\(connection.peerName) sent unreadable ranges for chunk \(index), past the image's end")
                    }
                    return start..<end
                }
                pendingUnreadable[Int(u.chunk)] = u.ranges
            case .control(.checkpointAck, let body):
                let n = try chunkIndex(U64Body.decode(body), what: "checkpoint")
                if let id = destination.imageId {
                    try ledger.checkpoint(image: id, chunks: n, state: states.take(n)?.savedState)
                }
            case .control(.end, let body):
                let e = try JSONBody.decode(End.self, body, what: "end")
                if let expectedSize, e.size != expectedSize {
                    throw FerryError(.wire, "\(connection.peerName) ended after \(e.size) bytes of an image it announced as \(expectedSize)")
                }
                end = e
            case .control(let t, let body):
                try connection.other(t, body, during: "the copy", log: log)
            }
        }
    }

    /// A chunk frame must describe a chunk of the announced image: inside it, and exactly as
    /// long as that chunk (a stream's chunks are full but for the last).
    private func checkShape(index: Int, raw: Int) throws {
        let chunkSize = destination.chunkSize
        guard raw > 0, raw <= chunkSize else {
            throw FerryError(.wire, "chunk frame \(index) claims \(raw) bytes; the chunk size is \(chunkSize)")
        }
        if let expectedSize {
            let g = ChunkGeometry(size: expectedSize, chunkSize: chunkSize)
            guard index < g.count, raw == g.length(of: index) else {
                throw FerryError(.wire, "chunk frame \(index) (\(raw) bytes) does not fit the announced \(expectedSize)-byte image")
            }
        } else if raw < chunkSize || (shortChunk.map { index > $0 } ?? false) {
            if let short = shortChunk, index != short {
                throw FerryError(.wire, "chunk \(index) follows the short chunk \(short), which must be the last")
            }
            if raw < chunkSize { shortChunk = index }
        }
    }

    private func discard(_ count: Int) throws {
        guard count > 0 else { return }
        let tmp = AlignedBuffer(capacity: count)
        try connection.readPayload(into: tmp.pointer, count: count)
    }

    /// Reads a chunk payload into `buffer` as raw bytes: zero frames carry none, zstd frames are
    /// decompressed.
    private func readPayload(_ header: ChunkHeader, _ payloadLength: Int, into buffer: AlignedBuffer) throws {
        let raw = Int(header.rawLength)
        if header.flags.contains(.zero) {
            guard payloadLength == 0 else { throw FerryError(.wire, "zero chunk frame \(header.index) carries a payload") }
            memset(buffer.pointer, 0, raw)
            zeroFrames += 1
        } else if header.flags.contains(.zstd) {
            guard payloadLength <= ZstdCodec.bound(destination.chunkSize) else {
                throw FerryError(.wire, "compressed chunk frame \(header.index) is too large (\(payloadLength) bytes)")
            }
            if scratch == nil { scratch = AlignedBuffer(capacity: ZstdCodec.bound(destination.chunkSize)) }
            try connection.readPayload(into: scratch!.pointer, count: payloadLength)
            do {
                try codec.decompress(scratch!.bytes(payloadLength), into: buffer.pointer, expected: raw)
            } catch {
                // A damaged compressed payload: make sure its hash fails, so it is asked for again.
                memset(buffer.pointer, 0xA5, raw)
            }
        } else {
            guard payloadLength == raw else {
                throw FerryError(.wire, "chunk frame \(header.index) carries \(payloadLength) bytes for \(raw) raw bytes")
            }
            try connection.readPayload(into: buffer.pointer, count: raw)
        }
    }

    /// Hashes what arrived and compares it with the sender's hash. On a mismatch, asks for the
    /// chunk again and returns false; after `maxAttempts` damaged copies, gives up.
    private func accept(_ header: ChunkHeader, slot: ChunkSlot, length: Int, pump: ChunkPump) throws -> Bool {
        let p = slot.buffer.pointer
        let digest = isAllZero(p, length) ? pump.zeroDigest(length: length) : Digest.sha256(p, length)
        guard digest == header.digest else {
            let index = Int(header.index)
            let n = (attempts[index] ?? 0) + 1
            attempts[index] = n
            retransmissions += 1
            guard n < Self.maxAttempts else {
                throw FerryError(.remote, "chunk \(index) arrived damaged \(n) times from \(connection.peerName)",
                                 hint: "the link or a host's memory is corrupting data; check them before copying again")
            }
            log("chunk \(index) arrived damaged (hash mismatch); asking for it again")
            try connection.send(.retransmit, U64Body.encode(header.index))
            return false
        }
        if let first = beforeFirstWrite { beforeFirstWrite = nil; try first() }
        slot.presetDigest = digest
        if let ranges = pendingUnreadable.removeValue(forKey: Int(header.index)) {
            // Zeros stand where the source could not read: anything else is not what it says.
            guard ranges.allSatisfy({ $0.end <= slot.offset + UInt64(length) && isAllZero(p + Int($0.offset - slot.offset), Int($0.length)) }) else {
                throw FerryError(.wire, "\(connection.peerName) marked ranges of chunk \(header.index) unreadable that hold data")
            }
            slot.unreadable = ranges
            unreadableBytes.add(Int(ByteRange.total(ranges)))
        }
        return true
    }
}
