import Foundation
import XCTest

/// A link that damages data: the relay transport (Tests/Fixtures/relay.py) inverts one byte at a
/// fixed offset of the stream, well inside a chunk's payload. The receiver must notice (the
/// chunk's SHA-256 does not match the sender's), get the chunk again, and finish with an
/// identical destination.
final class RetransmitTests: FerryTestCase {
    private func check(_ r: CopyJSON, src: String, dst: String, what: String,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertTrue(try sameBytes(src, dst, in: scratch), "\(what): destination differs from source", file: file, line: line)
        let sha = try sha256sum(src, in: scratch)
        XCTAssertEqual(r.source.sha256, sha, what, file: file, line: line)
        XCTAssertEqual(r.destination.sha256, sha, what, file: file, line: line)
        XCTAssertTrue(r.digestsMatch, what, file: file, line: line)
        XCTAssertGreaterThanOrEqual(r.retransmissions ?? 0, 1, "\(what): the damaged chunk was not retransmitted", file: file, line: line)
        // The ledgers hold the hashes of the right data, not of what arrived damaged.
        let independent = try chunkList(src, chunkSize: r.chunkSize, in: scratch)
        XCTAssertEqual(try export(r.destination.imageId, ledger: r.destination.host == nil ? ledger : farLedger), independent,
                       "\(what): destination ledger export", file: file, line: line)
    }

    func testPushThroughADamagingLink() throws {
        let src = scratch.file("src.raw")
        let far = scratch.file("far.raw")
        try writeRandom(src, size: 8 << 20, seed: 77)
        let r = try copy(src, "localhost:" + far, remoteOptions(relayShell(["--flip-up", "3000000"])))
        try check(r, src: src, dst: far, what: "push")
        XCTAssertEqual(r.retransmissions, 1)
        let (v, _) = try verify(far, ledger: farLedger)
        XCTAssertEqual(v.status, 0, v.summary)
    }

    func testPullThroughADamagingLink() throws {
        let far = scratch.file("far.raw")
        let dst = scratch.file("dst.raw")
        try writeRandom(far, size: 8 << 20, seed: 78)
        let r = try copy("localhost:" + far, dst, remoteOptions(relayShell(["--flip-down", "3000000"])))
        try check(r, src: far, dst: dst, what: "pull")
        XCTAssertEqual(r.retransmissions, 1)
        let (v, _) = try verify(dst)
        XCTAssertEqual(v.status, 0, v.summary)
    }

    func testTwoDamagedChunks() throws {
        let src = scratch.file("src.raw")
        let far = scratch.file("far.raw")
        try writeRandom(src, size: 8 << 20, seed: 79)
        let r = try copy(src, "localhost:" + far, remoteOptions(relayShell(["--flip-up", "1500000", "--flip-up", "6000000"])))
        try check(r, src: src, dst: far, what: "push, two damaged chunks")
        XCTAssertEqual(r.retransmissions, 2)
    }

    func testDamagedChunkFromAStreamFailsCleanly() throws {
        // A pipe cannot be read again: the copy must fail and the far record stay incomplete.
        let src = scratch.file("src.raw")
        let far = scratch.file("far.raw")
        try writeRandom(src, size: 8 << 20, seed: 81)
        let cmd = "cat \(shq(src)) | \(shq(TestPaths.ferry)) copy - localhost:\(far) --progress none --json --ledger \(shq(ledger)) "
            + remoteOptions(relayShell(["--flip-up", "3000000"])).map(shq).joined(separator: " ")
        let r = try sh(cmd, in: scratch)
        XCTAssertEqual(r.status, 7, r.summary)
        XCTAssertTrue(r.errLines.last?.hasPrefix("ferry: ") ?? false, r.summary)
        XCTAssertTrue(r.stderr.contains("stream"), "the message should say the source cannot be re-read: " + r.summary)
        let records = try ledgerImages(farLedger).filter { $0.path == far }
        XCTAssertEqual(records.map(\.complete), [false], "the far record of a failed copy")
        let v = try ferry(["verify", far, "--progress", "none", "--ledger", farLedger])
        XCTAssertEqual(v.status, 3, v.summary)
    }

    func testCompressedPushThroughADamagingLink() throws {
        let src = scratch.file("src.raw")
        let far = scratch.file("far.raw")
        try writeImage(src, [.text(8 << 20)], seed: 80)
        let r = try copy(src, "localhost:" + far, remoteOptions(relayShell(["--flip-up", "300000"])) + ["--compress"])
        try check(r, src: src, dst: far, what: "compressed push")
    }
}
