import Foundation
import XCTest

/// Local copies at the sizes where chunking goes wrong: empty, one byte, one byte short of a
/// chunk, exactly a chunk, one byte over, two chunks and a byte. Files, stdin and stdout.
final class CopyBoundaryTests: FerryTestCase {
    static let chunk = 64 << 10
    static let sizes = [0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk + 1]

    private func expectedChunks(_ size: Int) -> Int { (size + Self.chunk - 1) / Self.chunk }

    /// Everything a copy of `src` must report and record, however it was fed.
    private func check(_ report: CopyJSON, src: String, dst: String, size: Int, how: String,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let what = "\(how), size \(size)"
        XCTAssertTrue(try sameBytes(src, dst, in: scratch), "\(what): destination differs from source", file: file, line: line)
        let reference = try sha256sum(src, in: scratch)
        XCTAssertEqual(report.source.sha256, reference, "\(what): source.sha256", file: file, line: line)
        XCTAssertEqual(report.destination.sha256, reference, "\(what): destination.sha256", file: file, line: line)
        XCTAssertTrue(report.digestsMatch, what, file: file, line: line)
        XCTAssertEqual(report.chunkSize, Self.chunk, what, file: file, line: line)
        XCTAssertEqual(report.chunks, expectedChunks(size), "\(what): chunks", file: file, line: line)
        XCTAssertEqual(report.source.size, UInt64(size), "\(what): source.size", file: file, line: line)
        XCTAssertEqual(report.destination.size, UInt64(size), "\(what): destination.size", file: file, line: line)
        XCTAssertEqual(report.zeroChunks, 0, "\(what): random data has no zero chunks", file: file, line: line)
        let independent = try chunkList(src, chunkSize: Self.chunk, in: scratch)
        XCTAssertEqual(independent.count, expectedChunks(size), what, file: file, line: line)
        XCTAssertNotNil(report.imageId, "\(what): imageId", file: file, line: line)
        XCTAssertEqual(report.imageId, report.destination.imageId, "\(what): imageId is the destination's", file: file, line: line)
        XCTAssertEqual(try export(report.imageId), independent, "\(what): ledger export of the destination", file: file, line: line)
        XCTAssertEqual(try export(report.source.imageId), independent, "\(what): ledger export of the source", file: file, line: line)
    }

    func testFileToFile() throws {
        for size in Self.sizes {
            let src = scratch.file("src-\(size)")
            let dst = scratch.file("dst-\(size)")
            try writeRandom(src, size: size, seed: UInt64(size) + 11)
            let report = try copy(src, dst, ["--chunk-size", "64K"])
            try check(report, src: src, dst: dst, size: size, how: "file to file")
            XCTAssertEqual(report.bytesRead, UInt64(size), "size \(size): bytesRead")
            XCTAssertEqual(report.bytesWritten, UInt64(size), "size \(size): bytesWritten")
        }
    }

    func testOverwritesALongerDestination() throws {
        // A destination that already holds more (and other) bytes ends up exactly the source.
        let src = scratch.file("src")
        let dst = scratch.file("dst")
        try writeRandom(src, size: Self.chunk + 1, seed: 5)
        try writeImage(dst, [.fill(0x5A, 5 * Self.chunk + 17)])
        let report = try copy(src, dst, ["--chunk-size", "64K"])
        try check(report, src: src, dst: dst, size: Self.chunk + 1, how: "over a longer file")
    }

    func testStdinSource() throws {
        for size in Self.sizes {
            let src = scratch.file("src-\(size)")
            let dst = scratch.file("dst-\(size)")
            try writeRandom(src, size: size, seed: UInt64(size) + 23)
            let r = try sh("cat \(shq(src)) | \(shq(TestPaths.ferry)) copy - \(shq(dst)) --chunk-size 64K --progress none --json --ledger \(shq(ledger))",
                           in: scratch)
            XCTAssertEqual(r.status, 0, r.summary)
            guard r.status == 0 else { continue }
            let report = try decode(CopyJSON.self, r.stdout)
            try check(report, src: src, dst: dst, size: size, how: "stdin (a pipe) to file")
        }
    }

    func testStdoutDestination() throws {
        for size in Self.sizes {
            let src = scratch.file("src-\(size)")
            try writeRandom(src, size: size, seed: UInt64(size) + 37)

            // stdout redirected to a file: the image goes to stdout, the JSON to stderr.
            let out = scratch.file("out-\(size)")
            let r = try ferry(["copy", src, "-", "--chunk-size", "64K", "--progress", "none", "--json", "--ledger", ledger],
                              stdoutTo: out)
            XCTAssertEqual(r.status, 0, r.summary)
            if r.status == 0 {
                let report = try decode(CopyJSON.self, lastJSONLine(r.stderr))
                try check(report, src: src, dst: out, size: size, how: "file to stdout (a file)")
            }

            // stdout a pipe.
            let piped = scratch.file("piped-\(size)")
            let p = try sh("\(shq(TestPaths.ferry)) copy \(shq(src)) - --chunk-size 64K --progress none --json --ledger \(shq(ledger)) | cat > \(shq(piped))",
                           in: scratch)
            XCTAssertEqual(p.status, 0, p.summary)
            if p.status == 0 {
                let report = try decode(CopyJSON.self, lastJSONLine(p.stderr))
                try check(report, src: src, dst: piped, size: size, how: "file to stdout (a pipe)")
            }
        }
    }

    func testStdinToStdout() throws {
        let size = 2 * Self.chunk + 1
        let src = scratch.file("src")
        let out = scratch.file("out")
        try writeRandom(src, size: size, seed: 99)
        let r = try sh("cat \(shq(src)) | \(shq(TestPaths.ferry)) copy - - --chunk-size 64K --progress none --json --ledger \(shq(ledger)) | cat > \(shq(out))",
                       in: scratch)
        XCTAssertEqual(r.status, 0, r.summary)
        guard r.status == 0 else { return }
        let report = try decode(CopyJSON.self, lastJSONLine(r.stderr))
        XCTAssertTrue(try sameBytes(src, out, in: scratch))
        XCTAssertEqual(report.destination.sha256, try sha256sum(src, in: scratch))
        XCTAssertEqual(report.chunks, 3)
    }
}
