import Foundation
import XCTest

/// Rescue of a failing source (`--on-read-error=record`): a FUSE disk fails reads of chosen byte
/// ranges with a real kernel EIO. The copy must finish, name exactly the pages the kernel could
/// not read, write zeros there and the true bytes everywhere else, record the ranges in both
/// ledgers, never claim a whole-image digest, and exit 1; verify must report the ranges apart
/// from damage; resend must fill what reads again and keep what does not.
final class RescueTests: FerryTestCase {
    private var disk: BadSectorDisk?
    private static let M = 1 << 20
    private static let page = 4096

    private var loop: String?

    override func tearDownWithError() throws {
        if let loop { _ = try? runProcess(["/usr/bin/env", "losetup", "-d", loop], in: scratch) }
        disk?.unmount()
        try super.tearDownWithError()
    }

    /// The bytes that truly fail, and the ranges ferry must record for them: the pages the kernel
    /// reads a file in (ferry's sector for a file), no wider.
    private static let A = 3_000_000..<3_000_100                      // 100 bytes inside chunk 2
    private static let B = (5 * M + 256 << 10)..<(6 * M + 512 << 10)   // 1.25 MiB across chunks 5 and 6
    private static let C = (8 * M + 4096)..<(8 * M + 8192)            // inside the zero chunk 8
    private static let D = (16 * M - 100)..<(16 * M)                   // the image's last bytes
    private static func pages(_ r: Range<Int>) -> Range<Int> {
        (r.lowerBound - r.lowerBound % page)..<((r.upperBound + page - 1) / page * page)
    }
    private static let expected = [A, B, C, D].map(pages)

    private func makeSource() throws -> (original: String, image: String) {
        let original = scratch.file("original.raw")
        try writeImage(original, [.random(8 * Self.M), .zeros(Self.M), .random(7 * Self.M)], seed: 1201)
        // The FUSE disk serves a copy, so tests can change it beneath the mount.
        let image = scratch.file("image.raw")
        try FileManager.default.copyItem(atPath: original, toPath: image)
        return (original, image)
    }

    private func json(_ r: RunResult, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        try jsonObject(r, file: file, line: line)
    }

    private func ranges(_ any: Any?) -> [Range<Int>] {
        ((any as? [[String: Any]]) ?? []).compactMap { d in
            guard let o = d["offset"] as? Int, let l = d["length"] as? Int else { return nil }
            return o..<(o + l)
        }
    }

    /// The unreadable ranges `ledger show` lists for an image.
    private func recordedUnreadable(_ id: Int, ledger: String? = nil) throws -> [Range<Int>] {
        let r = try ferry(["ledger", "show", String(id), "--json", "--ledger", ledger ?? self.ledger])
        XCTAssertEqual(r.status, 0, r.summary)
        return ranges(try json(r)["unreadable"])
    }

    /// `dst` holds `original` everywhere but in `holes`, which hold zeros.
    private func assertHolds(_ dst: String, _ original: String, zerosIn holes: [Range<Int>],
                             file: StaticString = #filePath, line: UInt = #line) throws {
        var want = try Data(contentsOf: URL(fileURLWithPath: original))
        for h in holes { want.replaceSubrange(h, with: Data(count: h.count)) }
        let got = try Data(contentsOf: URL(fileURLWithPath: dst))
        XCTAssertEqual(got.count, want.count, file: file, line: line)
        if got != want {
            let first = zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1
            XCTFail("\(dst) differs from the expected bytes first at offset \(first)", file: file, line: line)
        }
    }

    func testRescueCopyNamesTheUnreadablePagesFinishesAndResendFillsThem() throws {
        let (original, image) = try makeSource()
        let d = try BadSectorDisk(image: image, bad: [Self.A, Self.B, Self.C, Self.D], in: scratch)
        disk = d
        let dst = scratch.file("dst.raw")

        // The default stops at the first unreadable byte, and says how to go on.
        let aborted = try ferry(["copy", d.path, dst, "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(aborted.status, 4, aborted.summary)
        XCTAssertTrue(aborted.stderr.contains("Input/output error") && aborted.stderr.contains("--on-read-error=record"), aborted.summary)

        // --on-read-error=record finishes, exit 1, naming exactly the failing pages.
        let r = try ferry(["copy", d.path, dst, "--on-read-error=record", "--json", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(r.status, 1, r.summary)
        let report = try json(r)
        let source = try XCTUnwrap(report["source"] as? [String: Any])
        let destination = try XCTUnwrap(report["destination"] as? [String: Any])
        XCTAssertEqual(ranges(source["unreadableRanges"]), Self.expected, r.out)
        XCTAssertTrue(source["sha256"] is NSNull, "no whole-image digest over zeros that stand for unread bytes: " + r.out)
        XCTAssertTrue(destination["sha256"] is NSNull, r.out)
        XCTAssertEqual(report["unreadableBytes"] as? Int, Self.expected.map(\.count).reduce(0, +))
        XCTAssertEqual(report["digestsMatch"] as? Bool, true)
        XCTAssertGreaterThan(report["failedReads"] as? Int ?? 0, 0)
        try assertHolds(dst, original, zerosIn: Self.expected)

        // Both ends' records hold the ranges; the copy runs say `incomplete`.
        let srcId = try XCTUnwrap(source["imageId"] as? Int), dstId = try XCTUnwrap(destination["imageId"] as? Int)
        XCTAssertEqual(try recordedUnreadable(srcId), Self.expected)
        XCTAssertEqual(try recordedUnreadable(dstId), Self.expected)
        let shown = try ferry(["ledger", "show", String(dstId), "--ledger", ledger])
        XCTAssertTrue(shown.out.contains("copy incomplete"), shown.out)
        XCTAssertTrue(shown.out.contains("unreadable  4 range(s)"), shown.out)

        // Verify reports them as unreadable at copy time, not as damage: exit 1, no bad chunks.
        let (v, _) = try verify(dst)
        XCTAssertEqual(v.status, 1, v.summary)
        let vj = try json(v)
        XCTAssertEqual(vj["status"] as? String, "incomplete", v.out)
        XCTAssertEqual(ranges(vj["unreadableAtCopy"]), Self.expected)
        XCTAssertEqual(vj["badChunks"] as? Int, 0)
        let vt = try ferry(["verify", dst, "--progress", "none", "--ledger", ledger])
        XCTAssertTrue(vt.out.contains("unreadable at copy time") && vt.out.contains("INCOMPLETE:"), vt.out)

        // Copying the rescued image onward carries its zeros, and its ranges: the copy says so
        // (before it starts and with its result), both new records hold the ranges, no digest is
        // claimed, and a verify of the new copy says it is incomplete, never OK.
        let onward = scratch.file("onward.raw")
        let o = try ferry(["copy", dst, onward, "--json", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(o.status, 1, o.summary)
        let oj = try json(o)
        let warning = (oj["warnings"] as? [String])?.first ?? ""
        XCTAssertTrue(warning.contains("rescue copy (image \(dstId)") && warning.contains("4 range(s)"), o.out)
        XCTAssertTrue(o.stderr.contains("ferry: warning: ") && o.stderr.contains("rescue copy"), o.summary)
        XCTAssertEqual(ranges((oj["source"] as? [String: Any])?["unreadableRanges"]), Self.expected)
        let onwardId = try XCTUnwrap(oj["imageId"] as? Int)
        let onwardSourceId = try XCTUnwrap((oj["source"] as? [String: Any])?["imageId"] as? Int)
        XCTAssertEqual(try recordedUnreadable(onwardId), Self.expected)
        XCTAssertEqual(try recordedUnreadable(onwardSourceId), Self.expected)
        let (ov, _) = try verify(onward)
        XCTAssertEqual(ov.status, 1, ov.summary)
        XCTAssertEqual(try json(ov)["status"] as? String, "incomplete", ov.out)
        for id in [onwardId, onwardSourceId] {
            XCTAssertEqual(try ferry(["ledger", "forget", String(id), "--yes", "--ledger", ledger]).status, 0)
        }

        // The disk reads again except one byte of A and one in B's second chunk.
        let stillBadInB = 6_500_000
        try d.setBad([Self.A.lowerBound + 50..<Self.A.lowerBound + 51, stillBadInB..<stillBadInB + 1])
        // A source changed outside its unreadable ranges is refused, not merged into the copy.
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: image))
        try handle.seek(toOffset: UInt64(2 * Self.M + 100))
        let saved = try XCTUnwrap(handle.readData(ofLength: 1))
        try handle.seek(toOffset: UInt64(2 * Self.M + 100))
        handle.write(Data([saved[0] ^ 0xFF]))
        // The other chunks are filled in the same run: all of chunks 5, 8 and 15, and chunk 6 but
        // for the page that still fails.
        let refused = try ferry(["resend", d.path, dst, "--json", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(refused.status, 5, refused.summary)
        XCTAssertTrue(refused.out.contains("changed since the copy outside its unreadable ranges"), refused.summary)
        let rj = try json(refused)
        XCTAssertEqual(rj["refusedChunks"] as? Int, 1, refused.out)
        XCTAssertEqual(rj["filledChunks"] as? Int, 3, refused.out)
        XCTAssertEqual(rj["partlyFilledChunks"] as? Int, 1, refused.out)
        try handle.seek(toOffset: UInt64(2 * Self.M + 100))
        handle.write(saved)
        try handle.close()

        let partial = try ferry(["resend", d.path, dst, "--json", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(partial.status, 1, "ranges remain unreadable: " + partial.summary)
        let pj = try json(partial)
        let remaining = [Self.pages(Self.A), Self.pages(stillBadInB..<stillBadInB + 1)]
        XCTAssertEqual(ranges(pj["unreadableRemaining"]), remaining, partial.out)
        XCTAssertEqual(pj["stillUnreadableChunks"] as? Int, 2, partial.out)   // chunks 2 and 6: nothing new read
        XCTAssertEqual(try recordedUnreadable(srcId), remaining)
        XCTAssertEqual(try recordedUnreadable(dstId), remaining)
        try assertHolds(dst, original, zerosIn: remaining)
        let (v2, _) = try verify(dst)
        XCTAssertEqual(v2.status, 1, v2.summary)
        XCTAssertEqual(ranges(try json(v2)["unreadableAtCopy"]), remaining)

        // Healed: the last ranges are filled, and the next full read computes the digest.
        try d.setBad([])
        let healed = try ferry(["resend", d.path, dst, "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(healed.status, 0, healed.summary)
        XCTAssertTrue(healed.out.contains("every range unreadable at copy time is now filled")
                      && healed.out.contains("next `ferry verify"), healed.out)
        XCTAssertTrue(try sameBytes(original, dst, in: scratch))
        XCTAssertEqual(try recordedUnreadable(dstId), [])
        let (v3, _) = try verify(dst)
        XCTAssertEqual(v3.status, 0, v3.summary)
        XCTAssertEqual(try json(v3)["digestRecorded"] as? String, try sha256sum(original, in: scratch))
        let (v4, _) = try verify(dst)
        XCTAssertEqual(v4.status, 0, v4.summary)
        XCTAssertNil(try json(v4)["digestRecorded"], "the digest is recorded once")
        // Filled: a copy onward has nothing to warn about.
        let again = try ferry(["copy", dst, scratch.file("onward2.raw"), "--json", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(again.status, 0, again.summary)
        XCTAssertNil(try json(again)["warnings"], again.out)
        XCTAssertFalse(again.stderr.contains("warning"), again.summary)
    }

    /// A block device (a read-only loop device over the failing disk, 512-byte logical sectors)
    /// has its ranges recorded to the sector.
    func testOnABlockDeviceTheRangesAreExactToTheSector() throws {
        let (original, image) = try makeSource()
        let d = try BadSectorDisk(image: image, bad: [Self.A, Self.C], in: scratch)
        disk = d
        let r = try runProcess(["/usr/bin/env", "losetup", "-f", "--show", "-r", "--sector-size", "512", d.path], in: scratch)
        let dev = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        guard r.status == 0, dev.hasPrefix("/dev/") else {
            try skipUnlessRequired("cannot attach a loop device (needs root and /dev/loop-control): \(r.summary)")
        }
        loop = dev
        let dst = scratch.file("dst.raw")
        let copied = try ferry(["copy", dev, dst, "--on-read-error=record", "--json", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(copied.status, 1, copied.summary)
        func sectors(_ r: Range<Int>) -> Range<Int> { (r.lowerBound / 512 * 512)..<((r.upperBound + 511) / 512 * 512) }
        let expected = [Self.A, Self.C].map(sectors)
        XCTAssertEqual(ranges((try json(copied)["source"] as? [String: Any])?["unreadableRanges"]), expected, copied.out)
        try assertHolds(dst, original, zerosIn: expected)
    }

    /// An interrupted rescue copy resumes with the ranges found before its checkpoint kept, and
    /// the chunks holding them re-read around them (not failing on them) by the resume's checks.
    func testAnInterruptedRescueCopyResumesAndKeepsItsRanges() throws {
        let (original, image) = try makeSource()
        let d = try BadSectorDisk(image: image, bad: [Self.A, Self.B, Self.C, Self.D], in: scratch)
        disk = d
        let dst = scratch.file("dst.raw")
        let args = ["copy", d.path, dst, "--on-read-error=record", "--checkpoint", "1M", "--json", "--progress", "none", "--ledger", ledger]
        let full = try runProcess([TestPaths.ferry] + args, in: scratch, env: ["FERRY_FAULTS": "pwrite:ENOSPC:from=\(10 * Self.M)"])
        XCTAssertEqual(full.status, 4, full.summary)
        let r = try ferry(args + ["--resume", "--verify-prefix"])
        XCTAssertEqual(r.status, 1, r.summary)
        let report = try json(r)
        XCTAssertNotNil(report["resumedFromChunk"] as? Int, r.out)
        XCTAssertEqual(ranges((report["source"] as? [String: Any])?["unreadableRanges"]), Self.expected, r.out)
        try assertHolds(dst, original, zerosIn: Self.expected)
        let dstId = try XCTUnwrap((report["destination"] as? [String: Any])?["imageId"] as? Int)
        XCTAssertEqual(try recordedUnreadable(dstId), Self.expected)
        let (v, _) = try verify(dst)
        XCTAssertEqual(v.status, 1, v.summary)
        XCTAssertEqual(try json(v)["status"] as? String, "incomplete")
    }

    /// A long bad stretch costs a few dozen failed reads, not one per page, and its edges are exact.
    func testALongBadStretchIsSkippedWithFewReadsAndExactEdges() throws {
        let (original, image) = try makeSource()
        let stretch = (2 * Self.M + 12288)..<(11 * Self.M + 20480)   // 9 MiB across ten chunks
        let d = try BadSectorDisk(image: image, bad: [stretch], in: scratch)
        disk = d
        let dst = scratch.file("dst.raw")
        let r = try ferry(["copy", d.path, dst, "--on-read-error=record", "--json", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(r.status, 1, r.summary)
        let report = try json(r)
        XCTAssertEqual(ranges((report["source"] as? [String: Any])?["unreadableRanges"]), [stretch], r.out)
        try assertHolds(dst, original, zerosIn: [stretch])
        // 2304 pages are bad; halving and doubling skips touch a few dozen of them.
        let failed = d.failedReads.count
        XCTAssertLessThan(failed, 200, "a bad stretch of 9 MiB took \(failed) failed reads")
    }

    /// Over ssh to a private sshd: a push records the ranges at the far end too; a pull from a
    /// failing far disk records them here; remote resend fills them and a remote verify is clean.
    func testRescueOverSSHPushAndPull() throws {
        let sshd: PrivateSSHD
        do { sshd = try PrivateSSHD() } catch let e as SSHDUnavailable { try skipUnlessRequired("no sshd: \(e.reason)") }
        defer { sshd.stop() }
        let options = remoteOptions(sshd.rsh)
        let (original, image) = try makeSource()
        let d = try BadSectorDisk(image: image, bad: [Self.A, Self.B], in: scratch)
        disk = d
        let expected = [Self.A, Self.B].map(Self.pages)

        // Push: the far destination's ledger records the ranges.
        let far = scratch.file("far.raw")
        let push = try ferry(["copy", d.path, "\(sshd.host):\(far)", "--on-read-error=record", "--json", "--progress", "none",
                              "--ledger", ledger] + options)
        XCTAssertEqual(push.status, 1, push.summary)
        let pj = try json(push)
        XCTAssertEqual(ranges((pj["source"] as? [String: Any])?["unreadableRanges"]), expected)
        let farId = try XCTUnwrap(pj["imageId"] as? Int)
        XCTAssertEqual(try recordedUnreadable(farId, ledger: farLedger), expected)
        XCTAssertEqual(try recordedUnreadable(try XCTUnwrap((pj["source"] as? [String: Any])?["imageId"] as? Int)), expected)
        try assertHolds(far, original, zerosIn: expected)
        let remoteVerify = try ferry(["verify", "\(sshd.host):\(far)", "--json", "--progress", "none", "--ledger", ledger] + options)
        XCTAssertEqual(remoteVerify.status, 1, remoteVerify.summary)
        XCTAssertEqual(try json(remoteVerify)["status"] as? String, "incomplete")

        // Pull from the failing disk on the far host: this host's ledger records them.
        let here = scratch.file("here.raw")
        let pull = try ferry(["copy", "\(sshd.host):\(d.path)", here, "--on-read-error=record", "--json", "--progress", "none",
                              "--ledger", ledger] + options)
        XCTAssertEqual(pull.status, 1, pull.summary)
        let pullId = try XCTUnwrap(try json(pull)["imageId"] as? Int)
        XCTAssertEqual(try recordedUnreadable(pullId), expected)
        try assertHolds(here, original, zerosIn: expected)

        // The disk reads again: both resends fill, both verifies are clean.
        try d.setBad([])
        let fillFar = try ferry(["resend", d.path, "\(sshd.host):\(far)", "--progress", "none", "--ledger", ledger] + options)
        XCTAssertEqual(fillFar.status, 0, fillFar.summary)
        let fillHere = try ferry(["resend", "\(sshd.host):\(d.path)", here, "--progress", "none", "--ledger", ledger] + options)
        XCTAssertEqual(fillHere.status, 0, fillHere.summary)
        XCTAssertTrue(try sameBytes(original, far, in: scratch))
        XCTAssertTrue(try sameBytes(original, here, in: scratch))
        let farClean = try ferry(["verify", "\(sshd.host):\(far)", "--json", "--progress", "none", "--ledger", ledger] + options)
        XCTAssertEqual(farClean.status, 0, farClean.summary)
        XCTAssertEqual(try json(farClean)["digestRecorded"] as? String, try sha256sum(original, in: scratch))
        let (hereClean, _) = try verify(here)
        XCTAssertEqual(hereClean.status, 0, hereClean.summary)
    }
}
