import Chunks
import Glibc
import Copy
import Ledger
import NBD
import Wire

/// The source side of a resend: answers the destination's sub-block hashes with just the
/// sub-blocks that differ, reading only the chunks asked for (positioned reads, no pass over the
/// rest). Each re-read chunk must still hash to what was recorded at copy time: a changed source
/// is refused (it would not be a repair any more) unless `force`.
public final class RepairSource {
    let connection: Connection
    let source: any ImageMedium
    let plan: ResendPlan
    let force: Bool
    let sourceLedgerDigests: [Int: Digest]
    public private(set) var bytesRead: UInt64 = 0
    public private(set) var refused: [Int] = []
    /// This host's ledger and its source record of the transfer, when it holds one: a filled
    /// chunk is recorded there too once the destination confirms it.
    let ledger: Ledger?
    let sourceRecord: ImageRecord?
    /// Rescue reads narrow a failing read to the sectors of a file or device; a container or an
    /// NBD export is read through its server, which only fails or succeeds.
    private lazy var rescue: Rescue? = (source as? ImageFile).map { Rescue(file: $0, size: plan.size) }
    /// A chunk with its recorded unreadable ranges zeroed, for comparing with its recorded hash.
    private lazy var masked = AlignedBuffer(capacity: plan.chunkSize)
    /// Chunks sent with unreadable ranges filled: their new hash and what still does not read.
    private var filled: [Int: (digest: Digest, zero: Bool, remaining: [ByteRange])] = [:]
    /// The ranges this host's source record holds (it may lag the destination's by one filled
    /// chunk, when a resend stopped between the two ledgers' updates).
    let sourceGaps: [ByteRange]

    /// - `ledger`: the source host's ledger; when it holds the source record of this transfer, its
    ///   chunk hashes must agree with the plan's.
    public init(connection: Connection, path: String, plan: ResendPlan, ledger: Ledger?, force: Bool) throws {
        self.connection = connection
        self.plan = plan
        self.force = force
        let record = try ledger?.images(transfer: plan.transferId).last(where: { $0.role == .source })
        // Read the way the copy read: through the container format it recorded (or, without a
        // record here, the one the file's header names).
        source = try NBDImage.open(path, recorded: record.map { $0.container?.format } ?? "header", isRecordedPath: record != nil)
        guard source.kind != .stream else {
            throw FerryError(.usage, "resend needs a source it can read at an offset; \(path) is a stream")
        }
        guard let size = source.size, size >= plan.size else {
            throw FerryError(.refused, "source \(path) holds \(source.size ?? 0) bytes, fewer than the \(plan.size) that were copied",
                             hint: "name the source the image was copied from")
        }
        var digests: [Int: Digest] = [:]
        if let ledger, let record {
            for c in plan.chunks {
                if let row = try ledger.chunk(image: record.id, index: c.index) { digests[c.index] = row.digest }
            }
        }
        sourceLedgerDigests = digests
        self.ledger = ledger
        sourceRecord = record
        sourceGaps = try record.map { try ledger!.unreadable(image: $0.id) } ?? []
        try plan.validate()
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
                let result = try JSONBody.decode(ResendResult.self, body, what: "resend result")
                try recordFilled(result)
                return result
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
        let gaps = plan.chunks.first(where: { $0.index == index })?.unreadable ?? []
        var stillUnreadable: [ByteRange]?
        let digest: Digest
        var reason: String?
        var catchUp = false
        var maskedIsZero = false
        if !gaps.isEmpty {
            // Unreadable at copy time. What did read then is read plainly: it must read, and the
            // same (with the recorded ranges zeroed the chunk hashes as recorded). Only inside
            // the ranges does a rescue read try again, confined to each range.
            let window = offset..<offset + UInt64(length)
            memset(buffer.pointer, 0, length)
            var pos = offset
            for gap in gaps + [ByteRange(window.upperBound..<window.upperBound)] {
                if gap.offset > pos, reason == nil {
                    switch source.readExact(into: buffer.pointer + Int(pos - offset), count: Int(gap.offset - pos), at: pos) {
                    case .success(let n) where n == Int(gap.offset - pos):
                        bytesRead += UInt64(n)
                    case .success(let n):
                        throw FerryError(.io, "source \(source.path) ended inside chunk \(index) (offset \(pos + UInt64(n)))")
                    case .failure(let e):
                        guard Rescue.isMediumError(e) else { throw e }
                        reason = "source chunk \(index) no longer reads where it read at copy time (\(e.message))"
                    }
                }
                pos = gap.end
            }
            var bad: [ByteRange] = []
            if reason == nil {
                for gap in gaps {
                    guard let rescue else {
                        // Through a server: the range reads whole or not at all.
                        switch source.readExact(into: buffer.pointer + Int(gap.offset - offset), count: Int(gap.length), at: gap.offset) {
                        case .success: bytesRead += gap.length
                        case .failure:
                            memset(buffer.pointer + Int(gap.offset - offset), 0, Int(gap.length))
                            bad.append(gap)
                        }
                        continue
                    }
                    let before = rescue.bytesRead
                    bad += try rescue.read(into: buffer.pointer + Int(gap.offset - offset), count: Int(gap.length), at: gap.offset,
                                           retries: plan.retries ?? 0, confined: true)
                    bytesRead += rescue.bytesRead - before
                }
            }
            if bad.count > SourceReader.maxRangesPerChunk {
                // Too many to name in one answer: nothing new this time.
                for g in gaps { memset(buffer.pointer + Int(g.offset - offset), 0, Int(g.length)) }
                bad = gaps
            }
            // The chunk as recorded: what reads now, the recorded ranges zeroed.
            memcpy(masked.pointer, buffer.pointer, length)
            for g in gaps { memset(masked.pointer + Int(g.offset - offset), 0, Int(g.length)) }
            maskedIsZero = isAllZero(masked.pointer, length)
            if reason == nil && Digest.sha256(masked.pointer, length) != expected {
                reason = "source chunk \(index) (bytes \(offset)-\(offset + UInt64(length) - 1)) changed since the copy outside its unreadable ranges"
            }
            digest = Digest.sha256(buffer.pointer, length)
            stillUnreadable = ByteRange.merged(bad)
            // This host's record may still hold ranges the destination already filled (a resend
            // stopped between the two ledgers' updates): the bytes just matched the destination's
            // record, so this record catches up with it.
            let mine = ByteRange.clipped(sourceGaps, to: window)
            if let recorded = sourceLedgerDigests[index], recorded != expected, mine != gaps,
               gaps.allSatisfy({ g in mine.contains { $0.offset <= g.offset && g.end <= $0.end } }) {
                catchUp = true
            }
        } else {
            let n = try source.read(into: buffer.pointer, count: length, at: offset)
            bytesRead += UInt64(n)
            guard n == length else {
                throw FerryError(.io, "source \(source.path) ended inside chunk \(index) (offset \(offset + UInt64(n)))")
            }
            digest = Digest.sha256(buffer.pointer, length)
            if digest != expected {
                reason = "source chunk \(index) (bytes \(offset)-\(offset + UInt64(length) - 1)) changed since the copy"
            }
        }
        if let recorded = sourceLedgerDigests[index], recorded != expected, !catchUp {
            reason = "the source ledger and the destination ledger disagree on chunk \(index)"
        }
        if catchUp, reason == nil, let ledger, let record = sourceRecord {
            try ledger.fillChunk(image: record.id, index: index, window: ByteRange(offset: offset, length: UInt64(length)),
                                 digest: expected, zero: maskedIsZero, remaining: gaps)
        }
        if let reason, !force || stillUnreadable != nil {
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
        var supplied = ChunkSupplied(chunk: index, status: stillUnreadable == nil ? .sent : .filled, blocks: sent, sha256: digest.hex)
        if let stillUnreadable {
            supplied.stillUnreadable = stillUnreadable
            filled[index] = (digest, isAllZero(buffer.pointer, length), stillUnreadable)
        }
        try connection.sendJSON(.supplied, supplied)
    }

    /// Records, in this host's source record, the chunks the destination filled and confirmed:
    /// both ledgers then agree on the chunk's new hash and on what still does not read.
    private func recordFilled(_ result: ResendResult) throws {
        guard let ledger, let record = sourceRecord else { return }
        let geometry = ChunkGeometry(size: plan.size, chunkSize: plan.chunkSize)
        for outcome in result.chunks where [.filled, .partlyFilled].contains(outcome.status) {
            guard let f = filled[outcome.index] else { continue }
            let window = ByteRange(offset: geometry.offset(of: outcome.index), length: UInt64(geometry.length(of: outcome.index)))
            try ledger.fillChunk(image: record.id, index: outcome.index, window: window, digest: f.digest, zero: f.zero,
                                 remaining: f.remaining)
        }
    }
}
