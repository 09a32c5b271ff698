import Foundation
import XCTest

/// The third story: damage a copied image in several places, find it with verify, repair only
/// the damaged chunks with resend (locally, and with either end across the local-pipe
/// transport), and prove the result whole again: verify clean, sha256sum equal to the source's,
/// and bytes read and sent bounded by the damage.
final class ResendTests: FerryTestCase {
    static let chunk = 1 << 20
    static let subBlock = 64 << 10

    struct ChunkOutcomeJSON: Decodable {
        var index: Int
        var status: String
        var attempts: Int
        var blocksWritten: Int
        var bytesWritten: UInt64
    }

    struct ResendJSON: Decodable {
        var imageId: Int64
        var nothingToRepair: Bool
        var repairedChunks: Int
        var forcedChunks: Int
        var failedChunks: Int
        var refusedChunks: Int
        var bytesRead: UInt64?
        var bytesSent: UInt64
        var bytesWritten: UInt64
        var chunks: [ChunkOutcomeJSON]
        var seconds: Double
    }

    /// A 24 MiB mixed image (short last chunk) copied to `dst` and damaged at: single bytes in
    /// chunks 0 and 9, a whole chunk 5 (random bytes), a run across the boundary of chunks 12
    /// and 13, and the short last chunk. Returns the damaged chunks and the damaged sub-block count.
    private func damaged(_ src: String, _ dst: String) throws -> (chunks: [Int], subBlocks: Int) {
        let M = UInt64(Self.chunk)
        let fd = open(dst, O_RDWR)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var junk = [UInt8](repeating: 0, count: Self.chunk)
        var rng = SplitMix64(seed: 99)
        junk.withUnsafeMutableBytes { rng.fill($0) }
        XCTAssertEqual(pwrite(fd, junk, Self.chunk, off_t(5 * M)), Self.chunk)
        XCTAssertEqual(pwrite(fd, junk, 5000, off_t(13 * M - 2500)), 5000)
        fsync(fd)
        try flipByte(dst, at: 17)
        try flipByte(dst, at: 9 * M + 123_456)
        let last = fileSize(dst) - 3
        try flipByte(dst, at: last)
        // Sub-blocks: 1 + 1 + 16 (whole chunk) + 2 (one each side of the boundary) + 1 (tail).
        return ([0, 5, 9, 12, 13, Int(last / M)], 21)
    }

    private func resend(_ src: String, _ dst: String, _ extra: [String] = [],
                        file: StaticString = #filePath, line: UInt = #line) throws -> (RunResult, ResendJSON?) {
        let r = try ferry(["resend", src, dst, "--progress", "none", "--json", "--ledger", ledger] + extra)
        guard r.status == 0 || r.status == 5 || r.status == 8 else {
            XCTFail("resend failed: " + r.summary, file: file, line: line)
            return (r, nil)
        }
        return (r, try decode(ResendJSON.self, r.stdout, file: file, line: line))
    }

    private func expectedRanges(_ chunks: [Int], size: UInt64) -> [BadRangeJSON] {
        var out: [BadRangeJSON] = []
        for c in chunks.sorted() {
            let off = UInt64(c * Self.chunk)
            let len = min(UInt64(Self.chunk), size - off)
            if var last = out.last, last.lastChunk + 1 == c {
                last.lastChunk = c
                last.length += len
                out[out.count - 1] = last
            } else {
                out.append(BadRangeJSON(offset: off, length: len, firstChunk: c, lastChunk: c))
            }
        }
        return out
    }

    func testLocalResendRepairsOnlyTheDamage() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeImage(src, mixedRegions(mib: 24), seed: 5)
        _ = try copy(src, dst)
        let (bad, subBlocks) = try damaged(src, dst)

        let (v, report) = try verify(dst)
        XCTAssertEqual(v.status, 1, v.summary)
        XCTAssertEqual(report?.badRanges, expectedRanges(bad, size: fileSize(src)))

        let (r, result) = try resend(src, dst)
        XCTAssertEqual(r.status, 0, r.summary)
        guard let result else { return }
        XCTAssertEqual(result.repairedChunks, bad.count, r.summary)
        XCTAssertEqual(result.failedChunks + result.refusedChunks + result.forcedChunks, 0)
        XCTAssertEqual(result.chunks.map(\.index), bad)
        // The source read only the damaged chunks; only the differing sub-blocks were written.
        let badBytes = bad.map { min(UInt64(Self.chunk), fileSize(src) - UInt64($0 * Self.chunk)) }.reduce(0, +)
        XCTAssertEqual(result.bytesRead, badBytes, "bytes read at the source")
        XCTAssertLessThanOrEqual(result.bytesWritten, UInt64(subBlocks * Self.subBlock))
        XCTAssertEqual(result.chunks.map(\.blocksWritten).reduce(0, +), subBlocks)
        XCTAssertLessThanOrEqual(result.bytesSent, UInt64(subBlocks * Self.subBlock) + 64 * 1024)

        let (clean, _) = try verify(dst)
        XCTAssertEqual(clean.status, 0, clean.summary)
        XCTAssertEqual(try sha256sum(dst, in: scratch), try sha256sum(src, in: scratch))

        // The findings the resend answered are marked repaired in the ledger.
        let show = try ferry(["ledger", "show", String(result.imageId), "--json", "--ledger", ledger])
        XCTAssertTrue(show.out.contains("\"repairedBy\""), show.summary)
        XCTAssertTrue(show.out.contains("\"kind\":\"resend\""), show.summary)

        // Nothing left to do now.
        let (again, nothing) = try resend(src, dst)
        XCTAssertEqual(again.status, 0, again.summary)
        XCTAssertEqual(nothing?.nothingToRepair, true, again.summary)
    }

    /// A destination that refuses writes (`chattr +i` here; a read-only mount or loop device
    /// alike) once made resend call the chunks unrepairable, "the disk may be failing" (exit 8), or
    /// a remote error (exit 7). It is a refusal that says what is wrong, and nothing is marked.
    func testAReadOnlyDestinationIsARefusalNotAFailingDisk() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 1 << 20, seed: 77)
        _ = try copy(src, dst, ["--chunk-size", "64K"])
        try flipByte(dst, at: 70_000)
        XCTAssertEqual(try verify(dst).0.status, 1)
        let chattr = try runProcess(["/usr/bin/env", "chattr", "+i", dst], in: scratch)
        guard chattr.status == 0 else { try skipUnlessRequired("chattr +i is not supported here: \(chattr.summary)") }
        defer { _ = try? runProcess(["/usr/bin/env", "chattr", "-i", dst], in: scratch) }
        let r = try ferry(["resend", src, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 5, mentions: ["cannot be written", "read-only, not failing"])
        _ = try runProcess(["/usr/bin/env", "chattr", "-i", dst], in: scratch)
        let again = try ferry(["resend", src, dst, "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(again.status, 0, "the findings stayed open for a writable retry: " + again.summary)
        XCTAssertTrue(again.out.contains("read back from the medium and matches the ledger (read direct)"), again.out)
    }

    func testResendWithVerifyFirst() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeImage(src, mixedRegions(mib: 16), seed: 6)
        _ = try copy(src, dst)
        try flipByte(dst, at: 7 * UInt64(Self.chunk) + 5)
        let (r, result) = try resend(src, dst, ["--verify"])
        XCTAssertEqual(r.status, 0, r.summary)
        XCTAssertEqual(result?.chunks.map(\.index), [7])
        XCTAssertEqual(try sha256sum(dst, in: scratch), try sha256sum(src, in: scratch))
    }

    func testResendWithoutAnyVerifySaysWhatToDo() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 3 << 20, seed: 7)
        _ = try copy(src, dst)
        let r = try ferry(["resend", src, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 3, mentions: ["never been verified", "--verify"])
    }

    func testChangedSourceIsRefusedUnlessForced() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeImage(src, mixedRegions(mib: 16), seed: 8)
        _ = try copy(src, dst)
        try flipByte(dst, at: 3 * UInt64(Self.chunk) + 10)
        try flipByte(dst, at: 6 * UInt64(Self.chunk) + 10)
        _ = try verify(dst)
        // The source changed in chunk 3 since the copy: that is not a repair any more.
        try flipByte(src, at: 3 * UInt64(Self.chunk) + 999)
        let before = readAll(dst)
        let (r, result) = try resend(src, dst)
        XCTAssertEqual(r.status, 5, r.summary)
        XCTAssertEqual(result?.refusedChunks, 1)
        XCTAssertEqual(result?.repairedChunks, 1, "the unchanged chunk 6 is still repaired")
        let after = readAll(dst)
        let c3 = 3 * Self.chunk..<(4 * Self.chunk)
        XCTAssertEqual(before[c3], after[c3], "a refused chunk is left as it was")
        XCTAssertTrue(r.out.contains("changed since the copy"), r.summary)

        let (f, forced) = try resend(src, dst, ["--force"])
        XCTAssertEqual(f.status, 0, f.summary)
        XCTAssertEqual(forced?.forcedChunks, 1, f.summary)
        XCTAssertTrue(try sameBytes(src, dst, in: scratch))
        let (v, _) = try verify(dst)
        XCTAssertEqual(v.status, 0, "after --force the ledger holds the new hash: " + v.summary)
    }

    /// Either end across the transport; a counting remote shell checks the bytes on the wire.
    func testRemoteResendBothDirections() throws {
        let src = scratch.file("src.raw")
        try writeImage(src, mixedRegions(mib: 24), seed: 9)
        let counter = "python3 " + shq(TestPaths.fixture("count_shell.py")) + " " + shq(scratch.file("count"))

        // Push-style: the damaged destination is far, the source here.
        let far = scratch.file("far.raw")
        _ = try copy(src, "localhost:" + far, remoteOptions())
        let (bad, subBlocks) = try damaged(src, far)
        let (v, report) = try verify("localhost:" + far, remoteOptions())
        XCTAssertEqual(v.status, 1, v.summary)
        XCTAssertEqual(report?.badRanges, expectedRanges(bad, size: fileSize(src)))
        let (r, result) = try resend(src, "localhost:" + far, remoteOptions(counter))
        XCTAssertEqual(r.status, 0, r.summary)
        XCTAssertEqual(result?.repairedChunks, bad.count, r.summary)
        let up = UInt64((try? String(contentsOfFile: scratch.file("count.up"), encoding: .utf8)) ?? "") ?? 0
        XCTAssertGreaterThan(up, 0, "the counting shell saw no bytes")
        XCTAssertLessThanOrEqual(up, UInt64(subBlocks * Self.subBlock) + 64 * 1024, "bytes on the wire, source to destination")
        XCTAssertEqual(result?.bytesSent, up, "ferry's count of bytes sent equals the wire's")
        let (clean, _) = try verify("localhost:" + far, remoteOptions())
        XCTAssertEqual(clean.status, 0, clean.summary)
        XCTAssertEqual(try sha256sum(far, in: scratch), try sha256sum(src, in: scratch))

        // Pull-style: the source is far, the damaged destination here.
        let farSrc = scratch.file("far-src.raw")
        try writeImage(farSrc, mixedRegions(mib: 16), seed: 10)
        let dst = scratch.file("dst.raw")
        _ = try copy("localhost:" + farSrc, dst, remoteOptions())
        try flipByte(dst, at: 2 * UInt64(Self.chunk) + 77)
        try flipByte(dst, at: 11 * UInt64(Self.chunk) + 77)
        let (p, pulled) = try resend("localhost:" + farSrc, dst, ["--verify"] + remoteOptions(counter))
        XCTAssertEqual(p.status, 0, p.summary)
        XCTAssertEqual(pulled?.chunks.map(\.index), [2, 11])
        let down = UInt64((try? String(contentsOfFile: scratch.file("count.down"), encoding: .utf8)) ?? "") ?? 0
        XCTAssertLessThanOrEqual(down, UInt64(2 * Self.subBlock) + 64 * 1024, "bytes on the wire, source to destination")
        XCTAssertTrue(try sameBytes(farSrc, dst, in: scratch))
    }
}
