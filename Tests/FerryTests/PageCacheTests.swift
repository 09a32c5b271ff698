import Foundation
import XCTest

/// ferry must not flood the page cache with the images it moves, and a verify must read the
/// medium, not the cache. The strongest form of the second: rot the bytes *under* a mounted file
/// system (in the loop device's backing file) while the file's pages in the cache still hold the
/// good data; a verify that read the cache would say "OK". Needs root for loop mounts.
final class PageCacheTests: FerryTestCase {
    private var mounts: [String] = []
    private var devices: [String] = []

    override func tearDownWithError() throws {
        for m in mounts.reversed() { _ = try? runProcess(["/usr/bin/env", "umount", m], in: scratch) }
        for d in devices.reversed() { _ = try? runProcess(["/usr/bin/env", "losetup", "-d", d], in: scratch) }
        (mounts, devices) = ([], [])
        try super.tearDownWithError()
    }

    /// Bytes of `path` resident in the page cache (util-linux fincore).
    private func resident(_ path: String) throws -> UInt64 {
        let r = try runProcess(["/usr/bin/env", "fincore", "--bytes", "--noheadings", "--output", "RES", path], in: scratch)
        guard r.status == 0 else { try skipUnlessRequired("fincore is not available: \(r.summary)") }
        return UInt64(r.out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .max
    }

    func testCopyAndVerifyLeaveTheImagesOutOfThePageCache() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeImage(src, mixedRegions(mib: 64), seed: 41)
        // The test just wrote the source, so it starts fully cached: ferry drops it behind itself.
        _ = try copy(src, dst)
        XCTAssertLessThanOrEqual(try resident(src), 1 << 20, "the source stayed in the page cache")
        XCTAssertLessThanOrEqual(try resident(dst), 1 << 20, "the destination stayed in the page cache")
        let (v, report) = try verify(dst)
        XCTAssertEqual(v.status, 0, v.summary)
        XCTAssertEqual(report?.readMode, "direct")
        XCTAssertLessThanOrEqual(try resident(dst), 1 << 20, "verify left the image in the page cache")
    }

    /// Mounts a fresh ext4 (options `options`) on a loop device over a backing file.
    private func mountExt4(_ options: String) throws -> (backing: String, mountPoint: String) {
        let backing = scratch.file("fs-\(options).img")
        let mnt = scratch.file("mnt-\(options)")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        XCTAssertEqual(try sh("truncate -s 64M \(shq(backing)) && mkfs.ext4 -q -F \(shq(backing))", in: scratch).status, 0)
        let dev = try runProcess(["/usr/bin/env", "losetup", "-f", "--show", backing], in: scratch)
        let name = dev.out.trimmingCharacters(in: .whitespacesAndNewlines)
        guard dev.status == 0, name.hasPrefix("/dev/") else { try skipUnlessRequired("cannot attach a loop device: \(dev.summary)") }
        devices.append(name)
        let m = try runProcess(["/usr/bin/env", "mount", "-o", options, name, mnt], in: scratch)
        guard m.status == 0 else { try skipUnlessRequired("cannot mount ext4 (\(options)): \(m.summary)") }
        mounts.append(mnt)
        return (backing, mnt)
    }

    /// The byte offset in the file system's backing file of the file's first data block.
    private func physicalOffset(_ path: String) throws -> UInt64 {
        // In 512-byte units: exact whatever the file system's block size (a small ext4 uses 1K).
        let r = try runProcess(["/usr/bin/env", "filefrag", "-v", "-b512", path], in: scratch)
        // Extent rows look like "   0:        0..    8191:      20482..     28673:   8192:   last,eof".
        for line in r.out.split(separator: "\n") {
            let cols = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
            if cols.count >= 3, cols[0] == "0", let start = cols[2].split(separator: ".").first, let block = UInt64(start) {
                return block * 512
            }
        }
        XCTFail("no extent in filefrag output: \(r.summary)")
        throw XCTSkip("no extent")
    }

    private func rotUnderTheCache(options: String) throws {
        let (backing, mnt) = try mountExt4(options)
        let src = scratch.file("src.raw")
        try writeRandom(src, size: 4 << 20, seed: 42)
        let dst = mnt + "/disk.raw"
        _ = try copy(src, dst)
        XCTAssertEqual(try verify(dst).0.status, 0)
        // Cache the good bytes, then damage the medium beneath the file system.
        XCTAssertEqual(try sh("cat \(shq(dst)) > /dev/null", in: scratch).status, 0)
        let at = try physicalOffset(dst) + 100
        try flipByte(backing, at: at)
        XCTAssertTrue(try sameBytes(src, dst, in: scratch), "the test expected the stale good pages to be cached")

        let (v, report) = try verify(dst)
        XCTAssertEqual(v.status, 1, "verify said OK for bytes that are bad on the medium: " + v.summary)
        XCTAssertEqual(report?.badRanges, [BadRangeJSON(offset: 0, length: 1 << 20, firstChunk: 0, lastChunk: 0)])
    }

    func testVerifyReadsTheMediumNotTheCache() throws {
        try rotUnderTheCache(options: "data=ordered")
    }

    /// ext4 with data=journal accepts O_DIRECT and quietly serves it from the page cache.
    func testVerifyReadsTheMediumOnAFileSystemThatBuffersODirect() throws {
        try rotUnderTheCache(options: "data=journal")
    }

    /// A loop device with direct I/O off (losetup's default) serves even O_DIRECT reads from its
    /// backing file's page cache: a verify of the device once said "OK ... read direct" while the
    /// medium beneath the file was damaged. Now it drops that file's cache and says so.
    func testVerifyOfALoopDeviceReadsBeneathItsBackingFilesCache() throws {
        let (backing, mnt) = try mountExt4("data=ordered")
        let file = mnt + "/disk.raw"
        XCTAssertEqual(try sh("truncate -s 4M \(shq(file))", in: scratch).status, 0)
        let dev = try runProcess(["/usr/bin/env", "losetup", "--direct-io=off", "-f", "--show", file], in: scratch)
        let loop = dev.out.trimmingCharacters(in: .whitespacesAndNewlines)
        guard dev.status == 0, loop.hasPrefix("/dev/") else { try skipUnlessRequired("cannot attach a loop device: \(dev.summary)") }
        // Detached before tearDown unmounts the file system the loop device stands on.
        defer { _ = try? runProcess(["/usr/bin/env", "losetup", "-d", loop], in: scratch) }
        let src = scratch.file("src.raw")
        try writeRandom(src, size: 4 << 20, seed: 43)
        _ = try copy(src, loop)
        let (ok, okReport) = try verify(loop)
        XCTAssertEqual(ok.status, 0, ok.summary)
        XCTAssertTrue(okReport?.readMode.contains("through loop file \(file)") ?? false, "the read mode says how the medium was reached: \(ok.summary)")
        // Cache the file's good bytes, then damage the medium beneath its file system.
        XCTAssertEqual(try sh("sync && cat \(shq(file)) > /dev/null", in: scratch).status, 0)
        try flipByte(backing, at: try physicalOffset(file) + 100)
        XCTAssertTrue(try sameBytes(src, file, in: scratch), "the test expected the stale good pages to be cached")

        let (v, report) = try verify(loop)
        XCTAssertEqual(v.status, 1, "verify of the loop device said OK for bytes that are bad on the medium: " + v.summary)
        XCTAssertEqual(report?.badRanges, [BadRangeJSON(offset: 0, length: 1 << 20, firstChunk: 0, lastChunk: 0)])
    }

    /// Where O_DIRECT is refused, verify reads through the page cache after dropping it; pages
    /// another process keeps mapped survive the drop, and a verify once said OK for bytes it only
    /// got from memory. Now those chunks are named and the verdict is UNVERIFIED (exit 5).
    func testPagesKeptMappedAreNotVouchedForWhenODirectIsRefused() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 4 << 20, seed: 44)
        _ = try copy(src, dst)
        let refuseDirect = ["FERRY_FAULTS": "pread:EINVAL:times=1"]   // the first direct read: EINVAL, then buffered
        let plain = try runProcess([TestPaths.ferry, "verify", dst, "--progress", "none", "--json", "--ledger", ledger],
                                   in: scratch, env: refuseDirect)
        XCTAssertEqual(plain.status, 0, "with nothing mapped, the dropped cache is the medium's: " + plain.summary)
        XCTAssertTrue(plain.out.contains("\"readMode\":\"buffered-dropcache\""), plain.out)

        let holder = try mapWithoutDescriptor(dst)
        defer { holder.signal(SIGKILL); _ = holder.wait(timeout: 10) }

        let r = try runProcess([TestPaths.ferry, "verify", dst, "--progress", "none", "--json", "--ledger", ledger],
                               in: scratch, env: refuseDirect)
        XCTAssertEqual(r.status, 5, "verify vouched for bytes that only memory held: " + r.summary)
        XCTAssertTrue(r.out.contains("\"status\":\"unverified\"") && r.out.contains("\"cachedChunks\":[0,1,2,3]"), r.out)
        // With O_DIRECT the medium is read whatever is mapped.
        XCTAssertEqual(try verify(dst).0.status, 0)

        // Resend does not claim a repair read back from the medium when only memory answered.
        // (The mapping process keeps no descriptor: one that has the file open is refused before
        // anything is written, see LiveImageTests.)
        try flipByte(dst, at: 1 << 20)   // through the page cache: the mapping sees it too
        XCTAssertEqual(try verify(dst).0.status, 1)
        let resend = try runProcess([TestPaths.ferry, "resend", src, dst, "--progress", "none", "--ledger", ledger],
                                    in: scratch, env: refuseDirect)
        XCTAssertEqual(resend.status, 5, resend.summary)
        XCTAssertTrue(resend.stderr.contains("could only be read back from memory"), resend.summary)
        XCTAssertFalse(resend.out.contains("read back from the medium and matches"), resend.summary)
    }

    /// A process that maps `path` (reading every page in) and keeps no descriptor of it, as a
    /// program with the image mapped would: its pages survive a cache drop.
    private func mapWithoutDescriptor(_ path: String) throws -> Background {
        let ready = scratch.file("mapped-\(UInt32.random(in: 0...UInt32.max))")
        let holder = try start(["/usr/bin/python3", "-c", """
            import ctypes, os, sys, time
            libc = ctypes.CDLL(None)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
            fd = os.open(sys.argv[1], os.O_RDONLY); size = os.fstat(fd).st_size
            addr = libc.mmap(None, size, 1, 1, fd, 0); os.close(fd)   # PROT_READ, MAP_SHARED; no descriptor kept
            pages = (ctypes.c_char * size).from_address(addr)
            s = sum(pages[i][0] for i in range(0, size, 4096)); open(sys.argv[2], 'w').close(); time.sleep(120)
            """, path, ready], in: scratch)
        for _ in 0..<500 where !exists(ready) { usleep(10_000) }
        XCTAssertTrue(exists(ready), "the mapping process did not start")
        return holder
    }

    /// A resume checks the part already copied against the ledger; where O_DIRECT is refused and
    /// another process keeps the destination mapped, that check would only read memory: refused.
    func testAResumeDoesNotCheckTheCopiedPartAgainstMemory() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 8 << 20, seed: 45)
        let args = [TestPaths.ferry, "copy", src, dst, "--checkpoint", "1M", "--progress", "none", "--ledger", ledger]
        let full = try runProcess(args, in: scratch, env: ["FERRY_FAULTS": "pwrite:ENOSPC:from=6291456"])
        XCTAssertEqual(full.status, 4, full.summary)
        let holder = try mapWithoutDescriptor(dst)
        defer { holder.signal(SIGKILL); _ = holder.wait(timeout: 10) }
        // O_DIRECT refused on the destination's first re-read (chunk 0, which the source does not
        // re-read; the source's first read, of its header when it is opened, goes through).
        let r = try runProcess(args + ["--resume"], in: scratch, env: ["FERRY_FAULTS": "pread:EINVAL:to=1048576:after=1:times=1"])
        XCTAssertEqual(r.status, 5, r.summary)
        XCTAssertTrue(r.stderr.contains("could only be read from memory"), r.summary)
        holder.signal(SIGKILL)
        _ = holder.wait(timeout: 10)
        let resumed = try runProcess(args + ["--resume"], in: scratch)
        XCTAssertEqual(resumed.status, 0, resumed.summary)
        XCTAssertTrue(try sameBytes(src, dst, in: scratch))
    }
}
