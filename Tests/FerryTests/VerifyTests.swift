import Foundation
import XCTest

/// `ferry verify` after a copy: damage chosen bytes of the destination and check that exactly
/// the chunks holding them are reported, as coalesced byte ranges, and recorded in the ledger.
final class VerifyTests: FerryTestCase {
    static let chunk: UInt64 = 64 << 10
    /// 21 chunks; the last one is 1000 bytes.
    static let size: UInt64 = 20 * chunk + 1000

    private var dst: String!
    private var imageId: Int64!

    override func setUpWithError() throws {
        try super.setUpWithError()
        let src = scratch.file("src.img")
        dst = scratch.file("dst.img")
        try writeRandom(src, size: Int(Self.size), seed: 404)
        let report = try copy(src, dst, ["--chunk-size", "64K"])
        XCTAssertEqual(report.chunks, 21)
        imageId = try XCTUnwrap(report.imageId)
    }

    private func range(_ first: Int, _ last: Int) -> BadRangeJSON {
        let end = min(UInt64(last + 1) * Self.chunk, Self.size)
        return BadRangeJSON(offset: UInt64(first) * Self.chunk, length: end - UInt64(first) * Self.chunk,
                            firstChunk: first, lastChunk: last)
    }

    private func show() throws -> LedgerShowJSON? {
        let r = try ferry(["ledger", "show", String(imageId), "--json", "--ledger", ledger])
        XCTAssertEqual(r.status, 0, r.summary)
        return r.status == 0 ? try decode(LedgerShowJSON.self, r.stdout) : nil
    }

    func testCleanDestinationVerifies() throws {
        let (r, v) = try verify(dst)
        XCTAssertEqual(r.status, 0, r.summary)
        let report = try XCTUnwrap(v)
        XCTAssertEqual(report.status, "ok")
        XCTAssertEqual(report.imageId, imageId)
        XCTAssertEqual(report.target, dst)
        XCTAssertEqual(report.chunks, 21)
        XCTAssertEqual(report.badChunks, 0)
        XCTAssertEqual(report.badRanges, [])
        XCTAssertEqual(report.transientChunks, [])
        XCTAssertEqual(report.unreadableChunks, [])
        XCTAssertFalse(report.sizeChanged)
        XCTAssertEqual(report.expectedSize, Self.size)
        XCTAssertEqual(report.actualSize, Self.size)
        XCTAssertGreaterThanOrEqual(report.bytesRead, Self.size)
        XCTAssertTrue(["direct", "buffered-dropcache"].contains(report.readMode), "readMode \(report.readMode)")

        // By a relative path (the test runs ferry in the scratch folder) and by image id.
        let (rel, relReport) = try verify("dst.img")
        XCTAssertEqual(rel.status, 0, rel.summary)
        XCTAssertEqual(relReport?.imageId, imageId)
        let (byId, byIdReport) = try verify(dst, ["--image", String(imageId)])
        XCTAssertEqual(byId.status, 0, byId.summary)
        XCTAssertEqual(byIdReport?.status, "ok")

        let shown = try XCTUnwrap(try show())
        let runs = shown.runs.filter { $0.run.kind == "verify" }
        XCTAssertEqual(runs.count, 3)
        XCTAssertTrue(runs.allSatisfy { $0.run.result == "ok" && $0.findings.isEmpty })
    }

    func testDamageInFirstMiddleAndLastChunk() throws {
        let offsets: [UInt64] = [100, 10 * Self.chunk + 4321, Self.size - 1]
        for o in offsets { try flipByte(dst, at: o) }
        let (r, v) = try verify(dst)
        XCTAssertEqual(r.status, 1, r.summary)
        let report = try XCTUnwrap(v)
        XCTAssertEqual(report.status, "corrupt")
        XCTAssertEqual(report.badChunks, 3)
        XCTAssertEqual(report.badRanges, [range(0, 0), range(10, 10), range(20, 20)])
        XCTAssertEqual(report.badRanges.last?.length, 1000, "the last chunk is 1000 bytes")
        XCTAssertEqual(report.transientChunks, [], "damage on the medium is not transient")
        XCTAssertFalse(report.sizeChanged)

        // The ledger holds the run and exactly those findings.
        let shown = try XCTUnwrap(try show())
        let run = try XCTUnwrap(shown.runs.first { $0.run.id == report.runId }, "verify run \(report.runId) not in ledger show")
        XCTAssertEqual(run.run.kind, "verify")
        XCTAssertEqual(run.run.result, "corrupt")
        XCTAssertEqual(run.findings.map(\.kind), ["corrupt", "corrupt", "corrupt"])
        XCTAssertEqual(run.findings.map { BadRangeJSON(offset: $0.offset, length: $0.length, firstChunk: $0.firstChunk, lastChunk: $0.lastChunk) },
                       report.badRanges)

        // Undo the damage: clean again, and a second run is recorded.
        for o in offsets { try flipByte(dst, at: o) }
        let (again, againReport) = try verify(dst)
        XCTAssertEqual(again.status, 0, again.summary)
        XCTAssertEqual(againReport?.badRanges, [])
        let later = try XCTUnwrap(try show())
        XCTAssertEqual(later.runs.filter { $0.run.kind == "verify" }.map(\.run.result), ["corrupt", "ok"])
    }

    func testDamageAcrossAdjacentChunksIsOneRange() throws {
        // A 4-byte scribble over the boundary of chunks 5 and 6, and one byte in chunk 9.
        for o in (6 * Self.chunk - 2)...(6 * Self.chunk + 1) { try flipByte(dst, at: o) }
        try flipByte(dst, at: 9 * Self.chunk + 7)
        let (r, v) = try verify(dst)
        XCTAssertEqual(r.status, 1, r.summary)
        let report = try XCTUnwrap(v)
        XCTAssertEqual(report.badChunks, 3)
        XCTAssertEqual(report.badRanges, [range(5, 6), range(9, 9)])
        XCTAssertEqual(report.badRanges.first?.length, 2 * Self.chunk)
    }

    func testAllChunksDamaged() throws {
        for i in 0..<21 { try flipByte(dst, at: UInt64(i) * Self.chunk) }
        let (r, v) = try verify(dst)
        XCTAssertEqual(r.status, 1, r.summary)
        XCTAssertEqual(v?.badChunks, 21)
        XCTAssertEqual(v?.badRanges, [range(0, 20)])
        XCTAssertEqual(v?.badRanges.first?.length, Self.size)
    }

    func testTruncatedDestination() throws {
        // Cut mid-chunk 15: chunk 15 is short, chunks 16-20 are gone.
        XCTAssertEqual(truncate(dst, off_t(15 * Self.chunk + 100)), 0)
        let (r, v) = try verify(dst)
        XCTAssertEqual(r.status, 1, r.summary)
        let report = try XCTUnwrap(v)
        XCTAssertEqual(report.status, "corrupt")
        XCTAssertTrue(report.sizeChanged)
        XCTAssertEqual(report.expectedSize, Self.size)
        XCTAssertEqual(report.actualSize, 15 * Self.chunk + 100)
        XCTAssertEqual(report.badRanges, [range(15, 20)])
        XCTAssertEqual(report.badChunks, 6)

        let shown = try XCTUnwrap(try show())
        let run = try XCTUnwrap(shown.runs.first { $0.run.id == report.runId })
        XCTAssertEqual(run.run.result, "corrupt")
        XCTAssertTrue(run.findings.contains { $0.kind == "size" }, "no size finding recorded: \(run.findings)")
        XCTAssertTrue(run.findings.contains { $0.kind == "corrupt" && $0.firstChunk == 15 && $0.lastChunk == 20 })
    }

    func testTruncatedAtChunkBoundary() throws {
        XCTAssertEqual(truncate(dst, off_t(15 * Self.chunk)), 0)
        let (r, v) = try verify(dst)
        XCTAssertEqual(r.status, 1, r.summary)
        XCTAssertEqual(v?.sizeChanged, true)
        XCTAssertEqual(v?.actualSize, 15 * Self.chunk)
        XCTAssertEqual(v?.badRanges, [range(15, 20)])
    }

    func testGrownDestination() throws {
        // Bytes appended after the image: every recorded chunk matches, but the size changed.
        let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: dst))
        try fh.seekToEnd()
        try fh.write(contentsOf: Data(repeating: 0x42, count: 5000))
        try fh.close()
        let (r, v) = try verify(dst)
        XCTAssertEqual(r.status, 1, r.summary)
        XCTAssertEqual(v?.sizeChanged, true)
        XCTAssertEqual(v?.actualSize, Self.size + 5000)
        XCTAssertEqual(v?.badRanges, [])
    }

    func testHumanOutputNamesTheRange() throws {
        try flipByte(dst, at: 3 * Self.chunk + 1)
        let r = try ferry(["verify", dst, "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(r.status, 1, r.summary)
        let first = 3 * Self.chunk, last = 4 * Self.chunk - 1
        XCTAssertTrue(r.out.contains("\(first)-\(last)"), "the byte range should be printed: " + r.summary)
        XCTAssertTrue(r.out.contains("CORRUPT"), r.summary)
    }
}
