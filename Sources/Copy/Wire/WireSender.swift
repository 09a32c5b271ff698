import Chunks
import Foundation
import Ledger
import Wire
import Synchronization

/// The sending end of a remote copy (the client on a push, `ferry serve` on a pull): reads the
/// source once, sends chunk frames (zero chunks without payload, optionally zstd), keeps several
/// chunks in flight, and on a second thread answers the receiver: re-sends chunks that arrived
/// damaged, and records checkpoints the receiver made durable.
public final class WireSender: ChunkTarget {
    let connection: Connection
    let source: SourceReader
    let ledger: Ledger
    let checkpointEvery: Int
    let codec: ZstdCodec?
    let log: (String) -> Void
    private let states = CheckpointStates()
    private let peerFailure = FirstFailure()
    private var compressBuffer: AlignedBuffer?
    /// Written by the sink only, read after the run.
    public private(set) var zeroFrames = 0
    private let resent = Atomic<Int>(0)
    /// Chunks sent again because they arrived damaged (by the listener thread).
    public var retransmissions: Int { resent.load(ordering: .relaxed) }

    public init(connection: Connection, source: SourceReader, ledger: Ledger, checkpointEvery: Int, compressLevel: Int?,
                log: @escaping (String) -> Void) {
        self.connection = connection
        self.source = source
        self.ledger = ledger
        self.checkpointEvery = checkpointEvery
        self.codec = compressLevel.map { ZstdCodec(level: $0) }
        self.log = log
    }

    public var failure: (any Error)? { peerFailure.error }

    /// Streams chunks from `startIndex`, then End; returns the pump's result and the receiver's
    /// result frame body.
    public func run(startIndex: Int, hasher: SHA256Hasher, progress: ProgressCounter) throws -> (PumpResult, [UInt8]) {
        // The listener shares the connection (whose sends are locked), the ledger (whose
        // transactions are locked), `states` and `peerFailure`; it re-reads the source through
        // its own buffer and a positioned read.
        let listener = Worker<[UInt8]?>(name: "ferry.sender-acks") { [self] in try listen() }
        let result: PumpResult
        do {
            result = try CopyPass.run(from: SourceEnd(source, checkpoints: .onAcknowledgement), to: self,
                                      startIndex: startIndex, hasher: hasher, checkpointEvery: checkpointEvery, progress: progress)
            try source.flush()
            let size = UInt64(startIndex) * UInt64(source.chunkSize) + result.bytes
            var end = End(size: size, chunks: startIndex + result.chunks, sha256: result.wholeDigest!.hex)
            let unreadable = ByteRange.total(source.unreadable)
            end.unreadableBytes = unreadable > 0 ? unreadable : nil
            end.bytesRead = source.bytesRead
            try connection.sendJSON(.end, end)
        } catch {
            // Tell the receiver why, so it stops without marking anything complete.
            if let e = error as? FerryError, failure == nil, !e.fromPeer { connection.sendError(e) }
            states.close()
            throw farCause(of: error)
        }
        states.close()
        let peerResult = try listener.join()
        return (result, peerResult ?? [])
    }

    /// A receiver that fails (a full disk, say) sends its error and exits, and the next chunk
    /// sent meets a broken pipe. The listener is then about to read that error frame: wait for it
    /// briefly, so the user sees the receiver's error with its own status, not the broken pipe.
    private func farCause(of error: any Error) -> any Error {
        if let failure { return failure }
        guard let e = error as? FerryError, e.cause == .peerGone, !e.fromPeer else { return error }
        let deadline = monotonicSeconds() + 5
        while failure == nil && monotonicSeconds() < deadline { usleep(10_000) }
        if let far = failure as? FerryError, far.fromPeer { return far }
        return error
    }

    /// The listener records the checkpoint when the receiver reports it durable; until then
    /// the hash state waits here.
    public func checkpoint(_ slot: ChunkSlot) throws { states.put(slot.index + 1, slot.hasherAfter) }

    public func take(_ slot: ChunkSlot) throws {
        var flags: ChunkFlags = []
        var payload = slot.bytes
        if slot.isZero {
            flags.insert(.zero)
            payload = UnsafeRawBufferPointer(start: nil, count: 0)
            zeroFrames += 1
        } else if let codec {
            let cap = ZstdCodec.bound(slot.length)
            if compressBuffer == nil || compressBuffer!.capacity < cap { compressBuffer = AlignedBuffer(capacity: cap) }
            if let n = codec.compress(slot.bytes, into: compressBuffer!.pointer, capacity: cap) {
                flags.insert(.zstd)
                payload = compressBuffer!.bytes(n)
            }
        }
        let header = ChunkHeader(index: UInt64(slot.index), flags: flags, digest: slot.digest,
                                 rawLength: UInt32(slot.length), offset: slot.offset)
        // The receiver records these ranges with the chunk: its zeros there are not the source's bytes.
        if !slot.unreadable.isEmpty {
            try connection.send(.unreadable, UnreadableRanges(chunk: UInt64(slot.index), ranges: slot.unreadable).encode())
        }
        try connection.sendChunk(header, payload: payload)
    }

    /// The receiver's side of the conversation, on its own thread.
    private func listen() throws -> [UInt8]? {
        let buffer = AlignedBuffer(capacity: source.chunkSize)
        var talk = Conversation(.copySender, peer: connection.peerName)
        do {
            while true {
                let incoming = try connection.receive()
                try talk.admit(incoming)
                switch incoming {
                case .control(.checkpoint, let body):
                    // The receiver made chunks [0, n) durable: record it here, then let it record.
                    let n = try chunkIndex(U64Body.decode(body), what: "checkpoint")
                    let state = states.take(n)
                    try source.flush()
                    if let id = source.imageId { try ledger.checkpoint(image: id, chunks: n, state: state?.savedState) }
                    try connection.send(.checkpointAck, U64Body.encode(UInt64(n)))
                case .control(.retransmit, let body):
                    let index = try chunkIndex(U64Body.decode(body), what: "chunk index")
                    try resend(index, buffer)
                case .control(.result, let body):
                    return body
                case .control(let t, let body):
                    try connection.other(t, body, during: "the copy", log: log)
                case .chunk:
                    throw FerryError(.wire, "\(connection.peerName) sent a chunk frame to the sending end")
                }
            }
        } catch {
            // A failed acknowledgement may mean the receiver failed and said why first.
            let cause = connection.peerError(after: error) ?? error
            peerFailure.record(cause)
            throw cause
        }
    }

    /// Re-reads chunk `index` from the source and sends it again. The re-read must hash to what
    /// was recorded: a source that changed meanwhile is an error, not a retransmission.
    private func resend(_ index: Int, _ buffer: AlignedBuffer) throws {
        guard source.size != nil else {
            throw FerryError(.remote, "chunk \(index) arrived damaged at \(connection.peerName) and the source is a stream that cannot be re-read",
                             hint: "copy from a file or block device, or check the link and run the copy again")
        }
        let n = try source.readChunk(index, into: buffer)
        let digest = Digest.sha256(buffer.pointer, n)
        if let recorded = try source.recorder?.digest(of: index), recorded != digest {
            throw FerryError(.refused, "source \(source.file.path) changed while being copied (chunk \(index) reads differently now)",
                             hint: "stop whatever writes to the source and copy again")
        }
        resent.add(1, ordering: .relaxed)
        log("chunk \(index) arrived damaged at \(connection.peerName); sent it again")
        try connection.sendChunk(ChunkHeader(index: UInt64(index), flags: [.resent], digest: digest, rawLength: UInt32(n),
                                             offset: UInt64(index) * UInt64(source.chunkSize)),
                                 payload: buffer.bytes(n))
    }
}
