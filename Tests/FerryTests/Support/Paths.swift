// Where the binary and the fixtures are, and how a test that cannot run here says so.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Where things are

enum TestPaths {
    /// The package root, derived from this file's path (Tests/FerryTests/Support/Paths.swift).
    static let packageRoot: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
    }()

    /// The ferry binary under test: $FERRY_BIN, else <root>/.build/release/ferry.
    static let ferry: String = {
        if let b = ProcessInfo.processInfo.environment["FERRY_BIN"], !b.isEmpty { return b }
        return packageRoot + "/.build/release/ferry"
    }()

    static let fixtures = packageRoot + "/Tests/Fixtures"

    /// Why the binary cannot be the one these sources describe, or nil when it can: a source
    /// file (or Package.swift) changed after the binary was built. A plain `swift test` does not
    /// rebuild `.build/release/ferry`, and tests of an old binary prove nothing about new code.
    static let staleBinary: String? = {
        guard let built = modified(ferry) else { return nil }
        let fm = FileManager.default
        var newest: (String, Double)?
        for dir in ["Sources"] {
            guard let walker = fm.enumerator(atPath: packageRoot + "/" + dir) else { continue }
            for case let rel as String in walker where rel.hasSuffix(".swift") || rel.hasSuffix(".c") || rel.hasSuffix(".h") {
                let path = packageRoot + "/" + dir + "/" + rel
                if let m = modified(path), m > (newest?.1 ?? 0) { newest = (path, m) }
            }
        }
        if let m = modified(packageRoot + "/Package.swift"), m > (newest?.1 ?? 0) { newest = (packageRoot + "/Package.swift", m) }
        guard let (path, m) = newest, m > built else { return nil }
        return "\(ferry) is older than \(path): run `make test` (it builds first), or `make build` before `swift test`"
    }()

    private static func modified(_ path: String) -> Double? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
    }

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
