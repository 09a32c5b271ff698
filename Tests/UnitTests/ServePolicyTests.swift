import Chunks
import Peer
import Wire
import XCTest

/// `ferry serve --restrict-to/--read-only`: the path rule, against a file system given as a table.
final class ServePolicyTests: XCTestCase {
    /// lstat answers from `entries` (anything else is missing), realpath from `links` or, for a
    /// non-link entry, the path itself.
    struct Table: PathLookup {
        var entries: [String: PathEntry]
        var links: [String: String] = [:]
        var workingDirectory = "/root"
        func entry(_ path: String) -> PathEntry { entries[path] ?? .missing }
        func realPath(_ path: String) -> String? {
            if path.count > 1, path.hasSuffix("/") { return realPath(String(path.dropLast())) }
            if let target = links[path] { return target }
            if case .symlink = entry(path) { return nil }
            return entries[path] == nil ? nil : path
        }
    }

    static let fs = Table(entries: [
        "/": .directory, "/tank": .directory, "/tank/images": .directory, "/tank/images/disk.raw": .other,
        "/tank/images/sub": .directory, "/tank2": .directory, "/tank2/disk.raw": .other,
        "/etc": .directory, "/etc/shadow": .other, "/srv": .directory, "/srv/images": .symlink(owner: 0, toBlockDevice: false),
        "/tank/images/escape": .symlink(owner: 0, toBlockDevice: false),
        "/tank/images/dangling": .symlink(owner: 0, toBlockDevice: false),
        "/tank/images/sda": .symlink(owner: 1000, toBlockDevice: true),
        "/dev": .directory, "/dev/zd0": .blockDevice, "/dev/sda": .blockDevice, "/dev/zvol": .directory,
        "/dev/zvol/tank": .directory, "/dev/zvol/tank/vm-1": .symlink(owner: 0, toBlockDevice: true),
        "/dev/zvol/tank/sub": .directory, "/dev/zvol/tank/sub/vm-2": .symlink(owner: 0, toBlockDevice: true),
        "/dev/zvol/tank2": .directory, "/dev/zvol/tank2/vm-3": .symlink(owner: 0, toBlockDevice: true),
        "/root": .directory,
    ], links: [
        "/srv/images": "/tank/images", "/tank/images/escape": "/etc/shadow", "/tank/images/sda": "/dev/sda",
        "/dev/zvol/tank/vm-1": "/dev/zd0", "/dev/zvol/tank/sub/vm-2": "/dev/zd0", "/dev/zvol/tank2/vm-3": "/dev/zd0",
    ])

    private func policy(_ dirs: [String], readOnly: Bool = false) throws -> ServePolicy {
        try ServePolicy(restrictTo: dirs, readOnly: readOnly, paths: Self.fs)
    }

    private func verify(_ path: String, ledger: String? = nil) -> Request {
        .verify(VerifyRequest(path: path, ledger: ledger, imageId: nil))
    }

    private func push(_ path: String) -> Request {
        .receive(CopyRequest(path: path, ledger: nil, chunkSize: 1 << 20, size: 1, transferId: "t", peer: "h:/s", checkpointEvery: 256))
    }

    private func assertAllowed(_ p: ServePolicy, _ r: Request, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNoThrow(try p.check(r, defaultLedger: "/var/lib/ferry/ledger.db", paths: Self.fs), file: file, line: line)
    }

    private func assertRefused(_ p: ServePolicy, _ r: Request, mentions: [String] = [], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try p.check(r, defaultLedger: "/var/lib/ferry/ledger.db", paths: Self.fs), file: file, line: line) { error in
            let e = error as? FerryError
            XCTAssertEqual(e?.code, .refused, "\(error)", file: file, line: line)
            for m in mentions { XCTAssertTrue(e?.message.contains(m) ?? false, "\(error) should mention \(m)", file: file, line: line) }
        }
    }

    func testFoldersAreResolvedAndMustExist() throws {
        XCTAssertEqual(try policy(["/srv/images", "/tank/images/", "/dev/zvol/tank"]).folders, ["/tank/images", "/dev/zvol/tank"])
        for bad in ["/nonexistent", "/tank/images/disk.raw", ""] {
            XCTAssertThrowsError(try policy([bad])) { XCTAssertEqual(($0 as? FerryError)?.code, .usage) }
        }
    }

    func testPathsInsideResolvedFolders() throws {
        let p = try policy(["/srv/images"])
        assertAllowed(p, verify("/tank/images/disk.raw"))
        assertAllowed(p, verify("/srv/images/disk.raw"))          // through the folder's own link
        assertAllowed(p, push("/tank/images/new.raw"))             // not there yet: its folder resolved
        assertAllowed(p, push("/tank/images/sub/later/new.raw"))   // nor its folders
        assertAllowed(p, verify("//tank/./images/disk.raw"))
        assertRefused(p, verify("/tank2/disk.raw"), mentions: ["/tank2/disk.raw", "lies outside", "/tank/images"])
        assertRefused(p, push("/tank/new.raw"))
        assertRefused(p, verify("/etc/shadow"))
        assertRefused(p, push("relative.raw"), mentions: ["relative.raw"])   // /root/relative.raw
        XCTAssertNoThrow(try policy(["/root"]).check(push("relative.raw"), defaultLedger: "/l.db", paths: Self.fs))
    }

    func testComponentWisePrefix() {
        XCTAssertTrue(ServePolicy.isInside("/tank/x", "/tank"))
        XCTAssertTrue(ServePolicy.isInside("/tank", "/tank"))
        XCTAssertFalse(ServePolicy.isInside("/tank2/x", "/tank"))
        XCTAssertFalse(ServePolicy.isInside("/tankx", "/tank"))
        XCTAssertTrue(ServePolicy.isInside("/anything", "/"))
    }

    func testDotDotSymlinksAndDanglingLinksAreRefused() throws {
        let p = try policy(["/tank/images"])
        assertRefused(p, verify("/tank/images/../images/disk.raw"), mentions: ["'..'"])
        assertRefused(p, verify("/tank/images/escape"), mentions: ["resolves to /etc/shadow"])
        assertRefused(p, push("/tank/images/dangling"), mentions: ["cannot be resolved"])
        assertRefused(p, push("/tank/images/dangling/x.raw"), mentions: ["cannot be resolved"])
        // A link to a block device owned by someone else than root is no zvol link.
        assertRefused(p, push("/tank/images/sda"), mentions: ["resolves to /dev/sda"])
        assertRefused(p, verify("/tank/images/x\u{0}/../../../etc/shadow"), mentions: ["NUL"])
    }

    /// An NBD URI names a server, not a file in the allowed folders: a restricted serve never
    /// connects where a client asks.
    func testNBDURIsAreRefused() throws {
        let p = try policy(["/tank/images"])
        let pull = Request.send(CopyRequest(path: "nbd+unix:///?socket=/tank/images/x.sock", ledger: nil, chunkSize: 1 << 20, size: nil,
                                            transferId: "t", peer: "h:/d", checkpointEvery: 256))
        assertRefused(p, pull, mentions: ["URI"])
        assertRefused(p, verify("nbd://10.0.0.1/export"), mentions: ["URI"])
    }

    func testZvolLinksInAnAllowedFolder() throws {
        let p = try policy(["/dev/zvol/tank"])
        assertAllowed(p, push("/dev/zvol/tank/vm-1"))
        assertAllowed(p, verify("/dev/zvol/tank/sub/vm-2"))
        assertRefused(p, push("/dev/zvol/tank2/vm-3"), mentions: ["resolves to /dev/zd0"])
        assertRefused(p, push("/dev/zd0"))
    }

    func testLedgers() throws {
        let p = try policy(["/tank/images"])
        assertAllowed(p, verify("/tank/images/disk.raw", ledger: "/tank/images/far.db"))
        assertAllowed(p, verify("/tank/images/disk.raw", ledger: nil))                          // serve's own default
        assertAllowed(p, verify("/tank/images/disk.raw", ledger: "/var/lib/ferry/ledger.db"))   // the same, named
        assertRefused(p, verify("/tank/images/disk.raw", ledger: "/etc/ledger.db"), mentions: ["ledger /etc/ledger.db"])
        assertRefused(p, verify("/tank/images/disk.raw", ledger: "/tank/images/escape"), mentions: ["ledger"])
    }

    func testReadOnly() throws {
        let p = try policy([], readOnly: true)
        assertRefused(p, push("/tank/images/disk.raw"), mentions: ["read-only", "/tank/images/disk.raw"])
        assertRefused(p, .resendReceive(RepairRequest(path: "/tank/images/disk.raw", ledger: nil, imageId: nil, verifyFirst: false,
                                                      subBlockSize: 65536, peer: "h:/s")), mentions: ["read-only"])
        var pull = CopyRequest(path: "/tank/images/disk.raw", ledger: nil, chunkSize: 1 << 20, size: nil, transferId: "t",
                               peer: "h:/d", checkpointEvery: 256)
        pull.asIs = true
        assertAllowed(p, .send(pull))
        assertAllowed(p, verify("/tank/images/disk.raw"))
        let plan = ResendPlan(imageId: 1, transferId: "t", chunkSize: 1 << 20, size: 1 << 20, subBlockSize: 65536, chunks: [],
                              host: "h", ledger: "/l.db")
        assertAllowed(p, .resendSend(SupplyRequest(path: "/tank/images/disk.raw", ledger: nil, plan: plan, force: false, peer: "h:/d")))
    }
}
