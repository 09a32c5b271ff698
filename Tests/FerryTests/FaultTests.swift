import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Faults forced at chosen system calls (FERRY_FAULTS, see Sources/Chunks/System/Faults.swift)
/// through the real binary: a full disk, a failed final sync, an unreadable chunk, short reads and
/// writes, and O_DIRECT refused midway. Each must end in the right exit status and message, with
/// the ledger never vouching for data that did not reach the medium.
final class FaultTests: FerryTestCase {
    static let options = ["--chunk-size", "64K", "--checkpoint", "1M"]

    private func copyArgs(_ src: String, _ dst: String, _ extra: [String] = []) -> [String] {
        ["copy", src, dst, "--progress", "none", "--json", "--ledger", ledger] + Self.options + extra
    }

    private func ferry(_ args: [String], faults: String) throws -> RunResult {
        try runProcess([TestPaths.ferry] + args, in: scratch, env: ["FERRY_FAULTS": faults])
    }

    func testFullDiskStopsTheCopyAndResumeFinishesIt() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 32 << 20, seed: 41)
        let full = try ferry(copyArgs(src, dst), faults: "pwrite:ENOSPC:from=16777216")
        XCTAssertEqual(full.status, 4, full.summary)
        let said = full.errLines.last ?? ""
        XCTAssertTrue(said.contains("at offset 16777216") && said.contains("No space left on device"), said)
        XCTAssertTrue(said.contains("the destination is full"), said)
        let record = try XCTUnwrap(try ledgerImages(ledger).first { $0.role == "destination" })
        XCTAssertFalse(record.complete, "a copy that ran out of space is marked complete")
        XCTAssertGreaterThan(record.checkpointChunks, 0)
        XCTAssertLessThanOrEqual(record.checkpointChunks, 256, "a checkpoint past the first failed write")

        let r = try self.ferry(copyArgs(src, dst, ["--resume"]))
        XCTAssertEqual(r.status, 0, r.summary)
        let report = try decode(CopyJSON.self, r.stdout)
        XCTAssertNotNil(report.resumedFromChunk)
        XCTAssertTrue(try sameBytes(src, dst, in: scratch))
        XCTAssertEqual(report.destination.sha256, try sha256sum(src, in: scratch))
        XCTAssertEqual(try verify(dst).0.status, 0)
    }

    func testFailedFinalSyncNeverMarksTheImageComplete() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 3 << 20, seed: 42)
        let r = try ferry(["copy", src, dst, "--progress", "none", "--json", "--ledger", ledger], faults: "fdatasync:EIO")
        XCTAssertEqual(r.status, 4, r.summary)
        let said = r.errLines.last ?? ""
        XCTAssertTrue(said.contains("fdatasync") && said.contains("Input/output error"), said)
        XCTAssertTrue(said.contains("do not trust this copy"), said)
        XCTAssertFalse(r.out.contains("digestsMatch"), "a copy whose sync failed printed a report: " + r.out)
        XCTAssertTrue(r.out.contains("\"exitStatus\":4"), "--json: a JSON error object: " + r.out)
        let records = try ledgerImages(ledger).filter { $0.role == "destination" }
        XCTAssertEqual(records.count, 1)
        XCTAssertEqual(records.first?.complete, false, "the ledger vouches for data whose sync failed")
        XCTAssertNil(records.first?.sha256)
        let v = try self.ferry(["verify", dst, "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(v.status, 3, "verify of an image that was never complete: " + v.summary)
    }

    func testShortReadsAndWritesStillCopyEveryByte() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeImage(src, mixedRegions(mib: 24), seed: 43)
        let r = try ferry(copyArgs(src, dst), faults: "pread:short,pwrite:short,write:short")
        XCTAssertEqual(r.status, 0, r.summary)
        let report = try decode(CopyJSON.self, r.stdout)
        XCTAssertTrue(try sameBytes(src, dst, in: scratch))
        XCTAssertEqual(report.source.sha256, try sha256sum(src, in: scratch))
        XCTAssertTrue(report.digestsMatch)
        let v = try ferry(["verify", dst, "--progress", "none", "--json", "--ledger", ledger], faults: "pread:short")
        XCTAssertEqual(v.status, 0, v.summary)
        XCTAssertEqual(try decode(VerifyJSON.self, v.stdout).badChunks, 0)

        // Stdin and stdout too: a pipe may move any number of bytes per call.
        let out = scratch.file("stdout.raw")
        let p = try runProcess([TestPaths.ferry, "copy", "-", "-", "--progress", "none", "--ledger", ledger] + Self.options,
                               in: scratch, stdin: src, stdoutTo: out, env: ["FERRY_FAULTS": "read:short,write:short"])
        XCTAssertEqual(p.status, 0, p.summary)
        XCTAssertTrue(try sameBytes(src, out, in: scratch))
    }

    func testUnreadableChunkIsNamedExactlyAndNeverOK() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 8 << 20, seed: 44)
        _ = try copy(src, dst, Self.options)
        // Chunk 64 (bytes 4 MiB to 4 MiB + 64 KiB) fails every read, the re-read included.
        let v = try ferry(["verify", dst, "--progress", "none", "--json", "--ledger", ledger],
                          faults: "pread:EIO:from=4194304:to=4259840")
        XCTAssertEqual(v.status, 1, v.summary)
        let report = try decode(VerifyJSON.self, v.stdout)
        XCTAssertEqual(report.status, "corrupt")
        XCTAssertEqual(report.unreadableChunks, [64])
        XCTAssertEqual(report.badRanges.map(\.offset), [4194304])
        XCTAssertEqual(report.badRanges.map(\.length), [65536])
        // Without the fault the same image verifies: nothing was written by the failed verify.
        XCTAssertEqual(try verify(dst).0.status, 0)
    }

    func testDirectIORefusedMidwayFallsBackAndSaysSo() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 4 << 20, seed: 45)
        _ = try copy(src, dst, Self.options)
        let direct = try verify(dst)
        guard direct.1?.readMode == "direct" else {
            try skipUnlessRequired("O_DIRECT is not available under \(scratch.path) (read mode \(direct.1?.readMode ?? "?"))")
        }
        let v = try ferry(["verify", dst, "--progress", "none", "--json", "--ledger", ledger], faults: "pread:EINVAL:from=1048576:times=1")
        XCTAssertEqual(v.status, 0, v.summary)
        let report = try decode(VerifyJSON.self, v.stdout)
        XCTAssertEqual(report.readMode, "buffered-dropcache", "the fallback is not reported")
        XCTAssertEqual(report.badChunks, 0)
    }

    func testABadFaultSpecIsAUsageError() throws {
        let r = try ferry(["--version"], faults: "pwrite:ENOPE")
        XCTAssertEqual(r.status, 64, r.summary)
        XCTAssertTrue(r.stderr.contains("FERRY_FAULTS"), r.summary)
    }
}
