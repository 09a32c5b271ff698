import Foundation
import XCTest

/// Several ferry processes using one ledger at once, as when a user starts copies of several
/// disks in parallel: every one must succeed and be recorded, also on a host's very first use,
/// when the ledger file does not exist yet.
final class LedgerConcurrencyTests: FerryTestCase {
    private func parallelCopies(ledger ledgerPath: String, count: Int, size: Int, round: Int) throws -> [RunResult] {
        var started: [Background] = []
        for i in 0..<count {
            let src = scratch.file("src-\(round)-\(i)")
            try writeRandom(src, size: size, seed: UInt64(round * 100 + i))
            started.append(try start([TestPaths.ferry, "copy", src, scratch.file("dst-\(round)-\(i)"), "--progress", "none",
                                      "--ledger", ledgerPath], in: scratch))
        }
        return started.map { $0.wait() }
    }

    func testParallelCopiesOnANewLedger() throws {
        for round in 0..<5 {
            let fresh = scratch.file("fresh-\(round).db")
            let results = try parallelCopies(ledger: fresh, count: 4, size: 100_000, round: round)
            for r in results {
                XCTAssertEqual(r.status, 0, "round \(round): a copy failed while another created the ledger: " + r.summary)
            }
            let images = try ledgerImages(fresh)
            XCTAssertEqual(images.filter(\.complete).count, 2 * results.filter { $0.status == 0 }.count)
        }
    }

    func testParallelCopiesOnAnExistingLedger() throws {
        let seed = scratch.file("seed")
        try writeRandom(seed, size: 1000, seed: 1)
        _ = try copy(seed, scratch.file("seed.copy"))
        let results = try parallelCopies(ledger: ledger, count: 4, size: 4 << 20, round: 9)
        for r in results { XCTAssertEqual(r.status, 0, r.summary) }
        XCTAssertEqual(try ledgerImages(ledger).filter(\.complete).count, 2 + 8)
        for i in 0..<4 {
            let (v, _) = try verify(scratch.file("dst-9-\(i)"))
            XCTAssertEqual(v.status, 0, v.summary)
        }
    }
}
