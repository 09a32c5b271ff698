import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Interrupted copies continued with --resume: the transport killed mid-copy (the relay in
/// Tests/Fixtures/relay.py stands where ssh stands and throttles the stream so there is time to
/// interrupt it), the far `ferry serve` killed, and a local copy killed. The resumed copy must
/// end identical to an uninterrupted one: same bytes, digests, hash-list root and ledger export.
final class ResumeTests: FerryTestCase {
    static let options = ["--chunk-size", "64K", "--checkpoint", "1M"]
    static let chunk = 64 << 10
    /// Chunks per checkpoint (1M / 64K).
    static let perCheckpoint = 16
    /// Wait for at least this many chunks to be checkpointed before interrupting.
    static let interruptAfter = 4 * perCheckpoint

    private var src: String!

    override func setUpWithError() throws {
        try super.setUpWithError()
        src = scratch.file("disk.raw")
        try writeImage(src, mixedRegions(mib: 64), seed: 1234)
    }

    private var chunkCount: Int { Int((fileSize(src) + UInt64(Self.chunk) - 1) / UInt64(Self.chunk)) }

    /// Polls `ledger` until an incomplete image of `role` has at least `chunks` checkpointed.
    /// `step` runs between polls (to let a stopped process go on a little). Fails if `process`
    /// ends first.
    private func waitForCheckpoint(_ ledgerPath: String, role: String, chunks: Int, process: Background,
                                   step: (() -> Void)? = nil) throws -> Int {
        for _ in 0..<6000 {
            if !process.isRunning {
                let r = process.wait()
                XCTFail("the copy ended before it could be interrupted: " + r.summary)
                throw XCTSkip("not interrupted")
            }
            let images = exists(ledgerPath) ? try ledgerImages(ledgerPath) : []
            let reached = images.filter { $0.role == role && !$0.complete }.map(\.checkpointChunks).max() ?? 0
            if reached >= chunks { return reached }
            if let step { step() } else { usleep(10_000) }
        }
        process.signal(SIGKILL)
        XCTFail("no checkpoint of \(chunks) chunks appeared in \(ledgerPath): " + process.wait().summary)
        throw XCTSkip("not interrupted")
    }

    private func readPids(_ path: String) throws -> (relay: pid_t, serve: pid_t) {
        let parts = String(decoding: readAll(path), as: UTF8.self).split(separator: " ")
            .compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        guard parts.count == 2 else {
            XCTFail("the relay wrote no pids to \(path)")
            throw XCTSkip("no pids")
        }
        return (parts[0], parts[1])
    }

    /// What the resumed copy must equal.
    private struct Reference {
        var report: CopyJSON
        var export: [String]
    }

    private func checkResumed(_ r: RunResult, dst: String, reference: Reference, dstLedger: String, srcLedger: String,
                              localIsSource: Bool, interruptedAt: Int, stoppedAt: Int? = nil,
                              file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(r.status, 0, "the resumed copy failed: " + r.summary, file: file, line: line)
        guard r.status == 0 else { return }
        let report = try decode(CopyJSON.self, r.stdout, file: file, line: line)
        let from = try XCTUnwrap(report.resumedFromChunk, "resumedFromChunk missing: the copy started over", file: file, line: line)
        XCTAssertGreaterThan(from, 0, file: file, line: line)
        if let stoppedAt {
            // A clean stop records a checkpoint where it stopped: nothing is copied twice.
            XCTAssertEqual(from, stoppedAt, "resumed elsewhere than where the interrupted run stopped", file: file, line: line)
            XCTAssertTrue(r.out.contains("\"resumeChecks\""), "the report says what the resume checked: " + r.out, file: file, line: line)
            return try checkSameAsReference(r, report: report, dst: dst, reference: reference, dstLedger: dstLedger,
                                            srcLedger: srcLedger, localIsSource: localIsSource, file: file, line: line)
        }
        XCTAssertEqual(from % Self.perCheckpoint, 0, "resumed at \(from), not at a checkpoint", file: file, line: line)
        XCTAssertLessThanOrEqual(from, interruptedAt + 3 * Self.perCheckpoint, "resumed past what was durable", file: file, line: line)
        // At most one checkpoint interval before the last checkpoint seen is sent again (the
        // sending end records a checkpoint just before the receiving end does).
        XCTAssertGreaterThanOrEqual(from, interruptedAt - Self.perCheckpoint, "resumed further back than one checkpoint interval",
                                    file: file, line: line)
        XCTAssertLessThan(from, chunkCount, file: file, line: line)
        try checkSameAsReference(r, report: report, dst: dst, reference: reference, dstLedger: dstLedger, srcLedger: srcLedger,
                                 localIsSource: localIsSource, file: file, line: line)
    }

    private func checkSameAsReference(_ r: RunResult, report: CopyJSON, dst: String, reference: Reference, dstLedger: String,
                                      srcLedger: String, localIsSource: Bool, file: StaticString, line: UInt) throws {
        XCTAssertTrue(try sameBytes(src, dst, in: scratch), "the resumed destination differs from the source", file: file, line: line)
        let sha = try sha256sum(src, in: scratch)
        XCTAssertEqual(report.source.sha256, sha, "source.sha256 after resume", file: file, line: line)
        XCTAssertEqual(report.destination.sha256, sha, "destination.sha256 after resume", file: file, line: line)
        XCTAssertTrue(report.digestsMatch, file: file, line: line)
        XCTAssertEqual(report.chunks, reference.report.chunks, file: file, line: line)
        XCTAssertEqual(report.listRoot, reference.report.listRoot, "hash-list root differs from an uninterrupted copy", file: file, line: line)
        XCTAssertEqual(report.zeroChunks, reference.report.zeroChunks, "zeroChunks differs from an uninterrupted copy", file: file, line: line)

        let dstId = report.destination.imageId
        let srcId = localIsSource ? report.source.imageId : (report.remote?.imageId ?? report.source.imageId)
        XCTAssertEqual(try export(dstId, ledger: dstLedger), reference.export, "destination ledger export differs from an uninterrupted copy",
                       file: file, line: line)
        XCTAssertEqual(try export(srcId, ledger: srcLedger), reference.export, "source ledger export differs from an uninterrupted copy",
                       file: file, line: line)
        XCTAssertEqual(reference.export, try chunkList(src, chunkSize: Self.chunk, in: scratch), file: file, line: line)

        // Both records of the transfer are complete, and a verify of the destination passes.
        for (path, id) in [(dstLedger, dstId), (srcLedger, srcId)] {
            let image = try ledgerImages(path).first { $0.id == id }
            XCTAssertEqual(image?.complete, true, "image \(String(describing: id)) in \(path) is not complete", file: file, line: line)
            XCTAssertEqual(image?.sha256, sha, file: file, line: line)
        }
        let (v, vr) = try verify(dst, ledger: dstLedger)
        XCTAssertEqual(v.status, 0, "verify after resume: " + v.summary, file: file, line: line)
        XCTAssertEqual(vr?.imageId, dstId, file: file, line: line)
    }

    /// An interrupted copy's destination record is incomplete, so verify has nothing to check it
    /// against (exit 3) rather than calling a half-written image good or corrupt.
    private func checkNotVouchedFor(_ dst: String, ledger dstLedger: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let records = try ledgerImages(dstLedger).filter { $0.role == "destination" && $0.path == dst }
        XCTAssertEqual(records.count, 1, "records of \(dst) in \(dstLedger)", file: file, line: line)
        XCTAssertEqual(records.first?.complete, false, "the interrupted destination is marked complete", file: file, line: line)
        XCTAssertGreaterThan(records.first?.checkpointChunks ?? 0, 0, "no checkpoint recorded for the interrupted destination",
                             file: file, line: line)
        let r = try ferry(["verify", dst, "--progress", "none", "--ledger", dstLedger])
        XCTAssertEqual(r.status, 3, "verify of an interrupted copy: " + r.summary, file: file, line: line)
    }

    // MARK: Remote

    private func remoteReference(push: Bool) throws -> Reference {
        if push {
            let ref = scratch.file("reference.raw")
            let r = try copy(src, "localhost:" + ref, remoteOptions() + Self.options)
            return Reference(report: r, export: try export(r.destination.imageId, ledger: farLedger))
        } else {
            let ref = scratch.file("reference.raw")
            let r = try copy("localhost:" + src, ref, remoteOptions() + Self.options)
            return Reference(report: r, export: try export(r.destination.imageId, ledger: ledger))
        }
    }

    private enum Victim: Equatable {
        case transport, farServe
        /// The client ferry itself, by a signal it handles (SIGINT or SIGTERM).
        case client(Int32)
    }

    /// Interrupts a remote copy `times` times (each later run with --resume), then resumes it to
    /// the end and compares it with an uninterrupted copy.
    private func interruptedRemote(push: Bool, kill victim: Victim, times: Int = 1) throws {
        let reference = try remoteReference(push: push)
        let far = scratch.file("far.raw")
        let local = scratch.file("local.raw")
        let pidfile = scratch.file("relay.pids")
        let rsh = relayShell(["--pidfile", pidfile, "--rate", String(16 << 20)])
        let (from, to) = push ? (src!, "localhost:" + far) : ("localhost:" + src!, local)
        let dst = push ? far : local
        let args = [TestPaths.ferry, "copy", from, to, "--progress", "none", "--json", "--ledger", ledger]
            + remoteOptions(rsh) + Self.options

        var threshold = Self.interruptAfter
        var done = 0
        for attempt in 0..<times {
            try? FileManager.default.removeItem(atPath: pidfile)
            let run = try start(attempt == 0 ? args : args + ["--resume"], in: scratch)
            // The checkpoint is recorded by the client when the destination reports it durable.
            done = try waitForCheckpoint(ledger, role: push ? "source" : "destination", chunks: threshold, process: run)
            let pids = try readPids(pidfile)
            switch victim {
            case .transport: kill(pids.relay, SIGKILL)
            case .farServe: kill(pids.serve, SIGKILL)
            case .client(let signal): run.signal(signal)
            }
            let r1 = run.wait(timeout: 120)
            XCTAssertFalse(r1.signaled, r1.summary)
            XCTAssertNotEqual(r1.status, 0, "interruption \(attempt + 1): the copy reported success: " + r1.summary)
            if case .client(let signal) = victim {
                XCTAssertEqual(r1.status, 128 + signal, "an interrupted copy exits 128 + the signal: " + r1.summary)
                let name = signal == SIGINT ? "SIGINT" : "SIGTERM"
                XCTAssertTrue(r1.errLines.last?.hasPrefix("ferry: interrupted by \(name)") ?? false, r1.summary)
            } else {
                XCTAssertEqual(r1.status, 7, "a dead transport or far ferry is a remote error: " + r1.summary)
            }
            XCTAssertTrue(r1.errLines.last?.hasPrefix("ferry: ") ?? false, r1.summary)
            XCTAssertFalse(try sameBytes(src, dst, in: scratch), "the interrupted copy had already finished")
            try checkNotVouchedFor(dst, ledger: push ? farLedger : ledger)
            // Let the far side notice and stop (it may still be writing when the client gives up).
            for _ in 0..<500 where isAlive(pids.serve) { usleep(10_000) }
            threshold = done + 4 * Self.perCheckpoint
        }

        try? FileManager.default.removeItem(atPath: pidfile)
        let r2 = try ferry(Array(args.dropFirst()) + ["--resume"], timeout: 180)
        try checkResumed(r2, dst: dst, reference: reference, dstLedger: push ? farLedger : ledger,
                         srcLedger: push ? ledger : farLedger, localIsSource: push, interruptedAt: done)
    }

    func testPushResumesAfterTransportIsKilled() throws {
        try interruptedRemote(push: true, kill: .transport)
    }

    func testPushResumesAfterFarServeIsKilled() throws {
        try interruptedRemote(push: true, kill: .farServe)
    }

    func testPushResumesAfterTwoInterruptions() throws {
        try interruptedRemote(push: true, kill: .transport, times: 2)
    }

    func testPullResumesAfterTransportIsKilled() throws {
        try interruptedRemote(push: false, kill: .transport)
    }

    func testPullResumesAfterFarServeIsKilled() throws {
        try interruptedRemote(push: false, kill: .farServe)
    }

    /// Ctrl-C at the client: it stops at the next chunk through its normal error path (exit
    /// 130, nothing marked complete at either end) and --resume continues from the checkpoint.
    func testPushResumesAfterSIGINT() throws {
        try interruptedRemote(push: true, kill: .client(SIGINT))
    }

    func testPullResumesAfterSIGTERM() throws {
        try interruptedRemote(push: false, kill: .client(SIGTERM))
    }

    // MARK: Local

    /// A local copy of `src` to `dst`, stopped (SIGSTOP) once a few checkpoints are recorded:
    /// the process, its arguments (without the binary) and the checkpoint reached.
    private func localCopyStoppedAtCheckpoint(_ dst: String) throws -> (Background, [String], Int) {
        let args = [TestPaths.ferry, "copy", src!, dst, "--progress", "none", "--json", "--ledger", ledger] + Self.options
        let first = try start(args, in: scratch)
        // A local copy is too fast to catch in flight: run it a few milliseconds at a time.
        kill(first.pid, SIGSTOP)
        let done = try waitForCheckpoint(ledger, role: "destination", chunks: Self.interruptAfter, process: first) {
            kill(first.pid, SIGCONT)
            usleep(3_000)
            kill(first.pid, SIGSTOP)
        }
        return (first, Array(args.dropFirst()), done)
    }

    /// Stops a local copy with `interrupt`, checks what it left, resumes it, and compares the
    /// result with an uninterrupted copy.
    private func interruptedLocal(_ interrupt: (Background) -> Void, cleanStop: Bool = false, check: (RunResult) -> Void) throws {
        let ref = scratch.file("reference.raw")
        let refReport = try copy(src, ref, Self.options)
        let reference = Reference(report: refReport, export: try export(refReport.destination.imageId))
        let dst = scratch.file("dst.raw")
        let (first, args, done) = try localCopyStoppedAtCheckpoint(dst)
        interrupt(first)
        check(first.wait())
        XCTAssertFalse(try sameBytes(src, dst, in: scratch), "the interrupted copy had already finished")
        try checkNotVouchedFor(dst, ledger: ledger)
        // A clean stop made everything it wrote durable and recorded a checkpoint there.
        let stoppedAt = cleanStop ? try ledgerImages(ledger).first { $0.role == "destination" && $0.path == dst }?.checkpointChunks : nil
        if cleanStop {
            XCTAssertGreaterThanOrEqual(stoppedAt ?? 0, done, "the stop checkpoint is behind the last periodic one")
            // It grows as chunks land (zero chunks stay holes past its end until the copy completes).
            XCTAssertLessThanOrEqual(fileSize(dst), UInt64(stoppedAt ?? 0) * UInt64(Self.chunk),
                                     "an interrupted destination file reaches past where the copy stopped")
            XCTAssertLessThan(fileSize(dst), fileSize(src), "an interrupted destination file looks whole")
        }

        let r2 = try ferry(args + ["--resume"])
        try checkResumed(r2, dst: dst, reference: reference, dstLedger: ledger, srcLedger: ledger, localIsSource: true,
                         interruptedAt: done, stoppedAt: stoppedAt)
    }

    func testLocalCopyResumesAfterKill() throws {
        try interruptedLocal({ kill($0.pid, SIGKILL) }) { r1 in XCTAssertTrue(r1.signaled, r1.summary) }
    }

    /// SIGINT to a local copy: it stops at the next chunk, says so, exits 130, leaves the
    /// destination incomplete with its checkpoints, and --resume finishes it.
    func testLocalCopyStopsCleanlyOnSIGINTAndResumes() throws {
        try interruptedLocal({ first in
            // Delivered when the process runs again, at whatever it is doing then.
            kill(first.pid, SIGINT)
            kill(first.pid, SIGCONT)
        }, cleanStop: true) { r1 in
            XCTAssertFalse(r1.signaled, "the handler did not take SIGINT: " + r1.summary)
            XCTAssertEqual(r1.status, 130, r1.summary)
            XCTAssertEqual(r1.errLines.last?.hasPrefix("ferry: interrupted by SIGINT"), true, r1.summary)
            XCTAssertTrue(r1.stderr.contains("--resume"), "the message says how to continue: " + r1.summary)
            // --json: a JSON error object, never a report.
            XCTAssertTrue(r1.out.contains("\"kind\":\"interrupted\"") && r1.out.contains("\"exitStatus\":130"),
                          "an interrupted copy with --json prints a JSON error: " + r1.out)
            XCTAssertFalse(r1.out.contains("digestsMatch"), "an interrupted copy printed a report: " + r1.out)
        }
    }

    /// Interrupts a local copy of `src` to `dst` after a few checkpoints.
    private func interruptLocal(_ dst: String) throws -> [String] {
        // The ledger exists before the copy starts, so polling it never races its creation
        // (LedgerConcurrencyTests covers that on its own).
        let tiny = scratch.file("tiny")
        try writeRandom(tiny, size: 1000, seed: 1)
        _ = try copy(tiny, scratch.file("tiny.copy"))
        let (first, args, _) = try localCopyStoppedAtCheckpoint(dst)
        kill(first.pid, SIGKILL)
        XCTAssertTrue(first.wait().signaled)
        return args
    }

    func testResumeRefusesASourceThatGrew() throws {
        let dst = scratch.file("dst.raw")
        let args = try interruptLocal(dst)
        let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: src))
        try fh.seekToEnd()
        try fh.write(contentsOf: Data(repeating: 1, count: 4096))
        try fh.close()
        let before = readAll(dst)
        let r = try ferry(args + ["--resume"])
        assertRefusal(r, status: 5, mentions: [src])
        XCTAssertEqual(readAll(dst), before, "a refused resume changed the destination")
    }

    func testResumeRefusesADestinationThatChanged() throws {
        let dst = scratch.file("dst.raw")
        let args = try interruptLocal(dst)
        // Damage the destination's first chunk, which resume re-reads (with chunk n-1 and a spread
        // between) before trusting the copied part.
        XCTAssertNotNil(try ledgerImages(ledger).first { $0.role == "destination" && !$0.complete })
        try flipByte(dst, at: 5)
        let r = try ferry(args + ["--resume"])
        assertRefusal(r, status: 5, mentions: [dst])
    }

    func testResumeWithNothingToResumeCopiesAfresh() throws {
        let dst = scratch.file("dst.raw")
        let r = try copy(src, dst, Self.options + ["--resume"])
        XCTAssertNil(r.resumedFromChunk)
        XCTAssertTrue(try sameBytes(src, dst, in: scratch))
        XCTAssertEqual(r.destination.sha256, try sha256sum(src, in: scratch))
    }
}
