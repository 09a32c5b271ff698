import Chunks
import Copy
import Ledger
import Wire

/// The source side of a resend: answers the destination's sub-block hashes with just the
/// sub-blocks that differ, reading only the chunks asked for (positioned reads, no pass over the
/// rest). Each re-read chunk must still hash to what was recorded at copy time: a changed source
/// is refused (it would not be a repair any more) unless `force`.
public final class RepairSource {
    let connection: Connection
    let source: ImageFile
    let plan: ResendPlan
    let force: Bool
    let sourceLedgerDigests: [Int: Digest]
    public private(set) var bytesRead: UInt64 = 0
    public private(set) var refused: [Int] = []

    /// - `ledger`: the source host's ledger; when it holds the source record of this transfer, its
    ///   chunk hashes must agree with the plan's.
    public init(connection: Connection, path: String, plan: ResendPlan, ledger: Ledger?, force: Bool) throws {
        self.connection = connection
        self.plan = plan
        self.force = force
        source = try ImageFile.openForReading(path, direct: true)
        guard source.kind != .stream else {
            throw FerryError(.usage, "resend needs a source it can read at an offset; \(path) is a stream")
        }
        guard let size = source.size, size >= plan.size else {
            throw FerryError(.refused, "source \(path) holds \(source.size ?? 0) bytes, fewer than the \(plan.size) that were copied",
                             hint: "name the source the image was copied from")
        }
        var digests: [Int: Digest] = [:]
        if let ledger, let record = try ledger.images(transfer: plan.transferId).last(where: { $0.role == .source }) {
            for c in plan.chunks {
                if let row = try ledger.chunk(image: record.id, index: c.index) { digests[c.index] = row.digest }
            }
        }
        sourceLedgerDigests = digests
    }

    /// Serves sub-block requests until the destination sends its result; returns it.
    public func serve() throws -> ResendResult {
        let geometry = ChunkGeometry(size: plan.size, chunkSize: plan.chunkSize)
        let buffer = AlignedBuffer(capacity: plan.chunkSize)
        let reference = Dictionary(try plan.chunks.map { ($0.index, try $0.digest()) }, uniquingKeysWith: { a, _ in a })
        var talk = Conversation(.resendSource, peer: connection.peerName)
        while true {
            let incoming = try connection.receive()
            try talk.admit(incoming)
            switch incoming {
            case .control(.subBlocks, let body):
                let request = try SubBlockDigests.decode(body)
                let index = try chunkIndex(request.chunk, what: "chunk index")
                guard let expected = reference[index], index < geometry.count else {
                    throw FerryError(.wire, "the destination asked for chunk \(index), which is not in the repair plan")
                }
                try supply(index: index, request: request, expected: expected, geometry: geometry, buffer: buffer)
            case .control(.result, let body):
                return try JSONBody.decode(ResendResult.self, body, what: "resend result")
            case .control(let t, let body):
                try connection.other(t, body, during: "resend", log: log)
            case .chunk:
                throw FerryError(.wire, "\(connection.peerName) sent a chunk frame to the source side of a resend")
            }
        }
    }

    /// Where the destination side's log lines go.
    public var log: (String) -> Void = { _ in }

    private func supply(index: Int, request: SubBlockDigests, expected: Digest, geometry: ChunkGeometry, buffer: AlignedBuffer) throws {
        let length = geometry.length(of: index)
        let offset = geometry.offset(of: index)
        let n = try source.read(into: buffer.pointer, count: length, at: offset)
        bytesRead += UInt64(n)
        guard n == length else {
            throw FerryError(.io, "source \(source.path) ended inside chunk \(index) (offset \(offset + UInt64(n)))")
        }
        let digest = Digest.sha256(buffer.pointer, length)
        var reason: String?
        if let recorded = sourceLedgerDigests[index], recorded != expected {
            reason = "the source ledger and the destination ledger disagree on chunk \(index)"
        } else if digest != expected {
            reason = "source chunk \(index) (bytes \(offset)-\(offset + UInt64(length) - 1)) changed since the copy"
        }
        if let reason, !force {
            refused.append(index)
            try connection.sendJSON(.supplied, ChunkSupplied(chunk: index, status: .refused, blocks: 0, sha256: digest.hex, reason: reason))
            return
        }
        let bs = Int(request.blockSize)
        guard bs > 0, bs % 4096 == 0 || bs >= length else {
            throw FerryError(.wire, "sub-block size \(bs) is not a multiple of 4096")
        }
        var sent = 0
        var start = 0
        var block = 0
        while start < length {
            let len = min(bs, length - start)
            let p = buffer.pointer + start
            let d = Digest.sha256(p, len)
            if block >= request.digests.count || request.digests[block] != d {
                let zero = isAllZero(p, len)
                try connection.sendChunk(ChunkHeader(index: UInt64(index), flags: zero ? [.partial, .zero] : [.partial], digest: d,
                                                     rawLength: UInt32(len), offset: offset + UInt64(start)),
                                         payload: zero ? UnsafeRawBufferPointer(start: nil, count: 0) : UnsafeRawBufferPointer(start: p, count: len))
                sent += 1
            }
            start += len
            block += 1
        }
        try connection.sendJSON(.supplied, ChunkSupplied(chunk: index, status: .sent, blocks: sent, sha256: digest.hex))
    }
}
