import Foundation
import XCTest

/// Loop block devices as source and destination: a plain copy (zero chunks over old data), a
/// destination too small, and a destination with a mounted filesystem. Needs root (losetup);
/// skipped elsewhere, except under FERRY_REQUIRE_ALL=1 where it fails.
final class BlockDeviceTests: FerryTestCase {
    private var devices: [String] = []
    private var mounts: [String] = []

    override func tearDownWithError() throws {
        for m in mounts.reversed() { _ = try? runProcess(["/usr/bin/env", "umount", m], in: scratch) }
        for d in devices.reversed() { _ = try? runProcess(["/usr/bin/env", "losetup", "-d", d], in: scratch) }
        mounts = []
        devices = []
        try super.tearDownWithError()
    }

    /// Attaches `file` to a free loop device.
    private func attach(_ file: String) throws -> String {
        let r = try runProcess(["/usr/bin/env", "losetup", "-f", "--show", file], in: scratch)
        let dev = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        guard r.status == 0, dev.hasPrefix("/dev/") else {
            try skipUnlessRequired("cannot attach a loop device (needs root and /dev/loop-control): \(r.summary)")
        }
        devices.append(dev)
        return dev
    }

    private func deviceHash(_ dev: String) throws -> String { try sha256sum(dev, in: scratch) }

    func testLoopDeviceToLoopDevice() throws {
        let srcFile = scratch.file("src.img")
        let dstFile = scratch.file("dst.img")
        // Exactly 24 MiB, so the loop device is the whole file.
        try writeImage(srcFile, mixedRegions(mib: 24) + [.random(12345)], seed: 31)
        XCTAssertEqual(fileSize(srcFile), 24 << 20)
        // The destination holds old data everywhere: zero chunks must become zeros on it.
        try writeImage(dstFile, [.fill(0xC3, 24 << 20)])
        let src = try attach(srcFile)
        let dst = try attach(dstFile)

        let report = try copy(src, dst)
        let reference = try sha256sum(srcFile, in: scratch)
        XCTAssertEqual(report.source.sha256, reference)
        XCTAssertEqual(report.destination.sha256, reference)
        XCTAssertTrue(report.digestsMatch)
        XCTAssertEqual(report.chunks, 24)
        XCTAssertEqual(report.zeroChunks, 2 * 3 + 7)
        XCTAssertEqual(try deviceHash(dst), reference, "the destination device does not hold the source's bytes")
        XCTAssertTrue(try sameBytes(srcFile, dstFile, in: scratch), "the destination's backing file differs")
        XCTAssertEqual(try export(report.imageId), try chunkList(srcFile, chunkSize: 1 << 20, in: scratch))

        let (r, v) = try verify(dst)
        XCTAssertEqual(r.status, 0, r.summary)
        XCTAssertEqual(v?.status, "ok")
        XCTAssertEqual(v?.chunks, 24)
        XCTAssertEqual(v?.badRanges, [])
    }

    func testFileToLargerLoopDevice() throws {
        let srcFile = scratch.file("src.img")
        let dstFile = scratch.file("dst.img")
        try writeRandom(srcFile, size: (5 << 20) + 4096, seed: 32)
        try writeImage(dstFile, [.fill(0x11, 16 << 20)])
        let dst = try attach(dstFile)
        let report = try copy(srcFile, dst)
        XCTAssertEqual(report.destination.sha256, try sha256sum(srcFile, in: scratch))
        XCTAssertEqual(report.chunks, 6)
        // The first 5 MiB + 4 KiB of the device are the source; the rest is untouched.
        let head = readAll(dstFile).prefix(Int(fileSize(srcFile)))
        XCTAssertEqual(head, readAll(srcFile))
        XCTAssertEqual(readAll(dstFile).suffix(from: Int(fileSize(srcFile))), Data(repeating: 0x11, count: (16 << 20) - Int(fileSize(srcFile))))
        let (r, v) = try verify(dst)
        XCTAssertEqual(r.status, 0, "a device larger than the image verifies: " + r.summary)
        XCTAssertEqual(v?.sizeChanged, false)
    }

    /// A pull onto a block device: the device is claimed once (O_EXCL) and kept for the copy.
    func testPullOntoALoopDevice() throws {
        let farFile = scratch.file("far.img")
        let dstFile = scratch.file("dst.img")
        try writeImage(farFile, mixedRegions(mib: 16), seed: 33)
        try writeImage(dstFile, [.fill(0x22, 16 << 20)])
        let dst = try attach(dstFile)
        let report = try copy("localhost:" + farFile, dst, remoteOptions())
        XCTAssertTrue(report.digestsMatch)
        XCTAssertEqual(report.destination.sha256, try sha256sum(farFile, in: scratch))
        XCTAssertEqual(readAll(dstFile).prefix(Int(fileSize(farFile))), readAll(farFile))
        XCTAssertEqual(try verify(dst).0.status, 0)
    }

    func testDestinationSmallerThanSourceIsRefused() throws {
        let srcFile = scratch.file("src.img")
        let dstFile = scratch.file("small.img")
        try writeRandom(srcFile, size: 24 << 20, seed: 33)
        try writeImage(dstFile, [.fill(0x7E, 8 << 20)])
        let src = try attach(srcFile)
        let dst = try attach(dstFile)
        let before = try deviceHash(dst)

        let r = try ferry(["copy", src, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 5, mentions: [dst])
        XCTAssertEqual(try deviceHash(dst), before, "a refused copy changed the destination device")

        // The same from a regular file.
        let f = try ferry(["copy", srcFile, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(f, status: 5, mentions: [dst])
        XCTAssertEqual(try deviceHash(dst), before, "a refused copy changed the destination device")
    }

    func testMountedDestinationIsRefused() throws {
        let srcFile = scratch.file("src.img")
        let fsFile = scratch.file("fs.img")
        try writeRandom(srcFile, size: 4 << 20, seed: 34)
        try writeImage(fsFile, [.zeros(32 << 20)])
        let dst = try attach(fsFile)
        // No lazy initialisation: nothing writes to the idle filesystem behind the test's back.
        let mkfs = try runProcess(["/usr/bin/env", "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dst],
                                  in: scratch)
        guard mkfs.status == 0 else { try skipUnlessRequired("mkfs.ext4 failed: \(mkfs.summary)") }
        let mnt = scratch.file("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let m = try runProcess(["/usr/bin/env", "mount", "-o", "noatime", dst, mnt], in: scratch)
        guard m.status == 0 else { try skipUnlessRequired("cannot mount an ext4 loop device: \(m.summary)") }
        mounts.append(mnt)
        try Data("ferry test: this filesystem must survive\n".utf8).write(to: URL(fileURLWithPath: mnt + "/keep.txt"))
        _ = try runProcess(["/bin/sync"], in: scratch)
        let before = try deviceHash(dst)

        let r = try ferry(["copy", srcFile, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 5, mentions: [dst])
        XCTAssertTrue(r.stderr.contains("mounted") || r.stderr.contains("in use"), "the message should say why: " + r.summary)
        _ = try runProcess(["/bin/sync"], in: scratch)
        XCTAssertEqual(try deviceHash(dst), before, "a refused copy changed the mounted device")

        // Nor with --write-zeros (zero chunks would go through BLKZEROOUT).
        let again = try ferry(["copy", srcFile, dst, "--write-zeros", "--progress", "none", "--ledger", ledger])
        assertRefusal(again, status: 5, mentions: [dst])
        _ = try runProcess(["/bin/sync"], in: scratch)
        XCTAssertEqual(try deviceHash(dst), before)
        XCTAssertEqual(String(decoding: readAll(mnt + "/keep.txt"), as: UTF8.self), "ferry test: this filesystem must survive\n")
    }

    /// After loop devices were re-attached to each other's files, verify compared the wrong image
    /// (a false CORRUPT) and resend "repaired" an intact copy of a different image by overwriting
    /// it. The record now names the medium behind the device (the loop file's inode and offset),
    /// and both refuse (exit 5) when another medium answers to the name.
    func testALoopDeviceReattachedToAnotherFileIsRefused() throws {
        let src = scratch.file("src.raw"), a = scratch.file("a.img"), b = scratch.file("b.img")
        try writeRandom(src, size: 4 << 20, seed: 63)
        try writeImage(a, [.zeros(4 << 20)])
        try writeRandom(b, size: 4 << 20, seed: 64)
        let bBefore = readAll(b)
        let dev = try attach(a)
        _ = try copy(src, dev)
        XCTAssertEqual(try runProcess(["/usr/bin/env", "losetup", "-d", dev], in: scratch).status, 0)
        let r = try runProcess(["/usr/bin/env", "losetup", dev, b], in: scratch)
        XCTAssertEqual(r.status, 0, "re-attaching \(dev) to another file: " + r.summary)

        let v = try ferry(["verify", dev, "--progress", "none", "--ledger", ledger])
        assertRefusal(v, status: 5, mentions: [dev, "a loop device over \(b)", "not a loop device over \(a)"])
        let resend = try ferry(["resend", src, dev, "--progress", "none", "--ledger", ledger])
        assertRefusal(resend, status: 5, mentions: ["a loop device over \(b)"])
        XCTAssertEqual(readAll(b), bBefore, "resend wrote into a different image")

        // The right medium back under the name: verified again.
        XCTAssertEqual(try runProcess(["/usr/bin/env", "losetup", "-d", dev], in: scratch).status, 0)
        XCTAssertEqual(try runProcess(["/usr/bin/env", "losetup", dev, a], in: scratch).status, 0)
        XCTAssertEqual(try verify(dev).0.status, 0)
    }
}
