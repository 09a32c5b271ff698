import Foundation
import XCTest

/// A disk-image-like file of a few hundred MiB (random, text-like and constant data, zero runs of
/// several MiB) copied with the default chunk size: identical bytes, the digest sha256sum gives,
/// zero chunks found, and zero chunks left as holes.
final class MixedImageTests: FerryTestCase {
    func testMixedImageIsIdenticalAndSparse() throws {
        let src = scratch.file("disk.raw")
        let dst = scratch.file("copy.raw")
        let regions = mixedRegions(mib: 256)
        try writeImage(src, regions, seed: 2024)
        let size = fileSize(src)
        XCTAssertEqual(size, UInt64(256 << 20) - 12345)

        let report = try copy(src, dst)
        XCTAssertTrue(try sameBytes(src, dst, in: scratch), "destination differs from source")
        let reference = try sha256sum(src, in: scratch)
        XCTAssertEqual(report.source.sha256, reference)
        XCTAssertEqual(report.destination.sha256, reference)
        XCTAssertTrue(report.digestsMatch)
        XCTAssertEqual(report.chunkSize, 1 << 20, "the default chunk size is 1 MiB")
        XCTAssertEqual(report.chunks, 256)
        // 3 aligned zero MiB in each of 31 blocks, and the 7 MiB run at the end.
        XCTAssertEqual(report.zeroChunks, 31 * 3 + 7)
        XCTAssertEqual(fileSize(dst), size)

        // Holes where the zero chunks are: what is allocated is at most the non-zero chunks
        // (plus a little filesystem slack), far below the size.
        let allocated = allocatedBytes(dst)
        let nonZeroBytes = size - UInt64(report.zeroChunks) * UInt64(1 << 20)
        XCTAssertLessThan(allocated, size, "destination is not sparse (\(allocated) bytes allocated for \(size))")
        XCTAssertLessThanOrEqual(allocated, nonZeroBytes + (1 << 20),
                                 "zero chunks were written as data (\(allocated) bytes allocated, \(nonZeroBytes) non-zero)")

        // The ledger's hash list for both ends is the file's.
        let independent = try chunkList(src, chunkSize: 1 << 20, in: scratch)
        XCTAssertEqual(try export(report.imageId), independent)
        XCTAssertEqual(try export(report.source.imageId), independent)
        let images = try ledgerImages(ledger)
        let dstRecord = images.first { $0.id == report.imageId }
        XCTAssertEqual(dstRecord?.complete, true)
        XCTAssertEqual(dstRecord?.zeroChunks, report.zeroChunks)
        XCTAssertEqual(dstRecord?.sha256, reference)
    }

    func testWriteZerosAllocatesEverything() throws {
        let src = scratch.file("disk.raw")
        let dst = scratch.file("copy.raw")
        try writeImage(src, mixedRegions(mib: 32), seed: 7)
        let report = try copy(src, dst, ["--write-zeros"])
        XCTAssertTrue(try sameBytes(src, dst, in: scratch))
        XCTAssertEqual(report.destination.sha256, try sha256sum(src, in: scratch))
        XCTAssertGreaterThan(report.zeroChunks, 0)
        XCTAssertGreaterThanOrEqual(allocatedBytes(dst), fileSize(dst) & ~4095,
                                    "--write-zeros should write zero chunks as data, not holes")
    }

    func testZeroChunksOverOldDataBecomeZeros() throws {
        // A destination file that held data where the source has zeros must read back zeros.
        let src = scratch.file("disk.raw")
        let dst = scratch.file("copy.raw")
        try writeImage(src, mixedRegions(mib: 16), seed: 8)
        try writeImage(dst, [.fill(0xEE, Int(fileSize(src)))])
        let report = try copy(src, dst)
        XCTAssertGreaterThan(report.zeroChunks, 0)
        XCTAssertTrue(try sameBytes(src, dst, in: scratch), "old bytes survived where the source has zeros")
        XCTAssertEqual(report.destination.sha256, try sha256sum(src, in: scratch))
    }
}
