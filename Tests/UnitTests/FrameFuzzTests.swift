import Chunks
import Foundation
import Glibc
import Wire
import XCTest

/// Fuzzes the pure frame parser, the body decoders and the conversation order with mutants of
/// the fixtures and of every message ferry sends, for a fixed number of inputs.
///
/// Each input is a pure function of (seed, iteration): a failure names both, and
/// `FERRY_FUZZ_REPLAY=<seed>:<iteration>` rebuilds that input, keeps it as
/// Tests/Fixtures/frames/crash-<seed>-<iteration>.hex and runs it again. An input that breaks an
/// invariant without crashing is kept the same way at once; one that crashes the test process is
/// kept by a signal handler before the process dies. Kept inputs are a regression corpus that
/// `WireParserTests.testEveryFixtureIsCovered` runs on every `make test`. A pair rebuilds its input
/// only while the corpus and the mutator are unchanged; the kept bytes are what lasts.
///
///     FERRY_FUZZ_SEED         the seed (decimal or 0x-hex); a fixed default, so `make test` repeats itself
///     FERRY_FUZZ_ITERATIONS   how many inputs (default 150000; `make fuzz` runs 5000000)
///     FERRY_FUZZ_REPLAY       <seed>:<iteration>: keep and run that one input only
final class FrameFuzzTests: XCTestCase {
    static let defaultSeed: UInt64 = 0xF3_44_70_01
    static let defaultIterations = 150_000

    func testMutatedFramesParseOrFailWithAWireError() throws {
        let env = ProcessInfo.processInfo.environment
        let mutator = Mutator(corpus: try FrameFuzz.corpus())
        if let replay = env["FERRY_FUZZ_REPLAY"] {
            let parts = replay.split(separator: ":")
            guard parts.count == 2, let seed = FrameFuzz.number(parts[0]), let iteration = FrameFuzz.number(parts[1]) else {
                return XCTFail("FERRY_FUZZ_REPLAY is '\(replay)', not <seed>:<iteration>")
            }
            let input = FrameFuzz.Case(seed: seed, iteration: iteration, mutator: mutator)
            let path = try FrameFixtures.keep(input.bytes, seed: seed, iteration: iteration,
                                              why: ["replayed with FERRY_FUZZ_REPLAY=\(seed):\(iteration)"])
            print("frame fuzz: seed \(seed) iteration \(iteration): \(input.bytes.count) bytes kept as \(path)")
            let violations = FrameFuzz.check(input.bytes, pieces: input.pieces)
            XCTAssertEqual(violations, [], "seed \(seed) iteration \(iteration)")
            if violations.isEmpty { print("frame fuzz: this input passes now; delete \(path) unless it guards a fix") }
            return
        }

        let seedText = env["FERRY_FUZZ_SEED"] ?? String(Self.defaultSeed)
        guard let seed = FrameFuzz.number(Substring(seedText)) else { return XCTFail("FERRY_FUZZ_SEED is '\(seedText)', not a number") }
        let iterationsText = env["FERRY_FUZZ_ITERATIONS"] ?? String(Self.defaultIterations)
        guard let iterations = Int(iterationsText), iterations >= 0 else {
            return XCTFail("FERRY_FUZZ_ITERATIONS is '\(iterationsText)', not a count")
        }
        print("frame fuzz: seed \(seed), \(iterations) inputs (FERRY_FUZZ_SEED, FERRY_FUZZ_ITERATIONS to change)")
        CrashKeeper.arm(seed: seed, directory: FrameFixtures.directory.path)
        defer { CrashKeeper.disarm() }
        let clock = ContinuousClock.now
        var failed = 0, accepted = 0, bytes = 0
        for iteration in 0..<UInt64(iterations) {
            let input = FrameFuzz.Case(seed: seed, iteration: iteration, mutator: mutator)
            CrashKeeper.hold(input.bytes, iteration: iteration)
            bytes += input.bytes.count
            let violations = FrameFuzz.check(input.bytes, pieces: input.pieces)
            if violations.isEmpty {
                if (try? FrameParser.frames(in: input.bytes)) != nil { accepted += 1 }
                continue
            }
            failed += 1
            let path = try FrameFixtures.keep(input.bytes, seed: seed, iteration: iteration, why: violations)
            XCTFail("""
                seed \(seed) iteration \(iteration): \(violations.joined(separator: "; "))
                kept as \(path); replay with FERRY_FUZZ_REPLAY=\(seed):\(iteration)
                """)
            if failed == 10 { break }
        }
        let elapsed = (ContinuousClock.now - clock).components
        let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        print("frame fuzz: seed \(seed): \(iterations) inputs (\(bytes) bytes, \(accepted) parsed whole), \(failed) failing, "
              + String(format: "%.1f s, %.0f inputs/s", seconds, Double(iterations) / max(seconds, 1e-9)))
    }

    func testTheGeneratorIsAPureFunctionOfSeedAndIteration() throws {
        let mutator = Mutator(corpus: try FrameFuzz.corpus())
        for iteration: UInt64 in [0, 1, 99_999] {
            let a = FrameFuzz.Case(seed: 7, iteration: iteration, mutator: mutator)
            let b = FrameFuzz.Case(seed: 7, iteration: iteration, mutator: mutator)
            XCTAssertEqual(a.bytes, b.bytes)
            XCTAssertEqual(a.pieces, b.pieces)
        }
        XCTAssertNotEqual((0..<20).map { FrameFuzz.Case(seed: 7, iteration: $0, mutator: mutator).bytes },
                          (0..<20).map { FrameFuzz.Case(seed: 8, iteration: $0, mutator: mutator).bytes })
    }

    /// The oracle itself: an input that parses, one that fails with a wire error, and a failure the
    /// parser must report early (a head over its cap, before any body arrives).
    func testTheOracleAcceptsWhatItShould() throws {
        XCTAssertEqual(FrameFuzz.check(try FrameFixtures.load("good-conversation"), pieces: [3]), [])
        XCTAssertEqual(FrameFuzz.check(try FrameFixtures.load("bad-huge-chunk"), pieces: [1]), [])
        XCTAssertEqual(FrameFuzz.check([], pieces: [1]), [])
        let request = FrameHead.encode(.request, bodyLength: 2) + Array("{}".utf8)
        XCTAssertEqual(FrameFuzz.check(request, pieces: [2]), [])
    }
}

/// The invariants every input must keep, and the inputs.
enum FrameFuzz {
    static let peer = "ssh pve"

    /// One input and the sizes of the pieces it arrives in, from (seed, iteration) alone.
    struct Case {
        var bytes: [UInt8]
        var pieces: [Int]

        init(seed: UInt64, iteration: UInt64, mutator: Mutator) {
            var rng = SplitMix64(seed: seed, iteration: iteration)
            bytes = mutator.mutant(&rng)
            let count = bytes.count
            pieces = (0..<(1 + rng.below(4))).map { _ in
                rng.oneIn(4) ? 1 + rng.below(max(1, count)) : rng.pick([1, 2, 3, 4, 5, 6, 7, 9, 53, 54, 58, 64, 4096])
            }
        }
    }

    static func number(_ s: Substring) -> UInt64? {
        s.hasPrefix("0x") ? UInt64(s.dropFirst(2), radix: 16) : UInt64(s)
    }

    /// The fixtures (not inputs kept from earlier runs: the corpus must stay the same for a replay
    /// to rebuild an input), then every frame ferry sends, alone and in each side's conversation.
    static func corpus() throws -> [[UInt8]] {
        let fixtures = try FrameFixtures.names().filter { !$0.hasPrefix("crash-") }.map(FrameFixtures.load)
        let frames = sampleFrames()
        let conversations: [[FrameType]] = [
            [.chunk, .checkpointAck, .log, .chunk, .end, .chunk],   // a copy's receiving end
            [.retransmit, .checkpoint, .log, .result],              // a copy's sending end
            [.progress, .progress, .result],                        // verify's client
            [.subBlocks, .subBlocks, .result],                      // a resend's source side
            [.chunk, .supplied, .error],                            // a resend's destination side
        ]
        let streams = conversations.map { types in
            Array(types.map { t in frames.first { $0[4] == t.rawValue }! }.joined())
        }
        return fixtures + frames + streams
    }

    static func sampleFrames() -> [[UInt8]] {
        let digest = Digest.sha256(Array("ferry".utf8))
        let plan = ResendPlan(imageId: 4, transferId: "t1", chunkSize: 1 << 20, size: 3 << 20, subBlockSize: 65536,
                              chunks: [.init(index: 1, sha256: digest.description), .init(index: 2, sha256: digest.description)],
                              host: "pve", ledger: "/var/lib/ferry/ledger.db")
        var copy = CopyRequest(path: "/dev/zvol/rpool/vm-100", ledger: nil, chunkSize: 1 << 20, size: 5 << 30,
                               transferId: "abc", peer: "old:/dev/nbd0", checkpointEvery: 256)
        copy.compressLevel = 3
        copy.resumeCheckpoints = [256, 512]
        let requests: [Request] = [
            .receive(copy), .send(CopyRequest(path: "/srv/disk.raw", ledger: "/l.db", chunkSize: 65536, size: nil,
                                              transferId: "t", peer: "h:/d", checkpointEvery: 1)),
            .verify(VerifyRequest(path: "/srv/disk.raw", ledger: "/var/lib/ferry/ledger.db", imageId: 7)),
            .resendReceive(RepairRequest(path: "/d", ledger: nil, imageId: nil, verifyFirst: true, subBlockSize: 65536, peer: "h:/s")),
            .resendSend(SupplyRequest(path: "/s", ledger: nil, plan: plan, force: true, peer: "h:/d")),
        ]
        var ready = Ready(host: "pve", ledger: "/var/lib/ferry/ledger.db")
        (ready.imageId, ready.size, ready.resumeFrom, ready.chunkSize) = (3, 1 << 30, 12, 1 << 20)
        var result = TransferResult(host: "pve", ledger: "/l.db", imageId: 3, size: 1 << 30, sha256: digest.description,
                                    listRoot: digest.description, chunks: 1024, zeroChunks: 10)
        result.retransmissions = 2
        let resendResult = ResendResult(host: "pve", ledger: "/l.db", imageId: 4, runId: 9,
                                        chunks: [.init(index: 1, status: .repaired, attempts: 1, blocksWritten: 2, bytesWritten: 131072)],
                                        bytesWritten: 131072, bytesReread: 1 << 20)
        func chunk(_ flags: ChunkFlags, _ payload: [UInt8], index: UInt64 = 5) -> [UInt8] {
            FrameSerializer.chunkHead(ChunkHeader(index: index, flags: flags, digest: digest, rawLength: UInt32(payload.count),
                                                  offset: index << 20), payloadLength: payload.count) + payload
        }
        func control(_ type: FrameType, _ body: [UInt8]) -> [UInt8] { FrameHead.encode(type, bodyLength: body.count) + body }
        return [
            chunk([], Array(0..<32)), chunk([.zero], []), chunk([.zstd, .resent], [0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
            chunk([.partial], Array(repeating: 7, count: 16), index: 1),
            control(.hello, JSONBody.encode(Hello(ferryVersion: "1.4.0", binary: "/usr/bin/ferry", host: "pve"))),
            control(.ready, JSONBody.encode(ready)),
            control(.ready, JSONBody.encode(ResendReady(plan: plan, verifyJSON: "{\"ok\":true}"))),
            control(.end, JSONBody.encode(End(size: 3 << 20, chunks: 3, sha256: digest.description))),
            control(.result, JSONBody.encode(result)),
            control(.result, JSONBody.encode(resendResult)),
            control(.error, JSONBody.encode(WireError(FerryError(.io, "read of /dev/sdb failed", hint: "check the disk")))),
            control(.supplied, JSONBody.encode(ChunkSupplied(chunk: 1, status: .sent, blocks: 2, sha256: digest.description))),
            control(.subBlocks, SubBlockDigests(chunk: 1, blockSize: 65536, digests: [digest, .zero]).encode()),
            control(.subBlocks, SubBlockDigests(chunk: 0, blockSize: 4096, digests: []).encode()),
            control(.retransmit, U64Body.encode(5)), control(.checkpoint, U64Body.encode(256)),
            control(.checkpointAck, U64Body.encode(256)), control(.progress, U64Body.encode(1 << 30)),
            control(.log, Array("zfs: 12% done".utf8)),
        ] + requests.map { control(.request, $0.encode()) }
    }

    /// What is wrong with how ferry handled `bytes`, arriving whole and in `pieces` (cycled); empty
    /// when every invariant holds.
    static func check(_ bytes: [UInt8], pieces: [Int]) -> [String] {
        var out: [String] = []
        func wire(_ what: String, _ error: Error, also: Set<FerryError.Code> = []) {
            guard let e = error as? FerryError else { return out.append("\(what) threw \(type(of: error)): \(error)") }
            if e.code != .wire && !also.contains(e.code) { out.append("\(what) threw a \(e.code) error: \(e.message)") }
            if e.message.isEmpty { out.append("\(what) threw a \(e.code) error with no message") }
        }

        let whole: Result<[Frame], Error> = Result { try FrameParser.frames(in: bytes, peer: peer) }
        if case .failure(let e) = whole { wire("FrameParser.frames(in:)", e) }

        // The same bytes in pieces, as a pipe delivers them.
        var parser = FrameParser(peer: peer)
        var streamed: [Frame] = []
        var streamError: Error?
        var fed = 0, piece = 0
        feeding: while fed < bytes.count {
            let n = max(1, pieces[piece % pieces.count])
            piece += 1
            parser.append(Array(bytes[fed..<min(bytes.count, fed + n)]))
            fed = min(bytes.count, fed + n)
            while true {
                do {
                    guard let f = try parser.next() else { break }
                    streamed.append(f)
                } catch {
                    streamError = error
                    break feeding
                }
            }
            // Waiting for more is only right when the head in hand is a valid one and its frame is not whole yet:
            // a length over the cap must be refused on its five bytes, before any body is buffered.
            if parser.pending >= FrameHead.size {
                let at = fed - parser.pending
                do {
                    let head = try bytes[at..<(at + FrameHead.size)].withUnsafeBytes { try FrameHead.parse($0, peer: peer) }
                    if parser.pending >= FrameHead.size + head.bodyLength {
                        out.append("next() returned nil holding a whole \(head.type) frame at byte \(at)")
                    }
                } catch {
                    out.append("next() waited for the body of a frame whose head it must refuse (byte \(at): \(error))")
                }
            }
        }
        if let e = streamError { wire("FrameParser.next()", e) }

        switch (whole, streamError) {
        case (.success(let frames), nil):
            if streamed != frames { out.append("pieces of \(pieces) gave \(streamed.count) frames, whole \(frames.count)") }
            if parser.pending != 0 { out.append("pieces of \(pieces) left \(parser.pending) bytes pending") }
            // Accepted frames are exactly the bytes they came from, within their type's cap.
            var again: [UInt8] = []
            for f in frames {
                switch f {
                case .control(let t, let body):
                    if body.count > FrameHead.maxBody(t) { out.append("a \(t) body of \(body.count) bytes passed its cap") }
                    again += FrameHead.encode(t, bodyLength: body.count) + body
                case .chunk(let h, let payload):
                    if ChunkHeader.size + payload.count > FrameHead.maxBody(.chunk) { out.append("a chunk of \(payload.count) bytes passed its cap") }
                    again += FrameSerializer.chunkHead(h, payloadLength: payload.count) + payload
                }
            }
            if again != bytes { out.append("accepted frames re-serialize to other bytes") }
        case (.success(let frames), let e?):
            out.append("whole gave \(frames.count) frames, pieces of \(pieces) threw \(e)")
        case (.failure(let e), nil):
            if parser.pending == 0 || !"\(e)".contains("in the middle of a frame") {
                out.append("whole threw '\(e)', pieces of \(pieces) did not (\(parser.pending) bytes pending)")
            }
        case (.failure(let a), let b?):
            if (a as? FerryError) != (b as? FerryError) { out.append("whole threw '\(a)', pieces of \(pieces) threw '\(b)'") }
        }

        // The bodies of the frames that arrived, through the decoders their receivers use.
        for f in streamed {
            switch f {
            case .chunk(let h, _):
                do { _ = try chunkIndex(h.index, what: "chunk index") } catch { wire("chunkIndex", error) }
            case .control(let t, let body):
                decode(t, body, wire)
            }
        }

        // The order of those frames, as each side's conversation admits them.
        for side in Conversation.Side.allCases {
            var talk = Conversation(side, peer: peer)
            for f in streamed {
                do {
                    switch f {
                    case .control(let t, _): try talk.admit(.control(t))
                    case .chunk(let h, _): try talk.admit(.chunk(h))
                    }
                } catch {
                    wire("Conversation(\(side)).admit", error)
                    if !"\(error)".contains(peer + " sent ") { out.append("\(side) refused without naming the peer: \(error)") }
                    break
                }
            }
        }
        return out
    }

    static let ourHello = Hello(ferryVersion: "1.4.0", binary: "/usr/bin/ferry", host: "here")

    /// Runs a control frame's body through every decoder a receiver of that type uses.
    static func decode(_ type: FrameType, _ body: [UInt8], _ wire: (String, Error, Set<FerryError.Code>) -> Void) {
        func expect(_ what: String, also: Set<FerryError.Code> = [], _ run: () throws -> Void) {
            do { try run() } catch { wire(what, error, also) }
        }
        func plan(_ p: ResendPlan) throws { for c in p.chunks { _ = try c.digest() } }
        switch type {
        case .hello:
            expect("Hello") { try Handshake.check(ours: ourHello, theirs: JSONBody.decode(Hello.self, body, what: "hello")) }
        case .request:
            // Request.decode documents two usage errors: an image on '-', and a chunk size it would refuse on our command line.
            expect("Request.decode", also: [.usage]) {
                let r = try Request.decode(body)
                if try Request.decode(r.encode()) != r { throw Violation("Request \(r) does not survive its own encoding") }
                if case .resendSend(let s) = r { try plan(s.plan) }
            }
        case .ready:
            expect("Ready") { _ = try JSONBody.decode(Ready.self, body, what: "ready") }
            expect("ResendReady") { try plan(JSONBody.decode(ResendReady.self, body, what: "ready").plan) }
        case .end:
            expect("End") { _ = try Digest.fromWire(JSONBody.decode(End.self, body, what: "end").sha256, what: "the image's hash") }
        case .result:
            expect("TransferResult") { _ = try JSONBody.decode(TransferResult.self, body, what: "result") }
            expect("ResendResult") { _ = try JSONBody.decode(ResendResult.self, body, what: "result") }
        case .error:
            expect("WireError") { _ = try JSONBody.decode(WireError.self, body, what: "error").ferryError }
        case .supplied:
            expect("ChunkSupplied") {
                _ = try Digest.fromWire(JSONBody.decode(ChunkSupplied.self, body, what: "supplied").sha256, what: "a chunk's hash")
            }
        case .subBlocks:
            expect("SubBlockDigests.decode") {
                let s = try SubBlockDigests.decode(body)
                if s.encode() != body { throw Violation("sub-block digests do not re-encode to their bytes") }
                _ = try chunkIndex(s.chunk, what: "chunk index")
            }
        case .retransmit, .checkpoint, .checkpointAck, .progress:
            expect("U64Body.decode") {
                let v = try U64Body.decode(body)
                if U64Body.encode(v) != body { throw Violation("a u64 body does not re-encode to its bytes") }
                _ = try chunkIndex(v, what: "chunk count")
            }
        case .unreadable:
            expect("UnreadableRanges.decode") {
                let u = try UnreadableRanges.decode(body) { chunk in
                    let start = chunk.multipliedReportingOverflow(by: 1 << 20)
                    guard !start.overflow, start.partialValue <= UInt64.max - (1 << 20) else {
                        throw FerryError(.wire, "chunk \(chunk) is past any image")
                    }
                    return start.partialValue..<start.partialValue + (1 << 20)
                }
                if u.encode() != body { throw Violation("unreadable ranges do not re-encode to their bytes") }
            }
        case .log:
            _ = String(decoding: body, as: UTF8.self)
        case .chunk:
            break
        }
    }

    /// A broken invariant found inside a decoder's closure; reported as not being a wire error.
    struct Violation: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }
}

/// Tests/Fixtures/frames: hex bytes, 16 to a line, `#` comment lines.
enum FrameFixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/frames")

    static func names() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".hex") }.map { String($0.dropLast(4)) }.sorted()
    }

    struct NotHex: Error, CustomStringConvertible { var description: String }

    static func load(_ name: String) throws -> [UInt8] {
        let text = try String(contentsOf: directory.appendingPathComponent(name + ".hex"), encoding: .utf8)
        var out: [UInt8] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            for word in line.split(separator: " ") {
                guard let b = UInt8(word, radix: 16) else { throw NotHex(description: "\(name).hex: '\(word)' is not a hex byte") }
                out.append(b)
            }
        }
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String {
        stride(from: 0, to: bytes.count, by: 16).map { at in
            bytes[at..<min(at + 16, bytes.count)].map { String($0 >> 4, radix: 16) + String($0 & 15, radix: 16) }.joined(separator: " ")
        }.joined(separator: "\n")
    }

    /// Writes `bytes` as crash-<seed>-<iteration>.hex, unless it is kept already (with its notes),
    /// and returns its path.
    static func keep(_ bytes: [UInt8], seed: UInt64, iteration: UInt64, why: [String]) throws -> String {
        let url = directory.appendingPathComponent("crash-\(seed)-\(iteration).hex")
        if FileManager.default.fileExists(atPath: url.path) { return url.path }
        let comments = ["Kept by the frame fuzzer (FERRY_FUZZ_REPLAY=\(seed):\(iteration)); must parse or fail with a wire error."]
            + why.map { $0.replacingOccurrences(of: "\n", with: " ") }
        try (comments.map { "# " + $0 }.joined(separator: "\n") + "\n" + hex(bytes) + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }
}

/// Keeps the input that kills the test process. A trap cannot be caught, so the loop hands each
/// input to `hold` first, and a handler for the fatal signals writes it as a fixture with nothing
/// but write(2) before the previous handler (the runtime's backtrace, or the default) takes over.
enum CrashKeeper {
    nonisolated(unsafe) static var seed: UInt64 = 0
    nonisolated(unsafe) static var iteration: UInt64 = 0
    nonisolated(unsafe) static var count = 0
    nonisolated(unsafe) static var input = UnsafeMutablePointer<UInt8>.allocate(capacity: Mutator.maxInput)
    nonisolated(unsafe) static var directory = UnsafeMutablePointer<UInt8>.allocate(capacity: 4096)
    nonisolated(unsafe) static var out = UnsafeMutablePointer<UInt8>.allocate(capacity: 8192)
    nonisolated(unsafe) static var outCount = 0
    nonisolated(unsafe) static var fd: Int32 = -1
    nonisolated(unsafe) static var previous = UnsafeMutablePointer<sigaction>.allocate(capacity: 65)
    nonisolated(unsafe) static var altStack = stack_t()
    nonisolated(unsafe) static var previousAltStack = stack_t()
    static let signals: [Int32] = [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT]

    static func arm(seed: UInt64, directory path: String) {
        self.seed = seed
        let utf8 = Array(path.utf8.prefix(4000))
        utf8.withUnsafeBufferPointer { directory.update(from: $0.baseAddress!, count: utf8.count) }
        directory[utf8.count] = 0
        (iteration, count, outCount, fd) = (0, 0, 0, -1)
        _ = (input, out, previous)
        // A stack overflow has no stack left to run the handler on.
        altStack.ss_sp = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 16)
        altStack.ss_size = 1 << 16
        altStack.ss_flags = 0
        sigaltstack(&altStack, &previousAltStack)
        for s in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { sig in CrashKeeper.keep(signal: sig) }
            action.sa_flags = SA_ONSTACK
            sigemptyset(&action.sa_mask)
            sigaction(s, &action, previous + Int(s))
        }
    }

    static func disarm() {
        for s in signals { sigaction(s, previous + Int(s), nil) }
        sigaltstack(&previousAltStack, nil)
    }

    static func hold(_ bytes: [UInt8], iteration: UInt64) {
        self.iteration = iteration
        count = min(bytes.count, Mutator.maxInput)
        bytes.withUnsafeBufferPointer { input.update(from: $0.baseAddress!, count: count) }
    }

    /// Runs in the signal handler: no allocation, no locks, only write(2).
    static func keep(signal sig: Int32) {
        (fd, outCount) = (-1, 0)
        var i = 0
        while directory[i] != 0 { put(directory[i]); i += 1 }
        put("/crash-"); put(seed); put("-"); put(iteration); put(".hex"); put(UInt8(0))
        fd = open(UnsafeRawPointer(out).assumingMemoryBound(to: CChar.self), O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        outCount = 0
        put("# Kept by the frame fuzzer (FERRY_FUZZ_REPLAY="); put(seed); put(":"); put(iteration)
        put("); must parse or fail with a wire error.\n# It killed the test process with signal "); put(UInt64(sig)); put("\n")
        let digits: StaticString = "0123456789abcdef"
        for k in 0..<count {
            put(digits.utf8Start[Int(input[k] >> 4)]); put(digits.utf8Start[Int(input[k] & 15)])
            put(k % 16 == 15 || k == count - 1 ? UInt8(ascii: "\n") : UInt8(ascii: " "))
        }
        flush()
        if fd >= 0 { close(fd) }
        fd = 2
        put("\nframe fuzz: signal "); put(UInt64(sig)); put(" at seed "); put(seed); put(" iteration "); put(iteration)
        put(": input kept in Tests/Fixtures/frames/crash-"); put(seed); put("-"); put(iteration)
        put(".hex; replay with FERRY_FUZZ_REPLAY="); put(seed); put(":"); put(iteration); put("\n")
        flush()
        // Back to the previous handler; the faulting instruction runs again and ends the process there.
        sigaction(sig, previous + Int(sig), nil)
    }

    private static func put(_ b: UInt8) {
        if outCount == 8192 { flush() }
        out[outCount] = b
        outCount += 1
    }

    private static func put(_ s: StaticString) {
        for k in 0..<s.utf8CodeUnitCount { put(s.utf8Start[k]) }
    }

    private static func put(_ v: UInt64) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0, v = v
        withUnsafeMutableBytes(of: &digits) { d in
            repeat { d[n] = UInt8(ascii: "0") + UInt8(v % 10); v /= 10; n += 1 } while v > 0
            while n > 0 { n -= 1; put(d[n]) }
        }
    }

    private static func flush() {
        if fd >= 0 && outCount > 0 { _ = write(fd, out, outCount) }
        outCount = 0
    }
}
