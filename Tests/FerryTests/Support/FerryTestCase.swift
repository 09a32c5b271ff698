// Shared machinery for the end-to-end tests: every test runs the real `ferry` binary as a
// subprocess, in its own temporary folder, with its own ledger, and checks what a user would see
// (exit status, stderr, --json output, the bytes on disk, `ferry ledger export`).
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

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
        if let stale = TestPaths.staleBinary {
            XCTFail(stale)
            throw XCTSkip("stale binary")
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

    /// A run's stdout as a JSON object, for fields the JSON mirrors do not name.
    func jsonObject(_ r: RunResult, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let object = try? JSONSerialization.jsonObject(with: r.stdout)
        return try XCTUnwrap(object as? [String: Any], "not a JSON object: " + r.summary, file: file, line: line)
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
