// Shared machinery for ferry's end-to-end tests: every test runs the real `ferry` binary as a
// subprocess, in its own temporary folder, with its own ledger, and checks what a user would see
// (exit status, stderr, --json output, the bytes on disk, `ferry ledger export`).
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Where things are

enum TestPaths {
    /// The package root, derived from this file's path (Tests/FerryTests/Support.swift).
    static let packageRoot: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }()

    /// The ferry binary under test: $FERRY_BIN, else <root>/.build/release/ferry.
    static let ferry: String = {
        if let b = ProcessInfo.processInfo.environment["FERRY_BIN"], !b.isEmpty { return b }
        return packageRoot + "/.build/release/ferry"
    }()

    static let fixtures = packageRoot + "/Tests/Fixtures"

    static func fixture(_ name: String) -> String { fixtures + "/" + name }
}

/// FERRY_REQUIRE_ALL=1 (set by CI): a test that cannot run here fails instead of skipping.
func skipUnlessRequired(_ reason: String, file: StaticString = #filePath, line: UInt = #line) throws -> Never {
    if ProcessInfo.processInfo.environment["FERRY_REQUIRE_ALL"] == "1" {
        XCTFail("FERRY_REQUIRE_ALL=1 but this test cannot run: \(reason)", file: file, line: line)
        throw XCTSkip("failed above: \(reason)")
    }
    throw XCTSkip(reason)
}

// MARK: - Running processes

struct RunResult {
    var status: Int32
    /// True when the process was ended by a signal (`status` is then the signal number).
    var signaled: Bool
    var stdout: Data
    var stderr: String
    var command: String

    var out: String { String(decoding: stdout, as: UTF8.self) }

    /// stderr lines, without empty ones.
    /// (Split on unicode scalars: "\r\n" is one Character in Swift.)
    var errLines: [String] {
        stderr.unicodeScalars.split(separator: "\n").map { String(String.UnicodeScalarView($0)) }.filter { !$0.isEmpty }
    }

    var summary: String {
        "`\(command)` -> \(signaled ? "signal" : "exit") \(status)\nstdout: \(out.prefix(2000))\nstderr: \(stderr.prefix(2000))"
    }
}

/// A process started in the background with posix_spawn (outputs go to files). The tests reap
/// their children themselves with waitpid, so nothing else in the test process may.
final class Background {
    let pid: pid_t
    let outPath: String
    let errPath: String
    let command: String
    private var waitStatus: Int32?

    init(pid: pid_t, outPath: String, errPath: String, command: String) {
        (self.pid, self.outPath, self.errPath, self.command) = (pid, outPath, errPath, command)
    }

    /// The raw wait status once the process ended (reaping it), nil while it runs.
    @discardableResult
    func poll(block: Bool = false) -> Int32? {
        if let s = waitStatus { return s }
        var st: Int32 = 0
        let r = waitpid(pid, &st, block ? 0 : WNOHANG)
        if r == pid { waitStatus = st }
        return waitStatus
    }

    var isRunning: Bool { poll() == nil }

    func signal(_ sig: Int32) { if isRunning { kill(pid, sig) } }

    /// Waits for the process to end (killing it after `timeout` seconds) and collects its outputs.
    func wait(timeout: Double = 300) -> RunResult {
        let deadline = Date().addingTimeInterval(timeout)
        var nap: useconds_t = 200
        var timedOut = false
        while poll() == nil {
            if Date() > deadline {
                timedOut = true
                kill(pid, SIGKILL)
                poll(block: true)
                break
            }
            usleep(nap)
            nap = min(nap * 2, 20_000)
        }
        let st = waitStatus ?? 0
        let signaled = (st & 0x7f) != 0
        let out = (try? Data(contentsOf: URL(fileURLWithPath: outPath))) ?? Data()
        var err = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: errPath))) ?? Data(), as: UTF8.self)
        if timedOut { err += "\n[test harness: killed after \(Int(timeout)) s]" }
        return RunResult(status: signaled ? st & 0x7f : (st >> 8) & 0xff, signaled: signaled,
                         stdout: out, stderr: err, command: command)
    }
}

/// A temporary folder under /tmp for one test, removed at the end.
final class Scratch {
    let path: String
    private var counter = 0

    init(_ label: String) {
        var template = Array("/tmp/ferry-test-\(label)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "cannot create a temporary folder")
        path = String(cString: made!)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func nextLogNames() -> (String, String) {
        counter += 1
        return (file(".out.\(counter)"), file(".err.\(counter)"))
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Quotes a word for /bin/sh.
func shq(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

/// glibc's posix_spawn extensions (2.29+, 2.34+), which Swift's Glibc module does not import.
private enum SpawnExtras {
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    typealias AddClosefrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    static let addChdir: AddChdir? = dlsym(nil, "posix_spawn_file_actions_addchdir_np").map { unsafeBitCast($0, to: AddChdir.self) }
    static let addClosefrom: AddClosefrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: AddClosefrom.self) }
}

/// Starts `argv` in the background, in the scratch folder. `stdin`: a file to read from (else
/// /dev/null). `stdoutTo`: a file that receives stdout (else a log file in the scratch folder).
func start(_ argv: [String], in scratch: Scratch, stdin: String? = nil, stdoutTo: String? = nil,
           env: [String: String] = [:]) throws -> Background {
    let (outPath, errPath) = scratch.nextLogNames()
    let outFile = stdoutTo ?? outPath
    var environment = ProcessInfo.processInfo.environment
    environment.removeValue(forKey: "FERRY_LEDGER")
    for (k, v) in env { environment[k] = v }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, stdin ?? "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outFile, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    var argv = argv
    if let addChdir = SpawnExtras.addChdir {
        _ = addChdir(&actions, scratch.path)
    } else {
        argv = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", scratch.path] + argv
    }
    if let addClosefrom = SpawnExtras.addClosefrom { _ = addClosefrom(&actions, 3) }

    // Children start with default signal handling and nothing blocked, whatever the test runner set.
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attr, &none)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for sig in [SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, sig) }
    posix_spawnattr_setsigdefault(&attr, &defaults)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    var cenv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (cargs + cenv).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, argv[0], &actions, &attr, &cargs, &cenv)
    guard rc == 0 else {
        throw NSError(domain: "spawn \(argv[0])", code: Int(rc), userInfo: [NSLocalizedDescriptionKey: String(cString: strerror(rc))])
    }
    return Background(pid: pid, outPath: outFile, errPath: errPath,
                      command: argv.map { $0.contains(" ") ? shq($0) : $0 }.joined(separator: " "))
}

/// Runs `argv` to the end.
@discardableResult
func runProcess(_ argv: [String], in scratch: Scratch, stdin: String? = nil, stdoutTo: String? = nil,
         env: [String: String] = [:], timeout: Double = 300) throws -> RunResult {
    try start(argv, in: scratch, stdin: stdin, stdoutTo: stdoutTo, env: env).wait(timeout: timeout)
}

/// Runs a /bin/sh command line (for pipes) to the end.
@discardableResult
func sh(_ command: String, in scratch: Scratch, timeout: Double = 300) throws -> RunResult {
    var r = try runProcess(["/bin/sh", "-c", command], in: scratch, timeout: timeout)
    r.command = command
    return r
}

// MARK: - Data

/// SplitMix64: a fast, seeded, non-repeating byte source.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        let words = buffer.count / 8
        let p = buffer.baseAddress!
        for i in 0..<words { p.storeBytes(of: next(), toByteOffset: i * 8, as: UInt64.self) }
        var tail = next()
        for i in (words * 8)..<buffer.count { buffer[i] = UInt8(truncatingIfNeeded: tail); tail >>= 8 }
    }
}

/// What one region of a generated image holds.
enum Region {
    case random(Int)
    case zeros(Int)
    /// Text-like data: numbered log lines, repeating in shape but not in content.
    case text(Int)
    /// One byte value repeated (not zero).
    case fill(UInt8, Int)

    var length: Int {
        switch self {
        case .random(let n), .zeros(let n), .text(let n), .fill(_, let n): return n
        }
    }
}

/// Writes `regions` one after another to `path` (zero regions are written as zeros, so the
/// source is not sparse: ferry must find them by content).
func writeImage(_ path: String, _ regions: [Region], seed: UInt64 = 1) throws {
    _ = FileManager.default.createFile(atPath: path, contents: nil)
    let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    defer { try? fh.close() }
    var rng = SplitMix64(seed: seed)
    let block = 1 << 20
    var lineNo = 0
    var pendingText = Data()
    for region in regions {
        var left = region.length
        while left > 0 {
            let n = min(block, left)
            var data = Data(count: n)
            switch region {
            case .random:
                data.withUnsafeMutableBytes { rng.fill($0) }
            case .zeros:
                break
            case .fill(let b, _):
                data = Data(repeating: b, count: n)
            case .text:
                while pendingText.count < n {
                    lineNo += 1
                    pendingText.append(contentsOf: "\(lineNo) ferry test log: disk image block \(lineNo &* 7919 % 100003) copied ok\n".utf8)
                }
                data = pendingText.prefix(n)
                pendingText = Data(pendingText.dropFirst(n))
            }
            try fh.write(contentsOf: data)
            left -= n
        }
    }
}

/// `size` bytes from a seeded PRNG.
func writeRandom(_ path: String, size: Int, seed: UInt64) throws { try writeImage(path, [.random(size)], seed: seed) }

/// A mixed image of `mib` MiB less 12345 bytes (so its last chunk is short): 8 MiB blocks of
/// random, text-like and constant data with zero runs (3 MiB chunk-aligned, 0.5 MiB not), and a
/// 7 MiB zero run before the random tail.
func mixedRegions(mib: Int) -> [Region] {
    precondition(mib % 8 == 0 && mib >= 16)
    let M = 1 << 20
    var regions: [Region] = []
    for _ in 0..<(mib / 8 - 1) {
        regions += [.random(2 * M), .zeros(3 * M), .text(3 * M / 2), .fill(0xFF, M / 4), .zeros(M / 2), .random(3 * M / 4)]
    }
    regions += [.zeros(7 * M), .random(M - 12345)]
    return regions
}

func fileSize(_ path: String) -> UInt64 {
    var st = stat()
    return stat(path, &st) == 0 ? UInt64(st.st_size) : 0
}

/// Bytes the filesystem allocated for `path` (st_blocks * 512).
func allocatedBytes(_ path: String) -> UInt64 {
    var st = stat()
    return stat(path, &st) == 0 ? UInt64(st.st_blocks) * 512 : 0
}

func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

func readAll(_ path: String) -> Data { (try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data() }

/// Inverts the byte at `offset` in place (without truncating or growing the file).
func flipByte(_ path: String, at offset: UInt64) throws {
    let fd = open(path, O_RDWR)
    guard fd >= 0 else { throw NSError(domain: "flipByte", code: Int(errno)) }
    defer { close(fd) }
    var b: UInt8 = 0
    guard pread(fd, &b, 1, off_t(offset)) == 1 else { throw NSError(domain: "flipByte read", code: Int(errno)) }
    b ^= 0xFF
    guard pwrite(fd, &b, 1, off_t(offset)) == 1 else { throw NSError(domain: "flipByte write", code: Int(errno)) }
    fsync(fd)
}

// MARK: - Independent checks

/// `sha256sum PATH`, the reference for whole-image digests.
func sha256sum(_ path: String, in scratch: Scratch) throws -> String {
    let r = try runProcess(["/usr/bin/env", "sha256sum", path], in: scratch)
    precondition(r.status == 0, r.summary)
    return String(r.out.prefix(64))
}

/// The chunk list of a file computed by Python's hashlib: "OFFSET LENGTH SHA256" lines.
func chunkList(_ path: String, chunkSize: Int, in scratch: Scratch) throws -> [String] {
    let r = try runProcess(["/usr/bin/env", "python3", TestPaths.fixture("chunksums.py"), path, String(chunkSize)], in: scratch)
    precondition(r.status == 0, r.summary)
    return r.out.split(separator: "\n").map(String.init)
}

/// True when the two files hold the same bytes (`cmp`).
func sameBytes(_ a: String, _ b: String, in scratch: Scratch) throws -> Bool {
    try runProcess(["/usr/bin/env", "cmp", "-s", a, b], in: scratch).status == 0
}

// MARK: - ferry's JSON (decoded by the field names the documentation promises)

struct CopyEndJSON: Decodable {
    var path: String
    var host: String?
    var size: UInt64
    var sha256: String
    var imageId: Int64?
    var ledger: String?
    var io: String?
}

struct RemoteEndJSON: Decodable {
    var host: String
    var path: String
    var sha256: String
    var imageId: Int64?
    var ledger: String
}

struct CopyJSON: Decodable {
    var source: CopyEndJSON
    var destination: CopyEndJSON
    var chunkSize: Int
    var chunks: Int
    var zeroChunks: Int
    var listRoot: String
    var imageId: Int64?
    var transferId: String
    var digestsMatch: Bool
    var resumedFromChunk: Int?
    var bytesRead: UInt64
    var bytesWritten: UInt64
    var bytesSent: UInt64?
    var zeroFrames: Int?
    var retransmissions: Int?
    var remote: RemoteEndJSON?
    var seconds: Double
}

struct BadRangeJSON: Decodable, Equatable, CustomStringConvertible {
    var offset: UInt64
    var length: UInt64
    var firstChunk: Int
    var lastChunk: Int
    var description: String { "{offset \(offset), length \(length), chunks \(firstChunk)-\(lastChunk)}" }
}

struct VerifyJSON: Decodable {
    var target: String
    var host: String?
    var imageId: Int64
    var runId: Int64
    var status: String
    var chunks: Int
    var badChunks: Int
    var badRanges: [BadRangeJSON]
    var transientChunks: [Int]
    var unreadableChunks: [Int]
    var sizeChanged: Bool
    var expectedSize: UInt64
    var actualSize: UInt64?
    var bytesRead: UInt64
    var readMode: String
    var seconds: Double
}

struct ImageJSON: Decodable {
    var id: Int64
    var role: String
    var path: String
    var host: String
    var size: UInt64?
    var chunkSize: Int
    var sha256: String?
    var listRoot: String?
    var chunkCount: Int?
    var zeroChunks: Int
    var complete: Bool
    var transferId: String
    var checkpointChunks: Int
}

struct RunJSON: Decodable {
    var id: Int64
    var imageId: Int64
    var kind: String
    var result: String
}

struct FindingJSON: Decodable {
    var kind: String
    var firstChunk: Int
    var lastChunk: Int
    var offset: UInt64
    var length: UInt64
}

struct LedgerShowJSON: Decodable {
    struct RunWithFindings: Decodable {
        var run: RunJSON
        var findings: [FindingJSON]
    }
    var image: ImageJSON
    var runs: [RunWithFindings]
}

func decode<T: Decodable>(_ type: T.Type, _ data: Data, file: StaticString = #filePath, line: UInt = #line) throws -> T {
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch {
        XCTFail("cannot decode \(T.self) from \(String(decoding: data.prefix(2000), as: UTF8.self)): \(error)", file: file, line: line)
        throw error
    }
}

/// The last line of `text` that looks like a JSON object.
func lastJSONLine(_ text: String) -> Data {
    Data((text.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? "").utf8)
}

// MARK: - A test case with a scratch folder and a ledger

class FerryTestCase: XCTestCase {
    var scratch: Scratch!
    /// This test's ledger (never the host's default one).
    var ledger: String { scratch.file("x.db") }
    /// The far side's ledger in remote tests.
    var farLedger: String { scratch.file("far.db") }

    override func setUpWithError() throws {
        try super.setUpWithError()
        guard FileManager.default.isExecutableFile(atPath: TestPaths.ferry) else {
            XCTFail("no ferry binary at \(TestPaths.ferry): run `swift build -c release` or set FERRY_BIN")
            throw XCTSkip("no ferry binary")
        }
        scratch = Scratch(String(describing: type(of: self)))
    }

    override func tearDownWithError() throws {
        scratch?.remove()
        try super.tearDownWithError()
    }

    /// Runs `ferry ARGS` (add `--ledger` yourself where the command takes one).
    @discardableResult
    func ferry(_ args: [String], stdin: String? = nil, stdoutTo: String? = nil, timeout: Double = 300) throws -> RunResult {
        try runProcess([TestPaths.ferry] + args, in: scratch, stdin: stdin, stdoutTo: stdoutTo, timeout: timeout)
    }

    /// `ferry copy SRC DST --progress none --json --ledger x.db EXTRA`, expecting success.
    func copy(_ src: String, _ dst: String, _ extra: [String] = [], ledger: String? = nil,
              file: StaticString = #filePath, line: UInt = #line) throws -> CopyJSON {
        let r = try ferry(["copy", src, dst, "--progress", "none", "--json", "--ledger", ledger ?? self.ledger] + extra)
        XCTAssertEqual(r.status, 0, r.summary, file: file, line: line)
        guard r.status == 0 else { throw XCTSkip("copy failed; see above") }
        return try decode(CopyJSON.self, r.stdout, file: file, line: line)
    }

    /// `ferry verify TARGET --json`: the exit status and the report.
    func verify(_ target: String, _ extra: [String] = [], ledger: String? = nil,
                file: StaticString = #filePath, line: UInt = #line) throws -> (RunResult, VerifyJSON?) {
        let r = try ferry(["verify", target, "--progress", "none", "--json", "--ledger", ledger ?? self.ledger] + extra)
        guard r.status == 0 || r.status == 1 else {
            XCTFail("verify failed: " + r.summary, file: file, line: line)
            return (r, nil)
        }
        return (r, try decode(VerifyJSON.self, r.stdout, file: file, line: line))
    }

    /// `ferry ledger export ID`: its lines.
    func export(_ id: Int64?, ledger: String? = nil, file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        guard let id else {
            XCTFail("no image id to export", file: file, line: line)
            return []
        }
        let r = try ferry(["ledger", "export", String(id), "--ledger", ledger ?? self.ledger])
        XCTAssertEqual(r.status, 0, r.summary, file: file, line: line)
        return r.out.split(separator: "\n").map(String.init)
    }

    func ledgerImages(_ ledger: String) throws -> [ImageJSON] {
        let r = try ferry(["ledger", "list", "--json", "--ledger", ledger])
        guard r.status == 0 else { return [] }
        return try decode([ImageJSON].self, r.stdout)
    }

    /// Asserts that ferry failed with `status` and one `ferry: ...` line on stderr containing
    /// each of `mentions`.
    func assertRefusal(_ r: RunResult, status: Int32, mentions: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, status, r.summary, file: file, line: line)
        XCTAssertFalse(r.signaled, r.summary, file: file, line: line)
        let lines = r.errLines
        XCTAssertEqual(lines.count, 1, "expected exactly one line on stderr: " + r.summary, file: file, line: line)
        XCTAssertTrue(lines.first?.hasPrefix("ferry: ") ?? false, "stderr should start with 'ferry: ': " + r.summary, file: file, line: line)
        for m in mentions {
            XCTAssertTrue(r.stderr.contains(m), "stderr should mention '\(m)': " + r.summary, file: file, line: line)
        }
    }

    // MARK: Remote helpers (the local-pipe transport)

    /// -e/--rsh for the plain local-pipe transport.
    var localShell: String { "sh " + shq(TestPaths.fixture("lsh.sh")) }

    /// A relay transport (see Tests/Fixtures/relay.py) with its options.
    func relayShell(_ options: [String]) -> String {
        (["python3", shq(TestPaths.fixture("relay.py"))] + options).joined(separator: " ")
    }

    /// The remote options for `rsh`: the far ferry is this same binary, the far ledger far.db.
    func remoteOptions(_ rsh: String? = nil, farLedger: String? = nil) -> [String] {
        ["-e", rsh ?? localShell, "--remote-ferry", TestPaths.ferry, "--remote-ledger", farLedger ?? self.farLedger]
    }
}
