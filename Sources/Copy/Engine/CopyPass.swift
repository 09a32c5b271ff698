import Chunks
import Ledger

/// Where a copy's chunks come from: `SourceEnd` reads a file, a block device or stdin;
/// `WireReceiver` takes them off the wire. A new kind of source is one more type that fills slots.
public protocol ChunkOrigin: AnyObject {
    var chunkSize: Int { get }
    /// On the copying thread, in index order: puts chunk `slot.index` into the slot and returns
    /// its length, 0 at the end. It may set `slot.presetDigest` when it already hashed the chunk.
    func fill(_ slot: ChunkSlot, pump: ChunkPump) throws -> Int
    /// On the sink, after the target took the chunk.
    func taken(_ slot: ChunkSlot) throws
    /// On the sink at a checkpoint chunk, after the target's own checkpoint step.
    func checkpointed(_ slot: ChunkSlot) throws
    /// After the last chunk, on the copying thread.
    func finished() throws
}

/// Where a copy's chunks go: `DestinationEnd` writes a file, a block device or stdout;
/// `WireSender` sends them to the far end.
public protocol ChunkTarget: AnyObject {
    func take(_ slot: ChunkSlot) throws
    /// At a checkpoint chunk: make chunks [0, slot.index] durable, or hand them on to whoever
    /// confirms durability, before the origin records anything.
    func checkpoint(_ slot: ChunkSlot) throws
    /// An error from the target's other thread (a sender's acknowledgement listener) that must
    /// stop the copy before the next chunk.
    var failure: (any Error)? { get }
}

/// The chunk pass of every copy, local or remote, at either end of `ferry serve`: the origin
/// fills slots in order, the pump hashes each chunk and the whole image, and on its sink the
/// target takes each chunk before the origin records it; at every checkpoint the target acts
/// first (durability), the origin second (its record).
public enum CopyPass {
    public static func run(from origin: ChunkOrigin, to target: ChunkTarget, startIndex: Int, hasher: SHA256Hasher,
                           checkpointEvery: Int, checkpointOnInterrupt: Bool = false,
                           progress: ProgressCounter) throws -> PumpResult {
        let pump = ChunkPump(chunkSize: origin.chunkSize)
        let result = try pump.run(startIndex: startIndex, hasher: hasher, checkpointEvery: checkpointEvery,
                                  checkpointOnInterrupt: checkpointOnInterrupt, fill: { slot in
            if let failure = target.failure { throw failure }
            return try origin.fill(slot, pump: pump)
        }, consume: { slot in
            try target.take(slot)
            try origin.taken(slot)
            progress.add(slot.length)
        }, afterWhole: { slot in
            try target.checkpoint(slot)
            try origin.checkpointed(slot)
        })
        try origin.finished()
        return result
    }
}
