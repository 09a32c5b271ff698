import Chunks
import Wire
import XCTest

/// The protocol's order, one side at a time: the sequences each side must accept, and frames out
/// of turn that it must refuse with a wire error naming them.
final class ConversationTests: XCTestCase {
    typealias Arrival = Conversation.Arrival

    static func chunk(_ index: UInt64, _ flags: ChunkFlags = []) -> Arrival {
        .chunk(ChunkHeader(index: index, flags: flags, digest: .zero, rawLength: 4096, offset: index * 4096))
    }

    func accepts(_ side: Conversation.Side, _ arrivals: [Arrival], file: StaticString = #filePath, line: UInt = #line) {
        var talk = Conversation(side, peer: "ssh pve")
        for (i, a) in arrivals.enumerated() {
            XCTAssertNoThrow(try talk.admit(a), "\(side) refused arrival \(i): \(a)", file: file, line: line)
        }
    }

    /// Admits `prefix`, then expects `last` to be refused with `phrase` in the message.
    func refuses(_ side: Conversation.Side, after prefix: [Arrival], _ last: Arrival, saying phrase: String,
                 file: StaticString = #filePath, line: UInt = #line) {
        var talk = Conversation(side, peer: "ssh pve")
        for a in prefix { XCTAssertNoThrow(try talk.admit(a), file: file, line: line) }
        XCTAssertThrowsError(try talk.admit(last), file: file, line: line) { error in
            guard let e = error as? FerryError else { return XCTFail("\(error)", file: file, line: line) }
            XCTAssertEqual(e.code, .wire, file: file, line: line)
            XCTAssertTrue(e.message.hasPrefix("ssh pve sent "), e.message, file: file, line: line)
            XCTAssertTrue(e.message.contains(phrase), "'\(e.message)' lacks '\(phrase)'", file: file, line: line)
        }
    }

    func testCopyReceiver() {
        accepts(.copyReceiver, [Self.chunk(0), .control(.log), Self.chunk(1, .zero), .control(.checkpointAck),
                                Self.chunk(2, .zstd), .control(.end), Self.chunk(1, .resent), .control(.checkpointAck),
                                .control(.log), .control(.error)])
        refuses(.copyReceiver, after: [Self.chunk(0), .control(.end)], Self.chunk(1), saying: "chunk 1 after its End")
        refuses(.copyReceiver, after: [.control(.end)], .control(.end), saying: "a end frame after the conversation ended")
        refuses(.copyReceiver, after: [], Self.chunk(0, .partial), saying: "a resend sub-block (chunk 0)")
        for type in [FrameType.retransmit, .checkpoint, .result, .progress, .subBlocks, .supplied, .hello, .request, .ready] {
            refuses(.copyReceiver, after: [Self.chunk(0)], .control(type), saying: "an unexpected \(type) frame during the copy")
        }
    }

    func testCopySender() {
        accepts(.copySender, [.control(.checkpoint), .control(.retransmit), .control(.log), .control(.checkpoint), .control(.result)])
        refuses(.copySender, after: [], Self.chunk(0), saying: "a chunk frame during the copy")
        refuses(.copySender, after: [.control(.result)], .control(.checkpoint), saying: "after the conversation ended")
        refuses(.copySender, after: [.control(.result)], .control(.result), saying: "after the conversation ended")
        refuses(.copySender, after: [], .control(.end), saying: "an unexpected end frame")
        refuses(.copySender, after: [], .control(.checkpointAck), saying: "an unexpected checkpointAck frame")
    }

    func testVerifyClient() {
        accepts(.verifyClient, [.control(.progress), .control(.log), .control(.progress), .control(.result)])
        refuses(.verifyClient, after: [.control(.progress)], Self.chunk(0), saying: "a chunk frame during verify")
        refuses(.verifyClient, after: [.control(.result)], .control(.progress), saying: "after the conversation ended")
        refuses(.verifyClient, after: [], .control(.checkpoint), saying: "an unexpected checkpoint frame during verify")
    }

    func testResendSides() {
        accepts(.resendSource, [.control(.subBlocks), .control(.subBlocks), .control(.log), .control(.result)])
        refuses(.resendSource, after: [], Self.chunk(3, .partial), saying: "a chunk frame during the source side of a resend")
        refuses(.resendSource, after: [], .control(.supplied), saying: "an unexpected supplied frame")
        accepts(.resendDestination, [Self.chunk(3, .partial), Self.chunk(3, [.partial, .zero]), .control(.log), .control(.supplied)])
        refuses(.resendDestination, after: [], Self.chunk(3), saying: "a whole chunk frame (chunk 3) where sub-blocks belong")
        refuses(.resendDestination, after: [], .control(.subBlocks), saying: "an unexpected subBlocks frame during the destination side")
        refuses(.resendDestination, after: [], .control(.end), saying: "an unexpected end frame")
    }

    /// Every side takes log and error frames at any point, before and after its end.
    func testLogAndErrorAreAlwaysAdmitted() {
        for side in Conversation.Side.allCases {
            accepts(side, [.control(.log), .control(.error)])
        }
        accepts(.copyReceiver, [.control(.end), .control(.log), .control(.error)])
        accepts(.copySender, [.control(.result), .control(.log), .control(.error)])
    }
}
