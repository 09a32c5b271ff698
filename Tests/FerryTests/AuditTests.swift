import Foundation
import XCTest

/// `ferry verify --all`: every complete destination in the ledger, one verdict each, a summary,
/// Prometheus metrics, and a read rate the pool can bear.
final class AuditTests: FerryTestCase {
    func testAllAuditsEveryImageNamesTheBadOneAndWritesMetrics() throws {
        var dsts: [String] = []
        for n in 0..<3 {
            let src = scratch.file("src\(n).raw"), dst = scratch.file("dst\(n).raw")
            try writeRandom(src, size: 3 << 20, seed: UInt64(950 + n))
            _ = try copy(src, dst)
            dsts.append(dst)
        }
        try flipByte(dsts[1], at: (2 << 20) + 7)
        try FileManager.default.removeItem(atPath: dsts[2])
        let metrics = scratch.file("ferry.prom")

        let r = try ferry(["verify", "--all", "--json", "--progress", "none", "--metrics-file", metrics, "--ledger", ledger])
        XCTAssertEqual(r.status, 1, r.summary)
        let report = try jsonObject(r)
        XCTAssertEqual(report["status"] as? String, "corrupt")
        let images = try XCTUnwrap(report["images"] as? [[String: Any]])
        XCTAssertEqual(images.map { $0["status"] as? String }, ["ok", "corrupt", "error"], r.out)
        XCTAssertEqual(images.map { $0["target"] as? String }, dsts)
        XCTAssertTrue((images[2]["error"] as? String)?.contains("No such file") ?? false, r.out)

        let prom = try String(contentsOfFile: metrics, encoding: .utf8)
        let ids = images.compactMap { $0["imageId"] as? Int }
        XCTAssertTrue(prom.contains("ferry_audit_ok{image=\"\(ids[0])\",path=\"\(dsts[0])\"} 1"), prom)
        XCTAssertTrue(prom.contains("ferry_audit_ok{image=\"\(ids[1])\",path=\"\(dsts[1])\"} 0"), prom)
        XCTAssertTrue(prom.contains("ferry_audit_bad_chunks{image=\"\(ids[1])\",path=\"\(dsts[1])\"} 1"), prom)
        XCTAssertTrue(prom.contains("ferry_audit_error{image=\"\(ids[2])\",path=\"\(dsts[2])\"} 1"), prom)
        XCTAssertTrue(prom.contains("# TYPE ferry_audit_last_run_timestamp_seconds gauge"), prom)
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: scratch.path).contains { $0.contains(".tmp.") },
                       "the metrics file's temporary copy was left behind")

        let text = try ferry(["verify", "--all", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(text.status, 1, text.summary)
        XCTAssertTrue(text.out.contains("audited 3 image(s)") && text.out.contains("1 OK, 1 not intact, 1 could not be verified"), text.out)
        XCTAssertTrue(text.out.contains("CORRUPT") && text.out.contains("ERROR"), text.out)

        // An error alone (no image bad) exits with that error's status.
        try FileManager.default.removeItem(atPath: dsts[1])
        _ = try copy(scratch.file("src1.raw"), dsts[1])
        let onlyMissing = try ferry(["verify", "--all", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(onlyMissing.status, 3, onlyMissing.summary)
        assertRefusal(try ferry(["verify", "--all", dsts[0], "--ledger", ledger]), status: 64, mentions: ["--all"])
        // --image ID alone verifies that image where its record says it is.
        let one = try ferry(["verify", "--image", String(ids[0]), "--json", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(one.status, 0, one.summary)
        XCTAssertEqual(try jsonObject(one)["target"] as? String, dsts[0])
    }

    /// An interrupted verify records where it stopped and what it had found; --resume goes on
    /// there and still reports damage found before the stop. An interrupted --all goes on at the
    /// image it stopped in.
    func testAnInterruptedVerifyResumesWhereItStopped() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 16 << 20, seed: 970)
        _ = try copy(src, dst)
        try flipByte(dst, at: 100)   // chunk 0: read before the interruption
        let slow = try start([TestPaths.ferry, "verify", dst, "--max-rate", "4M", "--progress", "none", "--ledger", ledger], in: scratch)
        usleep(1_500_000)
        slow.signal(SIGINT)
        let stopped = slow.wait(timeout: 60)
        XCTAssertEqual(stopped.status, 130, stopped.summary)
        XCTAssertTrue(stopped.stderr.contains("ferry verify --resume"), stopped.summary)

        let r = try ferry(["verify", dst, "--resume", "--json", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(r.status, 1, "the damage in chunk 0, found before the stop, is still reported: " + r.summary)
        let report = try jsonObject(r)
        XCTAssertGreaterThan(report["resumedAt"] as? Int ?? 0, 0, r.out)
        XCTAssertEqual(report["badChunks"] as? Int, 1, r.out)
        XCTAssertEqual((report["badRanges"] as? [[String: Any]])?.first?["firstChunk"] as? Int, 0, r.out)
        // Nothing left to resume.
        assertRefusal(try ferry(["verify", dst, "--resume", "--ledger", ledger]), status: 3, mentions: ["nothing to resume"])

        // An audit interrupted during its second image goes on there.
        let src2 = scratch.file("src2.raw"), dst2 = scratch.file("dst2.raw")
        try writeRandom(src2, size: 8 << 20, seed: 971)
        _ = try copy(src2, dst2)
        // dst stays damaged: the resumed audit must still report it, from the interrupted one.
        let audit = try start([TestPaths.ferry, "verify", "--all", "--max-rate", "8M", "--progress", "none", "--ledger", ledger], in: scratch)
        usleep(2_500_000)
        audit.signal(SIGTERM)
        let cut = audit.wait(timeout: 60)
        XCTAssertEqual(cut.status, 143, cut.summary)
        let resumed = try ferry(["verify", "--all", "--resume", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(resumed.status, 1, "the damaged image, verified before or after the stop, is reported: " + resumed.summary)
        XCTAssertTrue(resumed.out.contains("resuming the audit at image") && resumed.out.contains("CORRUPT"), resumed.out)
        XCTAssertTrue(resumed.out.contains("audited 2 image(s)"), resumed.out)
    }

    /// --max-rate holds the reads to the rate: a 12 MiB image at 4 MiB/s takes at least about 3 s
    /// (a lower bound only: the pacing can make a verify slower, never faster).
    func testMaxRateHoldsTheReadRate() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 12 << 20, seed: 960)
        _ = try copy(src, dst)
        let started = Date()
        let r = try ferry(["verify", dst, "--max-rate", "4M", "--io-priority", "idle", "--json", "--progress", "none", "--ledger", ledger])
        let took = Date().timeIntervalSince(started)
        XCTAssertEqual(r.status, 0, r.summary)
        XCTAssertGreaterThanOrEqual(took, 2.5, "12 MiB at 4 MiB/s took \(took) s")
        XCTAssertEqual(try jsonObject(r)["status"] as? String, "ok")
        assertRefusal(try ferry(["verify", dst, "--max-rate", "fast", "--ledger", ledger]), status: 64, mentions: ["--max-rate"])
    }
}
