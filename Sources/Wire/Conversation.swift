import Chunks

/// Which frames each side of each operation may receive, and when: the one table of the
/// protocol's order. Every receive loop hands what arrived to its conversation before acting on
/// it, so a frame out of turn is refused the same way everywhere, and the rules can be tested
/// without a connection. (The handshake and the request/ready exchange wait for one frame type
/// each, through `Connection.expect`.)
public struct Conversation: Sendable {
    /// The side that receives, by operation.
    public enum Side: Sendable, CaseIterable {
        /// A copy's sending end hears retransmit requests, checkpoints and, last, the result.
        case copySender
        /// A copy's receiving end hears chunks, checkpoint acknowledgements and End; after End,
        /// only re-sent chunks that End overtook.
        case copyReceiver
        /// A verify's client hears progress and, last, the report.
        case verifyClient
        /// A resend's source side hears sub-block digests and, last, the result.
        case resendSource
        /// A resend's destination side hears sub-block chunks and `supplied`, chunk by chunk.
        case resendDestination

        var during: String {
            switch self {
            case .copySender, .copyReceiver: return "the copy"
            case .verifyClient: return "verify"
            case .resendSource: return "the source side of a resend"
            case .resendDestination: return "the destination side of a resend"
            }
        }
    }

    public let side: Side
    public let peer: String
    /// End (a copy's receiver) or the result (everyone else) has arrived.
    public private(set) var ended = false

    public init(_ side: Side, peer: String) {
        self.side = side
        self.peer = peer
    }

    /// What arrived next, as far as the order is concerned.
    public enum Arrival: Sendable {
        case control(FrameType)
        case chunk(ChunkHeader)
    }

    /// Admits the next frame or throws a wire error naming it.
    public mutating func admit(_ arrival: Arrival) throws {
        switch arrival {
        case .control(.log), .control(.error):
            return   // shown or raised by `Connection.other`, at any point
        case .chunk(let h):
            try admitChunk(h)
        case .control(let type):
            guard !ended || side == .copyReceiver && type == .checkpointAck else {
                throw refusal("a \(type) frame after the conversation ended")
            }
            switch (side, type) {
            case (.copySender, .retransmit), (.copySender, .checkpoint),
                 (.copyReceiver, .checkpointAck), (.copyReceiver, .unreadable),
                 (.verifyClient, .progress),
                 (.resendSource, .subBlocks),
                 (.resendDestination, .supplied):
                return
            case (.copySender, .result), (.verifyClient, .result), (.resendSource, .result), (.copyReceiver, .end):
                ended = true
            default:
                throw refusal("an unexpected \(type) frame")
            }
        }
    }

    public mutating func admit(_ incoming: Connection.Incoming) throws {
        switch incoming {
        case .control(let type, _): try admit(.control(type))
        case .chunk(let header, _): try admit(.chunk(header))
        }
    }

    private func admitChunk(_ h: ChunkHeader) throws {
        switch side {
        case .copyReceiver:
            guard !h.flags.contains(.partial) else { throw refusal("a resend sub-block (chunk \(h.index))") }
            guard !ended || h.flags.contains(.resent) else { throw refusal("chunk \(h.index) after its End") }
        case .resendDestination:
            guard h.flags.contains(.partial) else { throw refusal("a whole chunk frame (chunk \(h.index)) where sub-blocks belong") }
        case .copySender, .verifyClient, .resendSource:
            throw refusal("a chunk frame")
        }
    }

    private func refusal(_ what: String) -> FerryError {
        FerryError(.wire, "\(peer) sent \(what) during \(side.during)",
                   hint: "the two ends disagree about the protocol, or the stream was damaged; check that both run the same ferry")
    }
}
