import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A destination file is claimed for the whole run: while one ferry writes it, a second copy,
/// a resend, or a copy arriving over the remote transport is refused (exit 5) before it changes
/// a byte, and the first run finishes with exactly its own source.
final class ClaimTests: FerryTestCase {
    /// True once some process holds an OFD write lock on `path` (/proc/locks names it by inode).
    private func isClaimed(_ path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0 else { return false }
        let inode = ":\(st.st_ino) "
        let locks = String(decoding: readAll("/proc/locks"), as: UTF8.self)
        return locks.split(separator: "\n").contains { $0.contains("OFDLCK") && $0.contains("WRITE") && $0.contains(inode) }
    }

    func testASecondWriterIsRefusedWhileTheFirstRuns() throws {
        let first = scratch.file("first.raw"), second = scratch.file("second.raw"), dst = scratch.file("dst.raw")
        try writeRandom(first, size: 1 << 20, seed: 61)
        try writeRandom(second, size: 1 << 20, seed: 62)
        // A completed copy, then damage, so a resend has something to repair.
        _ = try copy(second, dst, ["--chunk-size", "64K"])
        try flipByte(dst, at: 100_000)
        let before = readAll(dst)

        // The first writer reads its source from a FIFO this test holds open, so it waits
        // with the destination open and claimed, before its first chunk.
        let fifo = scratch.file("in.fifo")
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        var feed = open(fifo, O_RDWR)
        XCTAssertGreaterThanOrEqual(feed, 0)
        defer { if feed >= 0 { close(feed) } }
        let writer = try start([TestPaths.ferry, "copy", "-", dst, "--progress", "none", "--json", "--ledger", ledger,
                                "--chunk-size", "64K"], in: scratch, stdin: fifo)
        for _ in 0..<1000 where !isClaimed(dst) && writer.isRunning { usleep(10_000) }
        guard isClaimed(dst) else {
            writer.signal(SIGKILL)
            return XCTFail("the first copy never claimed \(dst): " + writer.wait().summary)
        }

        let copy2 = try ferry(["copy", second, dst, "--progress", "none", "--ledger", ledger, "--chunk-size", "64K"])
        assertRefusal(copy2, status: 5, mentions: [dst, "is being written by another ferry run"])
        let resend = try ferry(["resend", "--verify", second, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(resend, status: 5, mentions: ["is being written by another ferry run"])
        let remote = try ferry(["copy", second, "localhost:" + dst, "--progress", "none", "--ledger", ledger,
                                "--chunk-size", "64K"] + remoteOptions())
        XCTAssertEqual(remote.status, 5, remote.summary)
        XCTAssertTrue(remote.stderr.contains("is being written by another ferry run"), remote.summary)
        XCTAssertEqual(readAll(dst), before, "a refused writer changed the destination")

        // Once the first writer has begun (its first chunk read, its run in the ledger), a
        // refusal names it: which run, which process.
        let bytes = readAll(first)
        let head = bytes.prefix(64 << 10).withUnsafeBytes { Glibc.write(feed, $0.baseAddress, $0.count) }
        XCTAssertEqual(head, 64 << 10)
        for _ in 0..<1000 where try !ledgerImages(ledger).contains(where: { $0.path == dst && !$0.complete }) { usleep(10_000) }
        let copy3 = try ferry(["copy", second, dst, "--progress", "none", "--ledger", ledger, "--chunk-size", "64K"])
        assertRefusal(copy3, status: 5, mentions: ["is being written by another ferry run", "held by a ferry copy (pid \(writer.pid),"])

        // Now the first writer gets the rest and finishes with exactly its own bytes.
        let wrote = bytes.dropFirst(64 << 10).withUnsafeBytes { Glibc.write(feed, $0.baseAddress, $0.count) }
        XCTAssertEqual(wrote, bytes.count - (64 << 10))
        close(feed)
        feed = -1
        let r = writer.wait(timeout: 60)
        XCTAssertEqual(r.status, 0, r.summary)
        XCTAssertTrue(try sameBytes(first, dst, in: scratch))
        XCTAssertFalse(isClaimed(dst), "the claim outlived the run")
        // The claim is gone with the run: a new copy may write the file.
        _ = try copy(second, dst, ["--chunk-size", "64K"])
        XCTAssertTrue(try sameBytes(second, dst, in: scratch))
    }
}
