import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Destinations on a real ZFS pool (zfs-fuse, a pool on a file): the copy snapshots the dataset
/// once the image is durable, verify reads that snapshot while the "guest" writes to the live
/// file, and says so when the snapshot is gone or was taken again; damage beneath ZFS comes back
/// as EIO and is reported. zfs-fuse has no zvols and no .zfs directories, so verify reads the
/// snapshot through a temporary clone here; zvol names are table-tested in UnitTests.
final class ZFSTests: FerryTestCase {
    private var pool: ZfsPool?
    private static let M = 1 << 20

    override func tearDownWithError() throws {
        pool?.destroy()
        try super.tearDownWithError()
    }

    private func makePool() throws -> ZfsPool {
        let p = try ZfsPool(in: scratch)
        pool = p
        return p
    }

    private func source() throws -> String {
        let src = scratch.file("src.raw")
        try writeImage(src, [.random(3 * Self.M), .zeros(2 * Self.M), .random(3 * Self.M)], seed: 901)
        return src
    }

    private func run(_ args: [String]) throws -> RunResult {
        try ferry(args + ["--progress", "none", "--ledger", ledger])
    }

    func testVerifyReadsTheSnapshotTheCopyTookWhileTheGuestWrites() throws {
        let p = try makePool()
        let src = try source()
        let dst = p.folder + "/vm-100.raw"
        let copied = try run(["copy", src, dst, "--json"])
        XCTAssertEqual(copied.status, 0, copied.summary)
        let c = try jsonObject(copied)
        let transfer = try XCTUnwrap(c["transferId"] as? String)
        let snapshot = "\(p.dataset)@ferry-\(transfer)"
        XCTAssertEqual((c["destination"] as? [String: Any])?["snapshot"] as? String, snapshot, copied.out)
        XCTAssertTrue(try p.names().contains(snapshot))
        let id = try XCTUnwrap(c["imageId"] as? Int)
        let shown = try ferry(["ledger", "show", String(id), "--ledger", ledger])
        XCTAssertTrue(shown.out.contains("snapshot    \(snapshot) (guid "), shown.out)

        // The guest writes to the live image.
        try flipByte(dst, at: UInt64(Self.M + 5))
        // A resend would overwrite the guest's writes with the copy's bytes: refused.
        let resend = try run(["resend", src, dst])
        XCTAssertEqual(resend.status, 5, resend.summary)
        XCTAssertTrue(resend.stderr.contains(snapshot), resend.summary)
        // Another file checked against this record (--image) is read as it is, not the snapshot.
        let other = scratch.file("other.raw")
        try FileManager.default.copyItem(atPath: dst, toPath: other)
        let elsewhere = try run(["verify", other, "--image", String(id), "--json"])
        XCTAssertEqual(elsewhere.status, 1, "the snapshot stood in for another file: " + elsewhere.summary)
        XCTAssertEqual((try jsonObject(elsewhere)["readFrom"] as? [String: Any])?["path"] as? String, other)
        let v = try run(["verify", dst, "--json"])
        XCTAssertEqual(v.status, 0, "the snapshot is the image as copied: " + v.summary)
        let from = try XCTUnwrap(try jsonObject(v)["readFrom"] as? [String: Any])
        XCTAssertEqual(from["kind"] as? String, "clone")
        XCTAssertEqual(from["snapshot"] as? String, snapshot)
        XCTAssertFalse(try p.names().contains { $0.contains("ferry-verify") }, "the temporary clone is left behind")
        let text = try run(["verify", dst])
        XCTAssertTrue(text.out.contains("read the snapshot \(snapshot) the copy took"), text.out)

        // --live reads the live image on purpose, and finds the guest's write.
        let live = try run(["verify", dst, "--live", "--json"])
        XCTAssertEqual(live.status, 1, live.summary)
        XCTAssertEqual((try jsonObject(live)["readFrom"] as? [String: Any])?["kind"] as? String, "live")
        XCTAssertEqual(ranges(try jsonObject(live)["badRanges"]), [Self.M..<2 * Self.M])
        let liveText = try run(["verify", dst, "--live"])
        XCTAssertTrue(liveText.out.contains("warning: read the live image on purpose (--live), not the snapshot \(snapshot)"), liveText.out)
        let history = try ferry(["ledger", "show", String(id), "--ledger", ledger]).out
        XCTAssertTrue(history.contains("verify ok") && history.contains("of \(snapshot) (guid "), history)
        XCTAssertTrue(history.contains("verify corrupt") && history.contains("of the live image"), history)

        // A snapshot taken again under the same name is not the copy's.
        try p.zfs(["destroy", snapshot])
        try p.zfs(["snapshot", snapshot])
        let retaken = try run(["verify", dst])
        assertRefusal(retaken, status: 5, mentions: ["is not the snapshot the copy took", "--live"])
        // One that is gone is reported as gone, not as corruption.
        try p.zfs(["destroy", snapshot])
        let gone = try run(["verify", dst])
        assertRefusal(gone, status: 3, mentions: ["\(snapshot) of image \(id) is gone", "--live"])
        let released = try ferry(["ledger", "release", String(id), "--yes", "--ledger", ledger])
        XCTAssertEqual(released.status, 0, released.summary)
        XCTAssertTrue(released.out.contains("already gone"), released.out)
        // Released, the live image is what verify reads.
        let after = try run(["verify", dst, "--json"])
        XCTAssertEqual(after.status, 1, after.summary)
        XCTAssertEqual((try jsonObject(after)["readFrom"] as? [String: Any])?["kind"] as? String, "live")
    }

    func testReleaseDestroysTheSnapshotAndForgetRemovesTheRecords() throws {
        let p = try makePool()
        let src = try source()
        let dst = p.folder + "/vm-101.raw"
        let c = try jsonObject(try run(["copy", src, dst, "--json"]))
        let id = String(try XCTUnwrap(c["imageId"] as? Int))
        let snapshot = try XCTUnwrap((c["destination"] as? [String: Any])?["snapshot"] as? String)

        assertRefusal(try ferry(["ledger", "release", id, "--ledger", ledger]), status: 64, mentions: ["--yes"])
        assertRefusal(try ferry(["ledger", "forget", id, "--yes", "--ledger", ledger]), status: 5, mentions: ["still holds the snapshot", "ledger release"])
        let released = try ferry(["ledger", "release", id, "--yes", "--ledger", ledger])
        XCTAssertEqual(released.status, 0, released.summary)
        XCTAssertFalse(try p.names().contains(snapshot), "release left the snapshot")
        XCTAssertTrue(try ferry(["ledger", "show", id, "--ledger", ledger]).out.contains(", released "))
        XCTAssertEqual(try ferry(["ledger", "forget", id, "--yes", "--ledger", ledger]).status, 0)
        XCTAssertFalse(try ledgerImages(ledger).contains { String($0.id) == id })
        // The image itself is untouched.
        XCTAssertTrue(try sameBytes(src, dst, in: scratch))
    }

    /// A verify killed outright (SIGKILL) leaves its temporary clone: the next verify of that
    /// snapshot destroys it and says so, and `ledger release` is not blocked by one. Another
    /// clone of the snapshot that is not ferry's is left alone.
    func testClonesLeftByAKilledVerifyAreSwept() throws {
        let p = try makePool()
        let src = try source()
        let dst = p.folder + "/vm-102.raw"
        let c = try jsonObject(try run(["copy", src, dst, "--json"]))
        let id = String(try XCTUnwrap(c["imageId"] as? Int))
        let snapshot = try XCTUnwrap((c["destination"] as? [String: Any])?["snapshot"] as? String)
        // A process id that ran and is gone, as a killed verify's would be.
        let gone = try start(["/bin/true"], in: scratch)
        _ = gone.wait()
        let stale = p.name + "/ferry-verify-\(gone.pid)"
        let staleMount = scratch.file("stale-mount")
        _ = try p.zfs(["clone", "-o", "readonly=on", "-o", "mountpoint=" + staleMount, "-o", "org.ferry:clone-of=" + snapshot, snapshot, stale])
        let foreign = p.name + "/someone-elses-clone"
        _ = try p.zfs(["clone", "-o", "mountpoint=none", snapshot, foreign])

        let v = try run(["verify", dst])
        XCTAssertEqual(v.status, 0, v.summary)
        XCTAssertTrue(v.stderr.contains("destroyed \(stale)"), v.summary)
        XCTAssertFalse(try p.names().contains(stale), "the stale clone is still there")
        XCTAssertTrue(try p.names().contains(foreign), "a clone that is not ferry's was touched")

        // A stale clone no longer keeps release from destroying the snapshot (the foreign one
        // still does, and release says so).
        _ = try p.zfs(["clone", "-o", "readonly=on", "-o", "mountpoint=" + staleMount, "-o", "org.ferry:clone-of=" + snapshot, snapshot, stale])
        _ = try p.zfs(["destroy", foreign])
        let released = try ferry(["ledger", "release", id, "--yes", "--ledger", ledger])
        XCTAssertEqual(released.status, 0, released.summary)
        XCTAssertFalse(try p.names().contains(snapshot))
        XCTAssertFalse(try p.names().contains(stale))
    }

    /// Damage beneath ZFS (the pool's file, under a dataset without compression) comes back as
    /// EIO from ZFS's checksums: verify names those chunks, exit 1.
    func testDamageBeneathZFSIsReportedAsUnreadableChunks() throws {
        let p = try makePool()
        let src = try source()
        let dst = p.folder + "/vm-102.raw"
        let copied = try run(["copy", src, dst, "--json", "--no-snapshot"])
        XCTAssertEqual(copied.status, 0, copied.summary)
        let d = try XCTUnwrap(try jsonObject(copied)["destination"] as? [String: Any])
        XCTAssertTrue(d["snapshot"] is NSNull, "--no-snapshot: snapshot is null")
        XCTAssertNil(d["snapshotError"])

        try damageBeneathZFS(p, chunk: 6, of: src)

        let (v, _) = try verify(dst)
        XCTAssertEqual(v.status, 1, "damage beneath ZFS passed: " + v.summary)
        let report = try jsonObject(v)
        XCTAssertEqual(report["unreadableChunks"] as? [Int], [6], v.out)
        XCTAssertEqual(ranges(report["badRanges"]), [6 * Self.M..<7 * Self.M], v.out)
    }

    /// Damage beneath ZFS that the snapshot and the live image share: verify (of the snapshot)
    /// finds it, resend repairs the live image (the guest wrote nothing since the snapshot) and
    /// takes the snapshot again, and the next verify of the new snapshot is clean. zfs-fuse has
    /// no `written@` property, so a wrapper answers it with 0 (nothing written since).
    func testAResendRepairsAnUnchangedImageAndTakesTheSnapshotAgain() throws {
        let p = try makePool()
        let src = try source()
        let dst = p.folder + "/vm-104.raw"
        let c = try jsonObject(try run(["copy", src, dst, "--json"]))
        let snapshot = try XCTUnwrap((c["destination"] as? [String: Any])?["snapshot"] as? String)
        try damageBeneathZFS(p, chunk: 6, of: src)
        let (bad, _) = try verify(dst)
        XCTAssertEqual(bad.status, 1, bad.summary)
        let guidBefore = try p.zfs(["get", "-Hp", "-o", "value", "guid", snapshot])

        let wrapper = scratch.file("zfs-written-0.sh")
        try "#!/bin/sh\ncase \"$*\" in *written@*) echo 0; exit 0;; esac\nexec /usr/sbin/zfs \"$@\"\n"
            .write(toFile: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper, 0o755)
        let r = try runProcess([TestPaths.ferry, "resend", src, dst, "--json", "--progress", "none", "--ledger", ledger],
                               in: scratch, env: ["FERRY_ZFS": wrapper])
        XCTAssertEqual(r.status, 0, r.summary)
        let report = try jsonObject(r)
        XCTAssertEqual(report["repairedChunks"] as? Int, 1, r.out)
        XCTAssertEqual(report["snapshot"] as? String, snapshot, r.out)
        XCTAssertNotEqual(try p.zfs(["get", "-Hp", "-o", "value", "guid", snapshot]), guidBefore, "the snapshot was not taken again")
        let (good, _) = try verify(dst)
        XCTAssertEqual(good.status, 0, "the new snapshot holds the repaired image: " + good.summary)
        XCTAssertTrue(try sameBytes(src, dst, in: scratch))
    }

    /// Overwrites 512 bytes of `chunk` of `original`'s image where they lie in the pool's file,
    /// with the pool exported, and imports it again: ZFS's checksum then fails that record.
    private func damageBeneathZFS(_ p: ZfsPool, chunk: Int, of original: String) throws {
        let needle = readAll(original).subdata(in: (chunk * Self.M + 65536)..<(chunk * Self.M + 65536 + 4096))
        try p.zpool(["export", p.name])
        let at = try XCTUnwrap(readAll(p.file).range(of: needle)?.lowerBound, "the image's bytes are not in the pool file")
        let fd = open(p.file, O_RDWR)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var junk = [UInt8](repeating: 0xA5, count: 512)
        XCTAssertEqual(pwrite(fd, &junk, 512, off_t(at + 1024)), 512)
        fsync(fd)
        close(fd)
        try p.zpool(["import", "-d", (p.file as NSString).deletingLastPathComponent, p.name])
    }

    /// Over ssh (the local transport here) the far end takes the snapshot and reads it.
    func testAPushSnapshotsAtTheFarEnd() throws {
        let p = try makePool()
        let src = try source()
        let dst = p.folder + "/vm-103.raw"
        let pushed = try run(["copy", src, "localhost:\(dst)", "--json"] + remoteOptions())
        XCTAssertEqual(pushed.status, 0, pushed.summary)
        let c = try jsonObject(pushed)
        let snapshot = "\(p.dataset)@ferry-\(try XCTUnwrap(c["transferId"] as? String))"
        XCTAssertEqual((c["destination"] as? [String: Any])?["snapshot"] as? String, snapshot, pushed.out)
        try flipByte(dst, at: 5)
        let v = try run(["verify", "localhost:\(dst)", "--json"] + remoteOptions())
        XCTAssertEqual(v.status, 0, v.summary)
        XCTAssertEqual((try jsonObject(v)["readFrom"] as? [String: Any])?["snapshot"] as? String, snapshot)
        let live = try run(["verify", "localhost:\(dst)", "--live"] + remoteOptions())
        XCTAssertEqual(live.status, 1, live.summary)
    }

    private func ranges(_ any: Any?) -> [Range<Int>] {
        ((any as? [[String: Any]]) ?? []).compactMap { d in
            guard let o = d["offset"] as? Int, let l = d["length"] as? Int else { return nil }
            return o..<(o + l)
        }
    }
}

/// An image another process has open (a running VM): verify warns that differences may be its
/// writes, and resend refuses to overwrite them.
final class LiveImageTests: FerryTestCase {
    func testAnImageOpenElsewhereIsWarnedAboutAndNeverResentInto() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 4 << 20, seed: 903)
        _ = try copy(src, dst)
        let ready = scratch.file("open")
        let holder = try start(["/usr/bin/python3", "-c", "import sys, time; f = open(sys.argv[1], 'r+b'); open(sys.argv[2], 'w').close(); time.sleep(120)",
                                dst, ready], in: scratch)
        defer { holder.signal(SIGKILL); _ = holder.wait(timeout: 10) }
        for _ in 0..<500 where !exists(ready) { usleep(10_000) }
        try flipByte(dst, at: 3 << 20)

        let v = try ferry(["verify", dst, "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(v.status, 1, v.summary)
        XCTAssertTrue(v.out.contains("warning: \(dst) is open in pid ") && v.out.contains("not damage"), v.out)
        let r = try ferry(["resend", src, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 5, mentions: ["is open in pid", "would overwrite what it writes"])
        XCTAssertFalse(try sameBytes(src, dst, in: scratch), "the refused resend wrote")
    }
}
