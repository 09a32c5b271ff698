import Foundation
import XCTest

/// Copies with one end "remote", over the local-pipe transport (Tests/Fixtures/lsh.sh runs the
/// far `ferry serve` on this host): push, pull, zero frames, compression, remote verify, and a
/// far end of another protocol version. Each end records its side in its own ledger.
final class RemoteCopyTests: FerryTestCase {
    static let chunk = 64 << 10
    static let sizes = [0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk + 1]

    private func push(_ src: String, _ farPath: String, _ extra: [String] = [], rsh: String? = nil,
                      file: StaticString = #filePath, line: UInt = #line) throws -> CopyJSON {
        try copy(src, "localhost:" + farPath, remoteOptions(rsh) + extra, file: file, line: line)
    }

    private func pull(_ farPath: String, _ dst: String, _ extra: [String] = [], rsh: String? = nil,
                      file: StaticString = #filePath, line: UInt = #line) throws -> CopyJSON {
        try copy("localhost:" + farPath, dst, remoteOptions(rsh) + extra, file: file, line: line)
    }

    /// What every remote copy must report; `localIsSource` says which ledger holds which end.
    private func check(_ r: CopyJSON, src: String, dst: String, chunkSize: Int, localIsSource: Bool, what: String,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertTrue(try sameBytes(src, dst, in: scratch), "\(what): destination differs", file: file, line: line)
        let reference = try sha256sum(src, in: scratch)
        XCTAssertEqual(r.source.sha256, reference, "\(what): source.sha256", file: file, line: line)
        XCTAssertEqual(r.destination.sha256, reference, "\(what): destination.sha256", file: file, line: line)
        XCTAssertEqual(r.remote?.sha256, reference, "\(what): remote.sha256", file: file, line: line)
        XCTAssertEqual(r.remote?.host, "localhost", "\(what): remote.host", file: file, line: line)
        XCTAssertTrue(r.digestsMatch, what, file: file, line: line)
        let size = fileSize(src)
        XCTAssertEqual(r.destination.size, size, "\(what): destination.size", file: file, line: line)
        XCTAssertEqual(r.chunks, Int((size + UInt64(chunkSize) - 1) / UInt64(chunkSize)), "\(what): chunks", file: file, line: line)
        XCTAssertEqual(r.zeroFrames, r.zeroChunks, "\(what): every zero chunk should cross as a zero frame", file: file, line: line)
        XCTAssertEqual(r.retransmissions, 0, "\(what): retransmissions on a clean link", file: file, line: line)

        // Both ledgers hold the same chunk list, and it is the file's.
        let independent = try chunkList(src, chunkSize: chunkSize, in: scratch)
        let (localId, farId) = localIsSource ? (r.source.imageId, r.destination.imageId) : (r.destination.imageId, r.remote?.imageId)
        XCTAssertEqual(try export(localId, ledger: ledger), independent, "\(what): local ledger export", file: file, line: line)
        XCTAssertEqual(try export(farId, ledger: farLedger), independent, "\(what): far ledger export", file: file, line: line)
        if localIsSource {
            XCTAssertEqual(r.destination.host, "localhost", what, file: file, line: line)
            XCTAssertEqual(r.destination.ledger, farLedger, "\(what): the destination's ledger is the far one", file: file, line: line)
        } else {
            XCTAssertEqual(r.source.host, "localhost", what, file: file, line: line)
            XCTAssertEqual(r.destination.ledger, ledger, "\(what): the destination's ledger is the local one", file: file, line: line)
        }
        // Both records are complete and carry the same transfer id.
        let near = try ledgerImages(ledger).filter { $0.transferId == r.transferId }
        let far = try ledgerImages(farLedger).filter { $0.transferId == r.transferId }
        XCTAssertEqual(near.count, 1, "\(what): local records of transfer \(r.transferId)", file: file, line: line)
        XCTAssertEqual(far.count, 1, "\(what): far records of transfer \(r.transferId)", file: file, line: line)
        XCTAssertTrue((near + far).allSatisfy { $0.complete && $0.sha256 == reference }, "\(what): records not complete", file: file, line: line)
    }

    func testPushBoundarySizes() throws {
        for size in Self.sizes {
            let src = scratch.file("src-\(size)")
            let far = scratch.file("far-\(size)")
            try writeRandom(src, size: size, seed: UInt64(size) + 101)
            let r = try push(src, far, ["--chunk-size", "64K"])
            try check(r, src: src, dst: far, chunkSize: Self.chunk, localIsSource: true, what: "push \(size)")
        }
    }

    func testPullBoundarySizes() throws {
        for size in Self.sizes {
            let far = scratch.file("far-\(size)")
            let dst = scratch.file("dst-\(size)")
            try writeRandom(far, size: size, seed: UInt64(size) + 202)
            let r = try pull(far, dst, ["--chunk-size", "64K"])
            try check(r, src: far, dst: dst, chunkSize: Self.chunk, localIsSource: false, what: "pull \(size)")
        }
    }

    func testPushAndPullMixedImage() throws {
        let src = scratch.file("disk.raw")
        try writeImage(src, mixedRegions(mib: 64), seed: 303)
        let far = scratch.file("far.raw")
        let p = try push(src, far)
        try check(p, src: src, dst: far, chunkSize: 1 << 20, localIsSource: true, what: "push mixed")
        XCTAssertEqual(p.zeroChunks, 7 * 3 + 7)
        XCTAssertLessThan(allocatedBytes(far), fileSize(far), "the far destination is not sparse")

        let back = scratch.file("back.raw")
        let q = try pull(far, back)
        try check(q, src: far, dst: back, chunkSize: 1 << 20, localIsSource: false, what: "pull mixed")
        XCTAssertEqual(q.zeroChunks, 7 * 3 + 7)
        XCTAssertLessThan(allocatedBytes(back), fileSize(back), "the pulled destination is not sparse")
        XCTAssertEqual(q.listRoot, p.listRoot, "the same image must have the same hash-list root")
    }

    func testCompressedPushAndPull() throws {
        let src = scratch.file("disk.raw")
        try writeImage(src, mixedRegions(mib: 32), seed: 404)
        let plain = try push(src, scratch.file("plain.raw"))
        let far = scratch.file("far.raw")
        let p = try push(src, far, ["--compress"])
        try check(p, src: src, dst: far, chunkSize: 1 << 20, localIsSource: true, what: "compressed push")
        let (plainSent, packedSent) = (try XCTUnwrap(plain.bytesSent), try XCTUnwrap(p.bytesSent))
        XCTAssertLessThan(packedSent, plainSent, "--compress sent as many bytes as a plain copy")

        let back = scratch.file("back.raw")
        let q = try pull(far, back, ["--compress=3"])
        try check(q, src: far, dst: back, chunkSize: 1 << 20, localIsSource: false, what: "compressed pull")
        XCTAssertLessThan(try XCTUnwrap(q.bytesSent), plainSent, "--compress=3 on a pull sent as many bytes as a plain copy")
    }

    /// `host:-` would put image bytes into the frame stream (the far ferry's stdin and stdout
    /// carry the session): refused before anything is read or started.
    func testFarDashIsRefused() throws {
        let src = scratch.file("src")
        try writeRandom(src, size: 100_000, seed: 506)
        for args in [["copy", src, "localhost:-"], ["copy", "localhost:-", scratch.file("dst")]] {
            let r = try ferry(args + ["--progress", "none", "--ledger", ledger] + remoteOptions())
            XCTAssertEqual(r.status, 64, r.summary)
            XCTAssertTrue(r.stderr.contains("localhost:- would be the far ferry's stdin or stdout"), r.summary)
            XCTAssertFalse(exists(scratch.file("dst")))
        }
    }

    func testPushStdin() throws {
        let src = scratch.file("src")
        let far = scratch.file("far")
        try writeImage(src, [.random(300_000), .zeros(200_000), .text(100_000)], seed: 505)
        let cmd = "cat \(shq(src)) | \(shq(TestPaths.ferry)) copy - localhost:\(far) --chunk-size 64K --progress none --json --ledger \(shq(ledger)) "
            + remoteOptions().map(shq).joined(separator: " ")
        let r = try sh(cmd, in: scratch)
        XCTAssertEqual(r.status, 0, r.summary)
        guard r.status == 0 else { return }
        let report = try decode(CopyJSON.self, r.stdout)
        XCTAssertTrue(try sameBytes(src, far, in: scratch))
        XCTAssertEqual(report.destination.sha256, try sha256sum(src, in: scratch))
        XCTAssertEqual(try export(report.destination.imageId, ledger: farLedger), try chunkList(src, chunkSize: Self.chunk, in: scratch))
    }

    /// `ferry verify host:path` must say what a verify on that host says.
    func testRemoteVerifyEqualsLocalVerify() throws {
        let src = scratch.file("disk.raw")
        let far = scratch.file("far.raw")
        try writeImage(src, mixedRegions(mib: 16) + [.random(5000)], seed: 606)
        let p = try push(src, far, ["--chunk-size", "64K"])

        func both(_ what: String) throws -> (VerifyJSON, VerifyJSON, Int32)? {
            let (lr, local) = try verify(far, ledger: farLedger)
            let rr = try ferry(["verify", "localhost:" + far, "--json", "--progress", "none", "--ledger", ledger] + remoteOptions())
            XCTAssertEqual(rr.status, lr.status, "\(what): remote verify exit status differs from local: " + rr.summary + "\n" + lr.summary)
            guard let local, rr.status == 0 || rr.status == 1 else { return nil }
            let remote = try decode(VerifyJSON.self, rr.stdout)
            XCTAssertEqual(remote.status, local.status, what)
            XCTAssertEqual(remote.imageId, local.imageId, what)
            XCTAssertEqual(remote.imageId, p.destination.imageId, what)
            XCTAssertEqual(remote.chunks, local.chunks, what)
            XCTAssertEqual(remote.badChunks, local.badChunks, what)
            XCTAssertEqual(remote.badRanges, local.badRanges, what)
            XCTAssertEqual(remote.sizeChanged, local.sizeChanged, what)
            XCTAssertEqual(remote.expectedSize, local.expectedSize, what)
            XCTAssertEqual(remote.target, far, what)
            XCTAssertEqual(remote.host, "localhost", what)
            return (local, remote, rr.status)
        }

        let clean = try XCTUnwrap(try both("clean"))
        XCTAssertEqual(clean.2, 0)
        XCTAssertEqual(clean.1.badRanges, [])

        // One byte in chunk 3, a scribble over chunks 40-41, and the last (short) chunk.
        let c = UInt64(Self.chunk)
        try flipByte(far, at: 3 * c + 10)
        for o in (42 * c - 3)...(42 * c + 3) { try flipByte(far, at: o) }
        try flipByte(far, at: fileSize(far) - 1)
        let last = Int((fileSize(far) - 1) / c)
        let damaged = try XCTUnwrap(try both("damaged"))
        XCTAssertEqual(damaged.2, 1)
        XCTAssertEqual(damaged.1.badRanges, [
            BadRangeJSON(offset: 3 * c, length: c, firstChunk: 3, lastChunk: 3),
            BadRangeJSON(offset: 41 * c, length: 2 * c, firstChunk: 41, lastChunk: 42),
            BadRangeJSON(offset: UInt64(last) * c, length: fileSize(far) - UInt64(last) * c, firstChunk: last, lastChunk: last),
        ])
    }

    func testRemoteVerifyOfUnknownTarget() throws {
        let path = scratch.file("never-copied")
        try writeRandom(path, size: 1000, seed: 1)
        _ = try push(path, scratch.file("something-else"))
        let r = try ferry(["verify", "localhost:" + path, "--progress", "none", "--ledger", ledger] + remoteOptions())
        XCTAssertEqual(r.status, 3, r.summary)
        XCTAssertTrue(r.stderr.contains(path), r.summary)
        XCTAssertTrue(r.errLines.last?.hasPrefix("ferry: ") ?? false, r.summary)
    }

    func testPullOfMissingRemoteSource() throws {
        let missing = scratch.file("no-such-image")
        let dst = scratch.file("dst")
        let r = try ferry(["copy", "localhost:" + missing, dst, "--progress", "none", "--ledger", ledger] + remoteOptions())
        XCTAssertEqual(r.status, 3, r.summary)
        XCTAssertTrue(r.stderr.contains(missing), r.summary)
        XCTAssertTrue(r.errLines.last?.hasPrefix("ferry: ") ?? false, r.summary)
    }

    func testPushToRemoteDirectory() throws {
        let src = scratch.file("src")
        try writeRandom(src, size: 1000, seed: 2)
        let dir = scratch.file("fardir")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let r = try ferry(["copy", src, "localhost:" + dir, "--progress", "none", "--ledger", ledger] + remoteOptions())
        XCTAssertEqual(r.status, 64, r.summary)
        XCTAssertTrue(r.stderr.contains(dir), r.summary)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
    }

    // MARK: Another protocol version at the far end

    private func fakeServe(_ proto: Int, _ oldest: Int) -> String {
        "python3 \(shq(TestPaths.fixture("fake_serve.py"))) \(proto) \(oldest)"
    }

    func testNewerFarFerryIsRefused() throws {
        let src = scratch.file("src")
        try writeRandom(src, size: 100_000, seed: 3)
        let far = scratch.file("far")
        let r = try ferry(["copy", src, "localhost:" + far, "--progress", "none", "--ledger", ledger] + remoteOptions(fakeServe(99, 99)))
        assertRefusal(r, status: 7, mentions: ["incompatible", "99.0.0", "protocol 99"])
        XCTAssertFalse(exists(far))
    }

    func testOlderFarFerryIsRefused() throws {
        let src = scratch.file("src")
        try writeRandom(src, size: 100_000, seed: 4)
        let far = scratch.file("far")
        let r = try ferry(["copy", src, "localhost:" + far, "--progress", "none", "--ledger", ledger] + remoteOptions(fakeServe(0, 0)))
        assertRefusal(r, status: 7, mentions: ["incompatible", "0.0.0", "protocol 0"])
        XCTAssertFalse(exists(far))

        let v = try ferry(["verify", "localhost:" + far, "--progress", "none", "--ledger", ledger] + remoteOptions(fakeServe(0, 0)))
        assertRefusal(v, status: 7, mentions: ["incompatible"])
    }

    func testPullFromIncompatibleFerryLeavesNoDestination() throws {
        let dst = scratch.file("dst")
        let r = try ferry(["copy", "localhost:/nonexistent", dst, "--progress", "none", "--ledger", ledger] + remoteOptions(fakeServe(99, 99)))
        assertRefusal(r, status: 7, mentions: ["incompatible"])
        XCTAssertFalse(exists(dst), "a pull that never started created the local destination (\(fileSize(dst)) bytes)")
    }

    func testRemoteShellThatFails() throws {
        let src = scratch.file("src")
        try writeRandom(src, size: 1000, seed: 5)
        let r = try ferry(["copy", src, "localhost:" + scratch.file("far"), "--progress", "none", "--ledger", ledger]
                          + remoteOptions("/bin/false"))
        XCTAssertEqual(r.status, 7, r.summary)
        XCTAssertTrue(r.errLines.last?.hasPrefix("ferry: ") ?? false, r.summary)
        let missing = try ferry(["copy", src, "localhost:" + scratch.file("far"), "--progress", "none", "--ledger", ledger]
                                + remoteOptions("/nonexistent/ssh"))
        XCTAssertEqual(missing.status, 7, missing.summary)
        XCTAssertTrue(missing.stderr.contains("/nonexistent/ssh"), missing.summary)
    }

    // MARK: A far host without ferry, and what --version says

    func testFarHostWithoutFerrySaysHowToInstallIt() throws {
        let src = scratch.file("src")
        try writeRandom(src, size: 1000, seed: 6)
        let far = scratch.file("far")
        let r = try ferry(["copy", src, "localhost:" + far, "--progress", "none", "--ledger", ledger,
                           "-e", localShell, "--remote-ferry", "/nonexistent/bin/ferry"])
        XCTAssertEqual(r.status, 7, r.summary)
        let last = r.errLines.last ?? ""
        XCTAssertTrue(last.hasPrefix("ferry: ferry is not installed on localhost"), r.summary)
        XCTAssertTrue(last.contains("apt install ./ferry_") && last.contains("--remote-ferry"), r.summary)
        XCTAssertFalse(exists(far))
    }

    func testVersionNamesProtocolAndCommit() throws {
        let r = try ferry(["--version"])
        XCTAssertEqual(r.status, 0, r.summary)
        let lines = r.out.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3, r.summary)
        XCTAssertTrue(lines.first?.range(of: #"^ferry [0-9]+\.[0-9]+\.[0-9]+$"#, options: .regularExpression) != nil, r.summary)
        XCTAssertTrue(lines.count > 1 && lines[1].range(of: #"^protocol [0-9]+ \(accepts [0-9]+-[0-9]+\)$"#, options: .regularExpression) != nil, r.summary)
        XCTAssertTrue(lines.count > 2 && lines[2].range(of: #"^commit ([0-9a-f]{12}|unknown)$"#, options: .regularExpression) != nil, r.summary)
    }
}
