import Foundation
import XCTest

/// Mistakes a user makes: each gives its documented exit status, one `ferry: ...` line on
/// stderr naming what is wrong, and leaves the destination and the ledger alone.
final class BadInputTests: FerryTestCase {
    private var src: String!

    override func setUpWithError() throws {
        try super.setUpWithError()
        src = scratch.file("src.img")
        try writeRandom(src, size: 300_000, seed: 55)
    }

    func testMissingSource() throws {
        let missing = scratch.file("no-such-disk.img")
        let dst = scratch.file("dst.img")
        let r = try ferry(["copy", missing, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 3, mentions: [missing])
        XCTAssertFalse(exists(dst), "a failed copy created the destination")
    }

    func testDestinationIsADirectory() throws {
        let dir = scratch.file("somedir")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let r = try ferry(["copy", src, dir, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 64, mentions: [dir])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
    }

    private func writeContainer(_ path: String, magic: [UInt8]) throws {
        var data = Data(magic)
        data.append(Data(count: (1 << 20) - magic.count))
        try data.write(to: URL(fileURLWithPath: path))
    }

    /// A file with a qcow2 header that is no valid qcow2 (qemu-img cannot read it) is refused;
    /// --as-is copies its bytes.
    func testBrokenQcow2SourceIsRefusedUnlessAsIs() throws {
        let qcow = scratch.file("vm.qcow2")
        try writeContainer(qcow, magic: [0x51, 0x46, 0x49, 0xFB])   // "QFI\xfb"

        // An existing destination is left as it was.
        let dst = scratch.file("dst.img")
        try writeImage(dst, [.fill(0x33, 70_000)])
        let before = readAll(dst)
        let r = try ferry(["copy", qcow, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 5, mentions: [qcow, "qcow2", "--as-is"])
        XCTAssertEqual(readAll(dst), before, "a refused copy changed the destination")

        // --as-is copies the container itself.
        let report = try copy(qcow, dst, ["--as-is"])
        XCTAssertTrue(try sameBytes(qcow, dst, in: scratch))
        XCTAssertEqual(report.destination.sha256, try sha256sum(qcow, in: scratch))
    }

    func testBrokenQcow2SourceDoesNotCreateTheDestination() throws {
        let qcow = scratch.file("vm.qcow2")
        try writeContainer(qcow, magic: [0x51, 0x46, 0x49, 0xFB])
        let dst = scratch.file("new.img")
        let r = try ferry(["copy", qcow, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 5, mentions: [qcow, "qcow2"])
        XCTAssertFalse(exists(dst), "a refused copy created the destination \(dst) (\(fileSize(dst)) bytes)")
    }

    /// A header and nothing behind it: not a VDI qemu can read.
    func testBrokenVDISourceIsRefused() throws {
        let vdi = scratch.file("vm.vdi")
        var head = [UInt8](repeating: 0, count: 0x44)
        let text = Array("<<< Oracle VM VirtualBox Disk Image >>>\n".utf8)
        head.replaceSubrange(0..<text.count, with: text)
        head.replaceSubrange(0x40..<0x44, with: [0x7F, 0x10, 0xDA, 0xBE])
        try writeContainer(vdi, magic: head)
        let dst = scratch.file("dst.img")
        let r = try ferry(["copy", vdi, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 5, mentions: [vdi, "vdi"])
        XCTAssertEqual(fileSize(dst), 0, "a refused copy wrote to the destination")
    }

    func testVerifyUnknownTarget() throws {
        // A ledger that knows one copy, asked about files it does not know.
        _ = try copy(src, scratch.file("dst.img"))
        let unknown = scratch.file("never-copied.img")
        try writeRandom(unknown, size: 1000, seed: 1)
        let r = try ferry(["verify", unknown, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 3, mentions: [unknown])

        let missing = scratch.file("missing.img")
        let m = try ferry(["verify", missing, "--progress", "none", "--ledger", ledger])
        assertRefusal(m, status: 3, mentions: [missing])

        let byId = try ferry(["verify", unknown, "--image", "999", "--progress", "none", "--ledger", ledger])
        assertRefusal(byId, status: 3, mentions: ["999"])

        let export = try ferry(["ledger", "export", "999", "--ledger", ledger])
        assertRefusal(export, status: 3, mentions: ["999"])
    }

    func testVerifyWithNoLedger() throws {
        let nowhere = scratch.file("no-ledger.db")
        let r = try ferry(["verify", src, "--progress", "none", "--ledger", nowhere])
        assertRefusal(r, status: 3, mentions: [nowhere])
        XCTAssertFalse(exists(nowhere), "verify created a ledger")
    }

    func testLedgerThatIsNotSQLite() throws {
        var garbage = Data("this is not a database, it is a note a user saved as x.db\n".utf8)
        var rng = SplitMix64(seed: 9)
        var tail = Data(count: 8000)
        tail.withUnsafeMutableBytes { rng.fill($0) }
        garbage.append(tail)
        try garbage.write(to: URL(fileURLWithPath: ledger))

        let dst = scratch.file("dst.img")
        let r = try ferry(["copy", src, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 6, mentions: [ledger])
        XCTAssertEqual(readAll(ledger), garbage, "ferry changed a file that is not its ledger")
        XCTAssertFalse(exists(dst), "the copy went ahead without a ledger")

        for args in [["ledger", "list"], ["verify", dst, "--progress", "none"]] {
            let l = try ferry(args + ["--ledger", ledger])
            assertRefusal(l, status: 6, mentions: [ledger])
        }
        XCTAssertEqual(readAll(ledger), garbage, "ferry changed a file that is not its ledger")
        XCTAssertFalse(exists(ledger + "-wal"))
    }

    func testSQLiteDatabaseThatIsNotALedger() throws {
        let r0 = try runProcess(["/usr/bin/env", "sqlite3", ledger, "CREATE TABLE notes(x TEXT); INSERT INTO notes VALUES ('mine');"], in: scratch)
        guard r0.status == 0 else { throw XCTSkip("sqlite3 CLI not available: \(r0.summary)") }
        let before = readAll(ledger)
        let r = try ferry(["copy", src, scratch.file("dst.img"), "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 6, mentions: [ledger])
        XCTAssertEqual(readAll(ledger), before)
    }

    /// A ledger row holding a value this ferry does not know (damage, an edit, a newer ferry) is
    /// named and refused, never read as some default; a chunk row whose hash is not 32 bytes is
    /// never read as the hash of nothing.
    func testLedgerRowsWithUnknownValuesAreRefusedNotDefaulted() throws {
        let dst = scratch.file("dst.img")
        let copied = try copy(src, dst, ["--chunk-size", "64K"])
        let id = try XCTUnwrap(copied.destination.imageId)
        func sqlite(_ sql: String) throws {
            let r = try runProcess(["/usr/bin/env", "sqlite3", ledger, sql], in: scratch)
            guard r.status == 0 else { throw XCTSkip("sqlite3 CLI not available: \(r.summary)") }
        }
        try sqlite("UPDATE runs SET kind = 'defrag' WHERE image_id = \(id);")
        let show = try ferry(["ledger", "show", String(id), "--ledger", ledger])
        assertRefusal(show, status: 6, mentions: [ledger, "'defrag'"])

        try sqlite("UPDATE runs SET kind = 'copy' WHERE image_id = \(id); UPDATE images SET kind = 'tape' WHERE id = \(id);")
        assertRefusal(try ferry(["ledger", "list", "--ledger", ledger]), status: 6, mentions: ["kind of image \(id)", "'tape'"])

        try sqlite("UPDATE images SET kind = 'file' WHERE id = \(id); UPDATE chunks SET sha256 = x'0102' WHERE image_id = \(id) AND idx = 2;")
        let v = try ferry(["verify", dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(v, status: 6, mentions: ["chunk 2 of image \(id) has no valid SHA-256"])
    }

    func testBadChunkSizes() throws {
        let dst = scratch.file("dst.img")
        for size in ["3M", "32K", "512M", "1000", "lots"] {
            let r = try ferry(["copy", src, dst, "--chunk-size", size, "--progress", "none", "--ledger", ledger])
            assertRefusal(r, status: 64, mentions: [])
            XCTAssertFalse(exists(dst), "--chunk-size \(size): the destination was created")
        }
        XCTAssertFalse(exists(ledger), "a usage error created a ledger")
    }

    func testBothEndsRemoteIsAUsageError() throws {
        let r = try ferry(["copy", "hosta:/a.img", "hostb:/b.img", "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 64, mentions: [])
    }

    func testSourceIsDestination() throws {
        let before = readAll(src)
        let r = try ferry(["copy", src, src, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 5, mentions: [src])
        XCTAssertEqual(readAll(src), before)
    }
}
