import Chunks
import Ledger

/// A local source as a copy's origin.
public final class SourceEnd: ChunkOrigin {
    /// Who records the source's checkpoints.
    public enum Checkpoints {
        /// This end, once the local target made the chunks durable (a local copy).
        case recordHere(Ledger)
        /// The sender's acknowledgement listener, once the far receiver said so (a remote copy).
        case onAcknowledgement
    }

    public let reader: SourceReader
    let checkpoints: Checkpoints
    /// Runs once, after the first chunk was read and passed the container check (a local copy
    /// begins its destination there, so a refused source leaves the destination untouched).
    var afterFirstFill: (() throws -> Void)?

    public init(_ reader: SourceReader, checkpoints: Checkpoints, afterFirstFill: (() throws -> Void)? = nil) {
        self.reader = reader
        self.checkpoints = checkpoints
        self.afterFirstFill = afterFirstFill
    }

    public var chunkSize: Int { reader.chunkSize }

    public func fill(_ slot: ChunkSlot, pump: ChunkPump) throws -> Int {
        let n = try reader.fill(slot)
        if let first = afterFirstFill { afterFirstFill = nil; try first() }
        return n
    }

    public func taken(_ slot: ChunkSlot) throws { try reader.record(slot) }

    public func checkpointed(_ slot: ChunkSlot) throws {
        guard case .recordHere(let ledger) = checkpoints else { return }
        try reader.flush()
        if let id = reader.imageId { try ledger.checkpoint(image: id, chunks: slot.index + 1, state: slot.hasherAfter?.savedState) }
    }

    public func finished() throws {}
}

/// A local destination as a copy's target.
public final class DestinationEnd: ChunkTarget {
    /// What a checkpoint does once the chunks are durable.
    public enum Checkpoints {
        /// Record it in this ledger (a local copy).
        case recordHere(Ledger)
        /// Tell the sender, which records it and acknowledges (the receiving end of a remote copy).
        case tell((ChunkSlot) throws -> Void)
    }

    public let writer: DestinationWriter
    let checkpoints: Checkpoints

    public init(_ writer: DestinationWriter, checkpoints: Checkpoints) {
        self.writer = writer
        self.checkpoints = checkpoints
    }

    public func take(_ slot: ChunkSlot) throws { try writer.accept(slot) }

    public func checkpoint(_ slot: ChunkSlot) throws {
        switch checkpoints {
        case .recordHere(let ledger):
            try writer.checkpoint(ledger: ledger, through: slot.index, hasher: slot.hasherAfter)
        case .tell(let tell):
            try writer.makeDurable(through: slot.index)
            try tell(slot)
        }
    }

    public var failure: (any Error)? { nil }
}
