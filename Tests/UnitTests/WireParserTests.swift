import Chunks
import Foundation
import Wire
import XCTest

/// The frame parser and serializer, from the fixture files in Tests/Fixtures/frames (hex, `#`
/// comments), from round trips, and from inputs the fuzzer kept (`FrameFuzzTests` runs the
/// mutants). Every malformed input must end in a wire error that names what was wrong, never a
/// crash or a large allocation.
final class WireParserTests: XCTestCase {
    func fixture(_ name: String) throws -> [UInt8] { try FrameFixtures.load(name) }

    /// Good and bad fixtures have their expectations below. Inputs the fuzzer kept (crash-*) are a
    /// regression corpus: each must now parse or fail with a wire error, whole and in pieces, and
    /// keep every other invariant of `FrameFuzz.check`.
    func testEveryFixtureIsCovered() throws {
        let names = try FrameFixtures.names()
        XCTAssertEqual(names.filter { !$0.hasPrefix("crash-") }, (Array(Self.good.keys) + Array(Self.bad.keys)).sorted(),
                       "each fixture in Tests/Fixtures/frames needs an expectation here")
        for name in names where name.hasPrefix("crash-") {
            let bytes = try fixture(name)
            for pieces in [[bytes.count + 1], [1], [7], [5, 53, 1]] {
                XCTAssertEqual(FrameFuzz.check(bytes, pieces: pieces), [], "\(name), in pieces of \(pieces)")
            }
        }
    }

    /// Good fixtures and the frame types they hold, in order.
    static let good: [String: [FrameType]] = [
        "good-hello": [.hello],
        "good-chunk-zero": [.chunk],
        "good-chunk-data": [.chunk],
        "good-conversation": [.log, .checkpoint, .chunk, .end],
    ]

    /// Bad fixtures and a phrase the error must contain.
    static let bad: [String: String] = [
        "bad-unknown-type": "unknown frame type 0x7f",
        "bad-zero-length": "log frame of 0 bytes",
        "bad-oversized-log": "log frame of 1048577 bytes",
        "bad-oversized-checkpoint": "checkpoint frame of 10 bytes",
        "bad-huge-chunk": "chunk frame of 4294967295 bytes",
        "bad-truncated-chunk-header": "truncated chunk frame",
        "bad-cut-mid-frame": "in the middle of a frame (10 bytes left)",
        "bad-shell-profile-noise": "unknown frame type 0x6f",
    ]

    func testGoodFixturesParse() throws {
        for (name, types) in Self.good {
            let frames = try FrameParser.frames(in: fixture(name))
            XCTAssertEqual(frames.map(\.type), types, name)
        }
    }

    func testGoodFixtureContents() throws {
        guard case .chunk(let h, let payload) = try FrameParser.frames(in: fixture("good-chunk-data"))[0] else {
            return XCTFail("not a chunk frame")
        }
        XCTAssertEqual(payload, Array(0..<16))
        XCTAssertEqual(h.rawLength, 16)
        XCTAssertEqual(h.digest, Digest.sha256(payload))
        guard case .chunk(let z, let none) = try FrameParser.frames(in: fixture("good-chunk-zero"))[0] else {
            return XCTFail("not a chunk frame")
        }
        XCTAssertEqual(z.index, 3)
        XCTAssertEqual(z.flags, [.zero])
        XCTAssertEqual(z.offset, 12288)
        XCTAssertTrue(none.isEmpty)
        let conversation = try FrameParser.frames(in: fixture("good-conversation"))
        XCTAssertEqual(conversation[0], .control(.log, Array("hello from the far side".utf8)))
        XCTAssertEqual(conversation[1], .control(.checkpoint, U64Body.encode(2)))
        guard case .control(.end, let end) = conversation[3] else { return XCTFail("no End") }
        XCTAssertEqual(try JSONBody.decode(End.self, end, what: "end").chunks, 3)
    }

    func testBadFixturesAreWireErrorsThatSayWhy() throws {
        for (name, phrase) in Self.bad {
            XCTAssertThrowsError(try FrameParser.frames(in: fixture(name), peer: "ssh pve"), name) { error in
                guard let e = error as? FerryError else { return XCTFail("\(name): \(error) is not a FerryError") }
                XCTAssertEqual(e.code, .wire, name)
                XCTAssertTrue(e.message.contains(phrase), "\(name): '\(e.message)' lacks '\(phrase)'")
            }
        }
    }

    func testSerializerRoundTripsThroughTheParser() throws {
        let header = ChunkHeader(index: 7, flags: [.zstd, .resent], digest: Digest.sha256([1, 2, 3]), rawLength: 3, offset: 7 << 20)
        var bytes = FrameSerializer.control(.hello, Array(#"{"a":1}"#.utf8))
        bytes += FrameSerializer.chunk(header, payload: [9, 9])
        bytes += FrameSerializer.control(.retransmit, U64Body.encode(7))
        bytes += FrameSerializer.control(.result, [])
        XCTAssertEqual(try FrameParser.frames(in: bytes), [
            .control(.hello, Array(#"{"a":1}"#.utf8)),
            .chunk(header, payload: [9, 9]),
            .control(.retransmit, U64Body.encode(7)),
            .control(.result, []),
        ])
    }

    func testFramesArriveInPiecesOfAnySize() throws {
        let bytes = try fixture("good-conversation")
        for step in [1, 2, 5, 7, 64] {
            var parser = FrameParser(peer: "pipe")
            var got: [Frame] = []
            var at = 0
            while at < bytes.count {
                parser.append(Array(bytes[at..<min(at + step, bytes.count)]))
                at += step
                while let f = try parser.next() { got.append(f) }
            }
            XCTAssertEqual(got, try FrameParser.frames(in: bytes), "pieces of \(step)")
            XCTAssertEqual(parser.pending, 0)
        }
    }

    func testControlFramesAreCappedSmallAndOnlyChunksAreLarge() {
        for type in [FrameType.hello, .log, .error, .end] {
            XCTAssertLessThanOrEqual(FrameHead.maxBody(type), 64 << 10, "\(type)")
        }
        // A chunk's `supplied` word may list 2048 ranges still unreadable; an unreadable frame as many.
        XCTAssertLessThanOrEqual(FrameHead.maxBody(.supplied), 1 << 20)
        XCTAssertLessThanOrEqual(FrameHead.maxBody(.unreadable), 8 + 2048 * 16)
        for type in [FrameType.retransmit, .checkpoint, .checkpointAck, .progress] {
            XCTAssertEqual(FrameHead.maxBody(type), 8, "\(type)")
        }
        XCTAssertEqual(FrameHead.maxBody(.chunk), ChunkHeader.size + ChunkGeometry.maxChunkSize)
        XCTAssertGreaterThanOrEqual(FrameHead.maxBody(.chunk), 4 * FrameHead.maxBody(.request))
    }

    /// Every prefix of a good fixture (a stream cut anywhere) keeps the fuzzer's invariants:
    /// `FrameFuzzTests` runs the mutants.
    func testEveryPrefixOfAGoodFixtureParsesOrFailsWithAWireError() throws {
        for name in Self.good.keys {
            let bytes = try fixture(name)
            for cut in 0...bytes.count {
                XCTAssertEqual(FrameFuzz.check(Array(bytes[..<cut]), pieces: [1, 4]), [], "\(name) cut at \(cut)")
            }
        }
    }

    func testMalformedBodies() {
        XCTAssertThrowsError(try U64Body.decode([1, 2, 3]))
        XCTAssertThrowsError(try JSONBody.decode(End.self, Array("{\"size\":".utf8), what: "end"))
        // Foundation traps on this one (crash-481227364-2737530 is the body the fuzzer found it in).
        XCTAssertThrowsError(try JSONBody.decode(End.self, [UInt8](repeating: UInt8(ascii: "["), count: 513), what: "end")) {
            XCTAssertTrue("\($0)".contains("end frame from the peer: JSON nested deeper than 32 levels"), "\($0)")
        }
        XCTAssertThrowsError(try JSONBody.decode(End.self, Array(#"{"sha256":"[[[[","size":[[[[[[[[[[1"#.utf8), what: "end")) {
            XCTAssertFalse("\($0)".contains("nested deeper"), "brackets in a string count: \($0)")
        }
        XCTAssertThrowsError(try SubBlockDigests.decode([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 16, 0, 0, 0, 0, 2]))
        XCTAssertThrowsError(try chunkIndex(1 << 41, what: "chunk index"))
    }
}

/// Whole frames as bytes, built from the same head encoders `Connection` sends with.
extension FrameSerializer {
    static func control(_ type: FrameType, _ body: [UInt8]) -> [UInt8] {
        FrameHead.encode(type, bodyLength: body.count) + body
    }

    static func chunk(_ header: ChunkHeader, payload: [UInt8]) -> [UInt8] {
        chunkHead(header, payloadLength: payload.count) + payload
    }
}

extension Frame {
    var type: FrameType {
        switch self {
        case .control(let t, _): return t
        case .chunk: return .chunk
        }
    }
}
