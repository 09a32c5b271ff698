import Chunks
import Ledger

/// The reading end of a copy: reads the source once, in chunk order, and records what it read.
public final class SourceReader {
    public let file: ImageFile
    public let identity: DeviceIdentity
    public let chunkSize: Int
    private let counted = ProgressCounter()
    /// Bytes read from the source so far (the pump's reads and any re-reads).
    public var bytesRead: UInt64 { counted.bytes }
    private var record: EndRecord?
    public var imageId: Int64? { record?.imageId }
    /// The ledger run recording this copy at the source end (started with the record).
    public var copyRun: Int64? { record?.copyRun }
    var recorder: ChunkRecorder? { record?.recorder }
    let asIs: Bool

    public init(path: String, chunkSize: Int, asIs: Bool) throws {
        file = try ImageFile.openForReading(path, direct: true)
        identity = DeviceIdentity.of(path)
        self.chunkSize = chunkSize
        self.asIs = asIs
    }

    public var size: UInt64? { file.size }

    /// Creates the source's image record (role source) in `ledger`.
    public func register(in ledger: Ledger, transferId: String, peer: String?) throws {
        record = try EndRecord.register(NewImage(role: .source, identity: identity, kind: file.kind, size: file.size,
                                                 chunkSize: chunkSize, transferId: transferId, peer: peer), in: ledger)
    }

    /// Re-attaches to an unfinished source record whose chunks [0, n) are recorded.
    public func reattach(ledger: Ledger, image: Int64, upTo n: Int) throws {
        record = try EndRecord.reattach(image: image, upTo: n, in: ledger)
    }

    /// Fills `slot` with the chunk at its index. Returns 0 at the end of the source.
    public func fill(_ slot: ChunkSlot) throws -> Int {
        let want: Int
        if let size = file.size {
            let start = slot.offset
            guard start < size else { return 0 }
            want = Int(min(UInt64(chunkSize), size - start))
        } else {
            want = chunkSize
        }
        let n = try file.read(into: slot.buffer.pointer, count: want, at: slot.offset)
        if file.size != nil && n < want {
            throw FerryError(.io, "source \(file.path) ended at offset \(slot.offset + UInt64(n)), before its size \(file.size!)",
                             hint: "the source shrank while being read; nothing was marked complete")
        }
        if slot.index == 0 && n > 0 && !asIs, let format = DiskImageFormat.detect(slot.buffer.bytes(min(n, 4096))) {
            throw FerryError(.refused, format.refusal(path: file.path))
        }
        counted.add(n)
        return n
    }

    /// Reads one chunk by index (positioned), for resume checks and resend.
    public func readChunk(_ index: Int, into buffer: AlignedBuffer) throws -> Int {
        guard let size = file.size else {
            throw FerryError(.usage, "cannot re-read chunk \(index) of a stream source", hint: "the source must be a file or block device")
        }
        let g = ChunkGeometry(size: size, chunkSize: chunkSize)
        let want = g.length(of: index)
        let n = try file.read(into: buffer.pointer, count: want, at: g.offset(of: index))
        counted.add(n)
        guard n == want else {
            throw FerryError(.io, "source \(file.path) is shorter than chunk \(index) needs (offset \(g.offset(of: index)))")
        }
        return n
    }

    public func record(_ slot: ChunkSlot) throws {
        try recorder?.add(index: slot.index, digest: slot.digest, zero: slot.isZero)
    }

    public func flush() throws { try recorder?.flush() }

    /// Marks the source record complete: it was read to the end, these are its digests.
    public func complete(ledger: Ledger, size: UInt64, digest: Digest) throws -> Digest {
        try record?.complete(in: ledger, size: size, digest: digest) ?? .zero
    }

    public var listRoot: Digest? { recorder?.listRoot }
    public var zeroChunks: Int { recorder?.zeroChunks ?? 0 }
}
