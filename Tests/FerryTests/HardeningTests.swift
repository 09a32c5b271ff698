import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Ordinary mistakes and accidents that once ended in "digests match" or a destroyed source:
/// a loop device over the destination, a ledger on the image, an unwritable ledger, a short
/// stream, a resume after either end changed, a closed stdout. Each goes through the real
/// binary and checks the bytes on disk and the ledger, not only the exit status.
final class HardeningTests: FerryTestCase {
    private var devices: [String] = []
    private var mounts: [String] = []

    override func tearDownWithError() throws {
        for m in mounts.reversed() { _ = try? runProcess(["/usr/bin/env", "umount", "-l", m], in: scratch) }
        for d in devices.reversed() { _ = try? runProcess(["/usr/bin/env", "losetup", "-d", d], in: scratch) }
        mounts = []
        devices = []
        try super.tearDownWithError()
    }

    private func attach(_ file: String, readOnly: Bool) throws -> String {
        let r = try runProcess(["/usr/bin/env", "losetup"] + (readOnly ? ["-r"] : []) + ["-f", "--show", file], in: scratch)
        let dev = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        guard r.status == 0, dev.hasPrefix("/dev/") else {
            try skipUnlessRequired("cannot attach a loop device (needs root and /dev/loop-control): \(r.summary)")
        }
        devices.append(dev)
        return dev
    }

    private func copyArgs(_ src: String, _ dst: String, _ extra: [String] = []) -> [String] {
        ["copy", src, dst, "--progress", "none", "--json", "--ledger", ledger] + extra
    }

    private func runs(of path: String, role: String = "destination", ledger: String? = nil) throws -> [RunJSON] {
        guard let image = try ledgerImages(ledger ?? self.ledger).last(where: { $0.path == path && $0.role == role }) else { return [] }
        let r = try ferry(["ledger", "show", String(image.id), "--json", "--ledger", ledger ?? self.ledger])
        return try decode(LedgerShowJSON.self, r.stdout).runs.map(\.run)
    }

    // MARK: Shared storage

    /// The issue's own case: `losetup -r victim.img` and then `ferry copy /dev/loopN victim.img`
    /// turned the file into holes. Now it is refused and the file is untouched; so is the reverse,
    /// a file copied onto a loop device that stands on that same file.
    func testLoopDeviceAndItsBackingFileAreNeverCopiedOntoEachOther() throws {
        let victim = scratch.file("victim.img")
        try writeRandom(victim, size: 8 << 20, seed: 81)
        let before = try sha256sum(victim, in: scratch)
        let dev = try attach(victim, readOnly: true)
        let r = try ferry(copyArgs(dev, victim))
        assertRefusal(r, status: 5, mentions: ["share storage", victim])
        XCTAssertEqual(try sha256sum(victim, in: scratch), before, "the source's backing file was changed")

        let target = scratch.file("target.img")
        try writeRandom(target, size: 8 << 20, seed: 82)
        let targetBefore = try sha256sum(target, in: scratch)
        let rw = try attach(target, readOnly: false)
        let reverse = try ferry(copyArgs(target, rw))
        assertRefusal(reverse, status: 5, mentions: ["share storage", target])
        XCTAssertEqual(try sha256sum(target, in: scratch), targetBefore)
        XCTAssertTrue(try ledgerImages(ledger).isEmpty, "a refused copy left ledger records")

        // Two unrelated devices still copy.
        let other = scratch.file("other.img")
        try writeImage(other, [.zeros(8 << 20)])
        let ok = try copy(dev, try attach(other, readOnly: false))
        XCTAssertTrue(ok.digestsMatch)
        XCTAssertEqual(ok.destination.sha256, before)
    }

    /// `--ledger dst.img` would have the copy overwrite its own record (or the ledger the image).
    func testLedgerThatIsTheDestinationIsRefusedBeforeItIsCreated() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 1 << 20, seed: 83)
        try writeRandom(dst, size: 1 << 20, seed: 84)
        let before = readAll(dst)
        let r = try ferry(["copy", src, dst, "--progress", "none", "--ledger", dst])
        assertRefusal(r, status: 5, mentions: ["ledger", "the destination itself"])
        XCTAssertEqual(readAll(dst), before)

        let fresh = scratch.file("fresh.raw")
        let r2 = try ferry(["copy", src, fresh, "--progress", "none", "--ledger", fresh])
        assertRefusal(r2, status: 5, mentions: ["the destination itself"])
        XCTAssertFalse(exists(fresh), "the refused ledger path was created")

        // The far side refuses it too, before its ledger is opened (which would create it).
        let far = scratch.file("far.raw")
        let r3 = try ferry(["copy", src, "localhost:" + far, "--progress", "none", "--ledger", ledger]
                           + remoteOptions(farLedger: far))
        XCTAssertEqual(r3.status, 5, r3.summary)
        XCTAssertTrue(r3.stderr.contains("the destination itself"), r3.summary)
        XCTAssertFalse(exists(far), "the far side created the refused ledger")
        XCTAssertFalse(r3.stderr.contains("ferry serve:"), "the far error was echoed on stderr as well: " + r3.summary)
    }

    /// A ledger that cannot take a write (`chattr +i`, a read-only mount) once wiped the
    /// destination before failing. Now nothing is written.
    func testUnwritableLedgerIsFoundBeforeTheDestinationIsTouched() throws {
        let dir = scratch.file("ro")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let m = try runProcess(["/usr/bin/env", "mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", dir], in: scratch)
        guard m.status == 0 else { try skipUnlessRequired("cannot mount a tmpfs (needs root): \(m.summary)") }
        mounts.append(dir)
        let roLedger = dir + "/ledger.db"
        let tiny = scratch.file("tiny")
        try writeRandom(tiny, size: 4096, seed: 85)
        _ = try copy(tiny, scratch.file("tiny.copy"), ledger: roLedger)
        let ro = try runProcess(["/usr/bin/env", "mount", "-o", "remount,ro", dir], in: scratch)
        XCTAssertEqual(ro.status, 0, ro.summary)

        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 2 << 20, seed: 86)
        try writeRandom(dst, size: 2 << 20, seed: 87)
        let before = readAll(dst)
        let r = try ferry(["copy", src, dst, "--progress", "none", "--ledger", roLedger])
        assertRefusal(r, status: 6, mentions: [roLedger])
        XCTAssertEqual(readAll(dst), before, "the destination was changed although the ledger could not record the copy")

        // An immutable ledger opens (read-only) but cannot take the write ferry tries first.
        let immutable = scratch.file("immutable.db")
        _ = try copy(tiny, scratch.file("tiny.copy2"), ledger: immutable)
        let chattr = try runProcess(["/usr/bin/env", "chattr", "+i", immutable], in: scratch)
        guard chattr.status == 0 else { try skipUnlessRequired("chattr +i is not supported here: \(chattr.summary)") }
        defer { _ = try? runProcess(["/usr/bin/env", "chattr", "-i", immutable], in: scratch) }
        let r2 = try ferry(["copy", src, dst, "--progress", "none", "--ledger", immutable])
        assertRefusal(r2, status: 6, mentions: ["cannot be written", "nothing was written"])
        XCTAssertEqual(readAll(dst), before, "the destination was changed although the ledger could not record the copy")
        let fresh = scratch.file("fresh.raw")
        XCTAssertEqual(try ferry(["copy", src, fresh, "--progress", "none", "--ledger", immutable]).status, 6)
        XCTAssertFalse(exists(fresh), "a copy refused for its ledger created the destination")
    }

    // MARK: Streams

    /// A producer that dies early once looked like a small image. With --size it is a failed
    /// copy, recorded as failed, and the destination file is visibly short.
    func testStreamShorterThanItsSizeIsAFailedCopy() throws {
        let part = scratch.file("part.raw"), dst = scratch.file("dst.raw")
        try writeRandom(part, size: 3 << 20, seed: 88)
        let r = try runProcess([TestPaths.ferry] + copyArgs("-", dst, ["--size", "4M"]), in: scratch, stdin: part)
        XCTAssertEqual(r.status, 4, r.summary)
        XCTAssertTrue(r.stderr.contains("ended after 3145728 bytes, before the 4194304"), r.summary)
        let image = try XCTUnwrap(try ledgerImages(ledger).first { $0.role == "destination" })
        XCTAssertFalse(image.complete)
        XCTAssertLessThan(fileSize(dst), 4 << 20, "a failed copy left a destination of full size")
        let run = try XCTUnwrap(try runs(of: dst).last)
        XCTAssertEqual(run.result, "failed")
        XCTAssertTrue(run.error?.contains("--size") ?? false, "the run's error: \(String(describing: run.error))")

        // More bytes than promised: the image is larger than the user thinks; refuse.
        let long = try runProcess([TestPaths.ferry] + copyArgs("-", scratch.file("long.raw"), ["--size", "2M"]), in: scratch, stdin: part)
        XCTAssertEqual(long.status, 5, long.summary)
        XCTAssertTrue(long.stderr.contains("holds more than the 2097152 bytes"), long.summary)

        // The exact size copies, and says nothing about --size.
        let exact = try runProcess([TestPaths.ferry] + copyArgs("-", scratch.file("exact.raw"), ["--size", "3M"]), in: scratch, stdin: part)
        XCTAssertEqual(exact.status, 0, exact.summary)
        XCTAssertTrue(try sameBytes(part, scratch.file("exact.raw"), in: scratch))

        // --size on a file must match it.
        let mismatch = try ferry(copyArgs(part, scratch.file("m.raw"), ["--size", "1M"]))
        assertRefusal(mismatch, status: 64, mentions: ["--size 1048576 does not match"])
    }

    /// /dev/zero never ends: --size gives it one, and the copy is all holes.
    func testEndlessSourceStopsAtItsSize() throws {
        let dst = scratch.file("zero.raw")
        let report = try copy("/dev/zero", dst, ["--size", "3M"])
        XCTAssertEqual(report.destination.size, 3 << 20)
        XCTAssertEqual(report.zeroChunks, 3)
        XCTAssertEqual(fileSize(dst), 3 << 20)
        XCTAssertEqual(allocatedBytes(dst), 0, "zero chunks were written instead of left as holes")
        XCTAssertEqual(report.destination.sha256, try sha256sum(dst, in: scratch))
    }

    // MARK: Resume

    /// Interrupts a copy of `src` to `dst` with a full disk at 6 MiB (1 MiB checkpoints).
    private func interruptedCopy(_ src: String, _ dst: String) throws {
        let r = try runProcess([TestPaths.ferry] + copyArgs(src, dst, ["--checkpoint", "1M"]), in: scratch,
                               env: ["FERRY_FAULTS": "pwrite:ENOSPC:from=\(6 << 20)"])
        XCTAssertEqual(r.status, 4, r.summary)
        XCTAssertTrue(r.stderr.contains("--resume"), "the error says how to continue: " + r.summary)
        let run = try XCTUnwrap(try runs(of: dst).last)
        XCTAssertEqual(run.result, "failed", "a copy that hit ENOSPC is recorded as failed")
        XCTAssertTrue(run.error?.contains("No space left") ?? false, String(describing: run.error))
        XCTAssertEqual(try runs(of: src, role: "source").last?.result, "failed", "the source end's run")
    }

    /// A write into the source's copied part between the kill and --resume once gave "digests
    /// match" and a sha256 the source does not have.
    func testResumeRefusesASourceWrittenSinceTheInterruption() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 12 << 20, seed: 89)
        try interruptedCopy(src, dst)
        try flipByte(src, at: 1000)   // inside chunk 0, long since copied
        let r = try ferry(copyArgs(src, dst, ["--resume"]))
        assertRefusal(r, status: 5, mentions: ["changed since the interrupted copy began", "modified"])
        let fresh = try copy(src, dst)
        XCTAssertEqual(fresh.destination.sha256, try sha256sum(src, in: scratch))
    }

    /// The same for a destination written in between (a VM booted on it): chunk n-1 is always
    /// re-read; --verify-prefix re-reads every copied chunk, so a change outside the sample is
    /// found too.
    func testResumeRefusesADestinationWrittenSinceTheInterruption() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 12 << 20, seed: 90)
        try interruptedCopy(src, dst)
        let image = try XCTUnwrap(try ledgerImages(ledger).last { $0.role == "destination" })
        let n = image.checkpointChunks
        XCTAssertGreaterThanOrEqual(n, 4)
        try flipByte(dst, at: UInt64(n - 1) * (1 << 20) + 17)
        let r = try ferry(copyArgs(src, dst, ["--resume"]))
        assertRefusal(r, status: 5, mentions: ["chunk \(n - 1)", "no longer holds what the interrupted copy recorded"])
        try flipByte(dst, at: UInt64(n - 1) * (1 << 20) + 17)   // undone

        try flipByte(dst, at: 2 * (1 << 20) + 5)
        let all = try ferry(copyArgs(src, dst, ["--resume", "--verify-prefix"]))
        assertRefusal(all, status: 5, mentions: ["chunk 2 (offset 2097152)"])
        try flipByte(dst, at: 2 * (1 << 20) + 5)

        // Unchanged, it resumes, says where and what it checked, and ends identical.
        let ok = try ferry(copyArgs(src, dst, ["--resume", "--verify-prefix"]))
        XCTAssertEqual(ok.status, 0, ok.summary)
        let report = try decode(CopyJSON.self, ok.stdout)
        XCTAssertEqual(report.resumedFromChunk, n)
        let checks = report.resumeChecks ?? []
        XCTAssertTrue(checks.contains { $0.contains("source unchanged since the copy began") }, "\(checks)")
        XCTAssertTrue(checks.contains { $0.contains("all \(n) copied chunks of the destination") }, "\(checks)")
        XCTAssertTrue(try sameBytes(src, dst, in: scratch))
        XCTAssertEqual(try runs(of: dst).map(\.result), ["failed", "ok"])
    }

    /// A source file written while it is copied (a VM still running on it) yields a digest of no
    /// image that ever existed: the copy ends refused, and nothing is marked complete.
    func testSourceWrittenDuringTheCopyIsNeverMarkedComplete() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 64 << 20, seed: 98)
        let tiny = scratch.file("tiny")
        try writeRandom(tiny, size: 4096, seed: 99)
        _ = try copy(tiny, scratch.file("tiny.copy"))   // the ledger exists before it is polled
        let run = try start([TestPaths.ferry] + copyArgs(src, dst, ["--checkpoint", "1M"]), in: scratch)
        kill(run.pid, SIGSTOP)
        // Run it a few milliseconds at a time until its source record exists.
        var begun = false
        for _ in 0..<3000 where run.isRunning {
            if try ledgerImages(ledger).contains(where: { $0.path == src && $0.role == "source" }) { begun = true; break }
            kill(run.pid, SIGCONT)
            usleep(2_000)
            kill(run.pid, SIGSTOP)
        }
        XCTAssertTrue(begun, "the copy never began")
        try flipByte(src, at: (64 << 20) - 1)
        kill(run.pid, SIGCONT)
        let r = run.wait(timeout: 120)
        XCTAssertEqual(r.status, 5, r.summary)
        XCTAssertTrue(r.stderr.contains("changed while it was being copied"), r.summary)
        XCTAssertFalse(try ledgerImages(ledger).contains { ($0.path == src || $0.path == dst) && $0.complete },
                       "an image of a source that changed mid-copy is marked complete")
    }

    func testResumeWithAnotherChunkSizeIsRefused() throws {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 12 << 20, seed: 91)
        try interruptedCopy(src, dst)
        let r = try ferry(copyArgs(src, dst, ["--resume", "--chunk-size", "4M"]))
        assertRefusal(r, status: 64, mentions: ["chunk size, 1048576 bytes, not the 4194304 given"])
    }

    // MARK: Output

    func testJSONFailureIsAJSONObject() throws {
        let r = try ferry(copyArgs(scratch.file("missing.raw"), scratch.file("dst.raw")))
        XCTAssertEqual(r.status, 3, r.summary)
        struct ErrorJSON: Decodable { var error: String; var kind: String; var exitStatus: Int32 }
        let e = try decode(ErrorJSON.self, r.stdout)
        XCTAssertEqual(e.exitStatus, 3)
        XCTAssertEqual(e.kind, "notFound")
        XCTAssertTrue(e.error.contains("missing.raw"), e.error)
    }

    /// `ferry ledger export --json | head -c 400` once died on a trap with a register dump.
    func testClosedStdoutEndsQuietly() throws {
        let src = scratch.file("src.raw")
        try writeRandom(src, size: 64 << 20, seed: 92)
        let report = try copy(src, scratch.file("dst.raw"), ["--chunk-size", "64K"])
        for format in [["--json"], []] {
            let command = ([TestPaths.ferry, "ledger", "export", String(report.imageId!), "--ledger", ledger] + format).map(shq).joined(separator: " ")
            let r = try runProcess(["/bin/bash", "-c", "set -o pipefail; \(command) | head -c 400 >/dev/null"], in: scratch)
            XCTAssertTrue(r.status == 0 || r.status == 141, "ferry's status with a closed stdout: " + r.summary)
            XCTAssertFalse(r.stderr.contains("Fatal error") || r.stderr.contains("Illegal instruction"), r.summary)
            XCTAssertTrue(r.stderr.isEmpty, "a closed stdout is not an error to report: " + r.summary)
        }
        // --json export is the text export in JSON form.
        let text = try export(report.imageId)
        let json = try ferry(["ledger", "export", String(report.imageId!), "--json", "--ledger", ledger])
        struct Export: Decodable {
            struct Chunk: Decodable { var index: Int; var offset: UInt64; var length: Int; var sha256: String; var zero: Bool }
            var size: UInt64?; var chunkSize: Int; var sha256: String?; var chunks: [Chunk]
        }
        let e = try decode(Export.self, json.stdout)
        XCTAssertEqual(e.size, 64 << 20)
        XCTAssertEqual(e.sha256, report.destination.sha256)
        XCTAssertEqual(e.chunks.map { "\($0.offset) \($0.length) \($0.sha256)" }, text)
    }

    /// A file name with a newline or an escape sequence stays on one row of `ledger list`.
    func testLedgerListEscapesControlCharacters() throws {
        let src = scratch.file("src.raw")
        try writeRandom(src, size: 4096, seed: 93)
        let evil = scratch.file("a\nb\u{1b}[31m.raw")
        _ = try copy(src, evil)
        let r = try ferry(["ledger", "list", "--ledger", ledger])
        XCTAssertEqual(r.status, 0, r.summary)
        let lines = r.out.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        XCTAssertEqual(lines.count, 3, "header, source, destination: " + r.out)
        XCTAssertTrue(r.out.contains("a\\nb\\x1b[31m.raw"), r.out)
        XCTAssertFalse(r.out.contains("\u{1b}"), "an escape character reached the terminal")
    }

    // MARK: The far side

    /// A full disk at the far end of a push is an I/O error (exit 4), shown once, with
    /// "remote:", never as a remote error or twice.
    func testFarFullDiskKeepsItsStatusAndIsShownOnce() throws {
        let src = scratch.file("src.raw")
        try writeRandom(src, size: 12 << 20, seed: 94)
        let r = try runProcess([TestPaths.ferry] + copyArgs(src, "localhost:" + scratch.file("far.raw"), ["--checkpoint", "1M"])
                               + remoteOptions(), in: scratch, env: ["FERRY_FAULTS": "pwrite:ENOSPC:from=\(4 << 20)"])
        XCTAssertEqual(r.status, 4, r.summary)
        XCTAssertEqual(r.errLines.filter { $0.contains("No space left") }.count, 1, "the far error once: " + r.summary)
        XCTAssertTrue(r.errLines.last?.hasPrefix("ferry: remote: ") ?? false, r.summary)
        XCTAssertFalse(r.stderr.contains("ferry serve:"), r.summary)
        XCTAssertEqual(try runs(of: scratch.file("far.raw"), ledger: farLedger).last?.result, "failed", "the far end's run")
        XCTAssertEqual(try runs(of: src, role: "source").last?.result, "failed", "this end's run")
    }

    // MARK: Dead links

    /// Waits for `path` to hold "RELAY_PID SERVE_PID" (relay.py --pidfile).
    private func servePid(_ path: String, _ run: Background) throws -> pid_t {
        for _ in 0..<3000 {
            let parts = String(decoding: readAll(path), as: UTF8.self).split(separator: " ")
                .compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if parts.count == 2 { return parts[1] }
            if !run.isRunning { break }
            usleep(10_000)
        }
        XCTFail("the far serve never started: " + run.wait().summary)
        throw XCTSkip("no far serve")
    }

    /// A 24 MiB push with `--timeout 2` through a rate-limited relay, 1.5 s under way: the
    /// client, the far serve's pid, the source and the far destination.
    private func pushUnderWay(seed: UInt64) throws -> (run: Background, serve: pid_t, src: String, dst: String) {
        let src = scratch.file("src.raw"), dst = scratch.file("far.raw"), pids = scratch.file("pids")
        try writeRandom(src, size: 24 << 20, seed: seed)
        let args = copyArgs(src, "localhost:" + dst, ["--checkpoint", "1M", "--timeout", "2"])
            + remoteOptions(relayShell(["--pidfile", shq(pids), "--rate", "4000000"]))
        let run = try start([TestPaths.ferry] + args, in: scratch)
        let serve = try servePid(pids, run)
        usleep(1_500_000)
        return (run, serve, src, dst)
    }

    /// A far serve that stops (SIGSTOP) once hung the client forever. With --timeout the client
    /// gives up once no data moved for that long, says so, records its run as failed, and
    /// --resume continues from what was made durable.
    func testStalledFarServeEndsTheCopyAfterTheTimeout() throws {
        let (run, serve, src, dst) = try pushUnderWay(seed: 95)
        kill(serve, SIGSTOP)
        let started = Date()
        let r = run.wait(timeout: 60)
        kill(serve, SIGCONT)
        kill(serve, SIGKILL)
        XCTAssertEqual(r.status, 7, r.summary)
        XCTAssertTrue(r.stderr.contains("no data moved between here and") && r.stderr.contains("for 2 s"), r.summary)
        XCTAssertTrue(r.stderr.contains("--resume"), "the error says how to continue: " + r.summary)
        XCTAssertLessThan(Date().timeIntervalSince(started), 30, "the client waited far longer than --timeout")
        XCTAssertEqual(try runs(of: src, role: "source").last?.result, "failed")

        let resumed = try ferry(copyArgs(src, "localhost:" + dst, ["--checkpoint", "1M", "--resume"]) + remoteOptions())
        XCTAssertEqual(resumed.status, 0, resumed.summary)
        XCTAssertNotNil(try decode(CopyJSON.self, resumed.stdout).resumedFromChunk, "the copy started over")
        XCTAssertTrue(try sameBytes(src, dst, in: scratch))
    }

    /// The far end has the same limit: a client that stops mid-copy leaves no serve waiting
    /// forever; the far run is recorded as failed with the reason.
    func testStalledClientEndsTheFarServeAfterTheTimeout() throws {
        let (run, serve, _, dst) = try pushUnderWay(seed: 96)
        kill(run.pid, SIGSTOP)
        var ended = false
        for _ in 0..<3000 {
            if !isAlive(serve) { ended = true; break }
            usleep(10_000)
        }
        kill(run.pid, SIGCONT)
        let r = run.wait(timeout: 60)
        XCTAssertTrue(ended, "the far serve still waits for a stopped client")
        XCTAssertNotEqual(r.status, 0, r.summary)
        let far = try XCTUnwrap(try runs(of: dst, ledger: farLedger).last)
        XCTAssertEqual(far.result, "failed")
        XCTAssertTrue(far.error?.contains("no data moved") ?? false, String(describing: far.error))
    }

    /// A far "ferry" that never answers the hello once hung the client too.
    func testSilentFarEndEndsAfterTheTimeout() throws {
        let src = scratch.file("src.raw")
        try writeRandom(src, size: 1 << 20, seed: 97)
        let silent = "sh -c 'exec sleep 120' --"
        let started = Date()
        let r = try ferry(copyArgs(src, "localhost:" + scratch.file("far.raw"), ["--timeout", "1"])
                          + ["-e", silent, "--remote-ledger", farLedger], timeout: 60)
        XCTAssertEqual(r.status, 7, r.summary)
        XCTAssertTrue(r.stderr.contains("no data moved"), r.summary)
        XCTAssertLessThan(Date().timeIntervalSince(started), 20)
    }
}
