import Foundation
import XCTest

/// VM disk containers and NBD exports as sources: ferry runs its own read-only qemu-nbd (no
/// root, no nbd module), reads only the extents that hold data, and its digests equal
/// `sha256sum` of `qemu-img convert -O raw`. Verify and resend read the container the same way;
/// a truncated container, a wrong format or a server that dies end in a clear error, and no
/// qemu-nbd or socket is ever left behind.
final class ContainerTests: FerryTestCase {
    private static let M = 1 << 20
    private var dirsBefore: Set<String> = []

    override func setUpWithError() throws {
        try super.setUpWithError()
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-nbd"),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img") else {
            try skipUnlessRequired("qemu-utils (qemu-nbd, qemu-img, qemu-io) is not installed")
        }
        dirsBefore = Self.socketDirs()
    }

    override func tearDownWithError() throws {
        // Whatever a test did, ferry left no server and no socket directory of its own.
        XCTAssertEqual(strayServers(), [], "a qemu-nbd serving this test's files is still running")
        XCTAssertEqual(Self.socketDirs().subtracting(dirsBefore), [], "a qemu-nbd socket directory was left in /tmp")
        try super.tearDownWithError()
    }

    static func socketDirs() -> Set<String> {
        Set(((try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []).filter { $0.hasPrefix("ferry-nbd-") })
    }

    /// qemu-nbd processes whose command line names a file in this test's scratch folder.
    private func strayServers() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid in
            guard Int32(pid) != nil, let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
            let cmd = String(decoding: raw.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            guard cmd.contains("qemu-nbd"), cmd.contains(scratch.path),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")"), stat[stat.index(close, offsetBy: 2)] != "Z" else { return nil }
            return pid + ": " + cmd
        }
    }

    private func tool(_ argv: [String], file: StaticString = #filePath, line: UInt = #line) throws -> RunResult {
        let r = try runProcess(["/usr/bin/env"] + argv, in: scratch)
        XCTAssertEqual(r.status, 0, r.summary, file: file, line: line)
        return r
    }

    /// A sparse container of `size` bytes with qemu-io writes (`write -P PATTERN OFFSET LENGTH`).
    private func makeContainer(_ name: String, format: String, size: Int, writes: [String]) throws -> String {
        let path = scratch.file(name)
        _ = try tool(["qemu-img", "create", "-q", "-f", format, path, String(size)])
        if !writes.isEmpty { _ = try tool(["qemu-io", "-f", format] + writes.flatMap { ["-c", $0] } + [path]) }
        return path
    }

    /// The guest disk as qemu reads it, as a raw file.
    private func converted(_ container: String, format: String) throws -> String {
        let raw = container + ".converted"
        _ = try tool(["qemu-img", "convert", "-f", format, "-O", "raw", container, raw])
        return raw
    }

    /// Guest bytes the container allocates (what `qemu-img map` says holds data).
    private func allocated(_ container: String, format: String) throws -> UInt64 {
        let r = try tool(["qemu-img", "map", "--output=json", "-f", format, container])
        let extents = try XCTUnwrap(try JSONSerialization.jsonObject(with: r.stdout) as? [[String: Any]])
        return extents.reduce(0) { $0 + (($1["data"] as? Bool) == true ? UInt64($1["length"] as! Int) : 0) }
    }

    private static let writes = ["write -P 0xab 1M 3M", "write -P 0 10M 1M", "write -P 0x5c 12345678 70000",
                                 "write -P 7 63M 4k"]

    /// A VDI copies as the disk inside it: digest of `qemu-img convert -O raw`, only allocated
    /// bytes read, zero chunks as holes, the container recorded in the ledger. Verify of the VDI
    /// finds exactly a chunk changed inside it; resend from the VDI repairs a damaged copy.
    func testVDIIsCopiedAsTheDiskInsideReadingOnlyAllocatedData() throws {
        let vdi = try makeContainer("vm-100.vdi", format: "vdi", size: 64 * Self.M, writes: Self.writes)
        let raw = try converted(vdi, format: "vdi")
        let dst = scratch.file("vm-100.raw")
        let report = try copy(vdi, dst)
        XCTAssertEqual(report.source.sha256, try sha256sum(raw, in: scratch), "the digest is that of the disk inside")
        XCTAssertTrue(try sameBytes(dst, raw, in: scratch), "the destination holds the disk inside the VDI")
        XCTAssertEqual(report.source.format, "vdi")
        XCTAssertEqual(report.destination.format, "raw")
        let data = try allocated(vdi, format: "vdi")
        let read = try XCTUnwrap(report.source.bytesRead)
        XCTAssertLessThanOrEqual(Double(read), 1.1 * Double(data), "read \(read) bytes for \(data) allocated")
        XCTAssertGreaterThanOrEqual(read, 4 * UInt64(Self.M), "the data extents were read")
        XCTAssertEqual(report.chunks, 64)
        XCTAssertEqual(report.zeroChunks, 64 - 5, "chunks 1-3, 11 and 63 hold data (chunk 10 is allocated, but zeros)")
        XCTAssertLessThan(allocatedBytes(dst), 16 * UInt64(Self.M), "zero chunks are holes at the destination")

        // The ledger knows the container.
        let show = try ferry(["ledger", "show", String(try XCTUnwrap(report.source.imageId)), "--json", "--ledger", ledger])
        XCTAssertEqual(show.status, 0, show.summary)
        let container = try XCTUnwrap((try jsonObject(show)["image"] as? [String: Any])?["container"] as? [String: Any], show.out)
        XCTAssertEqual(container["format"] as? String, "vdi")
        XCTAssertEqual((container["allocatedBytes"] as? Int).map(UInt64.init), data)
        XCTAssertEqual((container["fileSize"] as? Int).map(UInt64.init), fileSize(vdi))

        // Verify of the VDI (the last audit before the old disk is wiped).
        let (ok, okReport) = try verify(vdi)
        XCTAssertEqual(ok.status, 0, ok.summary)
        XCTAssertEqual(okReport?.format, "vdi")
        XCTAssertLessThanOrEqual(Double(okReport?.bytesRead ?? .max), 1.1 * Double(data))
        XCTAssertFalse(ok.stderr.contains("is open in"), "ferry's own qemu-nbd is not a holder: " + ok.summary)
        _ = try tool(["qemu-io", "-f", "vdi", "-c", "write -P 0xee 2M 4k", vdi])
        let (bad, badReport) = try verify(vdi)
        XCTAssertEqual(bad.status, 1, bad.summary)
        XCTAssertEqual(badReport?.badRanges, [BadRangeJSON(offset: 2 * UInt64(Self.M), length: UInt64(Self.M), firstChunk: 2, lastChunk: 2)])
        _ = try tool(["qemu-io", "-f", "vdi", "-c", "write -P 0xab 2M 4k", vdi])

        // Resend from the VDI repairs a damaged copy.
        try flipByte(dst, at: 12_345_678 + 100)
        XCTAssertEqual(try verify(dst).0.status, 1)
        let resend = try ferry(["resend", vdi, dst, "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(resend.status, 0, resend.summary)
        XCTAssertTrue(try sameBytes(dst, raw, in: scratch))
        XCTAssertEqual(try verify(dst).0.status, 0)
    }

    /// qcow2, VMDK, VHD (vpc) and VHDX: the digest equals `sha256sum` of the raw conversion.
    func testOtherFormatsGiveTheDigestOfTheirRawConversion() throws {
        for format in ["qcow2", "vmdk", "vpc", "vhdx"] {
            let image = try makeContainer("disk.\(format)", format: format, size: 24 * Self.M,
                                          writes: ["write -P 0x31 0 64k", "write -P 0x42 5M 2M", "write -P 0x53 20M 512"])
            let raw = try converted(image, format: format)
            let dst = scratch.file("out-\(format).raw")
            let report = try copy(image, dst)
            XCTAssertEqual(report.source.format, format)
            XCTAssertEqual(report.source.sha256, try sha256sum(raw, in: scratch), format)
            XCTAssertTrue(try sameBytes(dst, raw, in: scratch), format)
            // Each format allocates in its own block size (VHD: 2 MiB), and qemu's VHDX driver
            // reports no extents at all: what qemu calls data is what is read.
            let data = try allocated(image, format: format)
            XCTAssertLessThanOrEqual(Double(try XCTUnwrap(report.source.bytesRead)), 1.1 * Double(data), "\(format): only data extents are read")
        }
    }

    /// --as-is and --source-format raw copy the container's own bytes; a wrong --source-format is
    /// refused, as is an unknown one; a container on a pipe is refused.
    func testFormatChoices() throws {
        let vdi = try makeContainer("vm.vdi", format: "vdi", size: 8 * Self.M, writes: ["write -P 1 0 1M"])
        for flag in [["--as-is"], ["--source-format", "raw"]] {
            let dst = scratch.file("as-is-\(flag.count).vdi")
            let report = try copy(vdi, dst, flag)
            XCTAssertEqual(report.source.format, "raw")
            XCTAssertEqual(report.source.sha256, try sha256sum(vdi, in: scratch))
        }
        let wrong = scratch.file("wrong.raw")
        let r = try ferry(["copy", vdi, wrong, "--source-format", "qcow2", "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 5, mentions: [vdi, "qcow2"])
        XCTAssertFalse(exists(wrong))
        let unknown = try ferry(["copy", vdi, wrong, "--source-format", "iso", "--progress", "none", "--ledger", ledger])
        assertRefusal(unknown, status: 64, mentions: ["iso", "vdi"])
        let piped = try runProcess(["/bin/sh", "-c", "cat \(shq(vdi)) 2>/dev/null | \(shq(TestPaths.ferry)) copy - \(shq(wrong)) --progress none --ledger \(shq(ledger))"], in: scratch)
        // (A note that the stream has no --size comes first.)
        XCTAssertEqual(piped.status, 5, piped.summary)
        let last = piped.errLines.last ?? ""
        XCTAssertTrue(last.contains("stdin") && last.contains("VDI") && last.contains("--as-is"), piped.summary)
        XCTAssertFalse(exists(wrong))
    }

    /// A truncated container is refused before anything is read or written, naming the offset.
    func testTruncatedContainerIsRefusedNamingTheOffset() throws {
        let vdi = try makeContainer("cut.vdi", format: "vdi", size: 64 * Self.M, writes: Self.writes)
        let full = fileSize(vdi)
        XCTAssertEqual(truncate(vdi, off_t(full / 2)), 0)
        let dst = scratch.file("cut.raw")
        let r = try ferry(["copy", vdi, dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 5, mentions: [vdi, "truncated", "offset"])
        XCTAssertFalse(exists(dst), "a refused copy created the destination")
    }

    /// A container that keeps part of its disk in other files (a qcow2 overlay on a backing
    /// file, a VMDK descriptor with a flat extent) is refused: ferry could not vouch for them.
    func testContainersSpreadOverSeveralFilesAreRefused() throws {
        let base = try makeContainer("base.qcow2", format: "qcow2", size: 16 * Self.M, writes: ["write -P 1 0 1M"])
        let overlay = scratch.file("overlay.qcow2")
        _ = try tool(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay])
        let vmdk = scratch.file("split.vmdk")
        _ = try tool(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", vmdk, String(16 * Self.M)])
        for (image, other) in [(overlay, base), (vmdk, scratch.file("split-flat.vmdk"))] {
            let dst = scratch.file("spread.raw")
            let r = try ferry(["copy", image, dst, "--progress", "none", "--ledger", ledger])
            assertRefusal(r, status: 5, mentions: [image, other, "qemu-img convert"])
            XCTAssertFalse(exists(dst))
        }
    }

    /// A container on a block device (a VDI on a loop device) is read through qemu's device driver.
    func testContainerOnABlockDevice() throws {
        guard getuid() == 0 else { try skipUnlessRequired("loop devices need root") }
        let vdi = try makeContainer("on-loop.vdi", format: "vdi", size: 32 * Self.M, writes: ["write -P 0x21 4M 2M"])
        let raw = try converted(vdi, format: "vdi")
        let attach = try runProcess(["/usr/bin/env", "losetup", "-f", "--show", "-r", vdi], in: scratch)
        guard attach.status == 0 else { try skipUnlessRequired("no loop device: " + attach.summary) }
        let loop = attach.out.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? runProcess(["/usr/bin/env", "losetup", "-d", loop], in: scratch) }
        let report = try copy(loop, scratch.file("from-loop.raw"))
        XCTAssertEqual(report.source.format, "vdi")
        XCTAssertEqual(report.source.sha256, try sha256sum(raw, in: scratch))
    }

    /// An NBD export named by a URI (here a qemu-nbd this test runs) is read the same way.
    func testNBDURISource() throws {
        let qcow = try makeContainer("served.qcow2", format: "qcow2", size: 32 * Self.M, writes: ["write -P 0x77 3M 5M"])
        let raw = try converted(qcow, format: "qcow2")
        let socket = scratch.file("nbd.sock")
        let pidFile = scratch.file("nbd.pid")
        _ = try tool(["qemu-nbd", "--fork", "--persistent", "--read-only", "--pid-file=\(pidFile)", "--socket=\(socket)",
                      "-f", "qcow2", qcow])
        defer {
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                kill(pid, SIGTERM)
                for _ in 0..<100 where isAlive(pid) { usleep(20_000) }
            }
        }
        let uri = "nbd+unix:///?socket=\(socket)"
        let dst = scratch.file("from-nbd.raw")
        let report = try copy(uri, dst)
        XCTAssertEqual(report.source.format, "nbd")
        XCTAssertEqual(report.source.sha256, try sha256sum(raw, in: scratch))
        XCTAssertLessThanOrEqual(try XCTUnwrap(report.source.bytesRead), 6 * UInt64(Self.M), "zero extents are not read")
        let (v, vr) = try verify(uri)
        XCTAssertEqual(v.status, 0, v.summary)
        XCTAssertEqual(vr?.format, "nbd")
    }

    /// A qemu-nbd killed in the middle of a copy: the copy fails naming the container and the
    /// offset, nothing is marked complete, and --resume finishes it with the right digest.
    /// Does `act` once `dst` holds `bytes` while `run` still runs (until `act` says it could);
    /// false when the run ended first.
    private func once(_ dst: String, holds bytes: UInt64, during run: Background, _ act: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(60)
        while run.isRunning && Date() < deadline {
            if fileSize(dst) >= bytes && act() { return true }
            usleep(2_000)
        }
        return false
    }

    /// A 256 MiB VDI with 192 MiB of data, and the raw disk it holds.
    private func makeBigVDI() throws -> (vdi: String, raw: String) {
        let base = scratch.file("big.raw")
        try writeImage(base, [.random(160 * Self.M), .zeros(64 * Self.M), .random(32 * Self.M)], seed: 1111)
        let vdi = scratch.file("big.vdi")
        _ = try tool(["qemu-img", "convert", "-f", "raw", "-O", "vdi", base, vdi])
        return (vdi, base)
    }

    func testServerDyingMidCopyFailsAndResumeFinishes() throws {
        let (vdi, base) = try makeBigVDI()
        let dst = scratch.file("big-copy.raw")
        let copyRun = try start([TestPaths.ferry, "copy", vdi, dst, "--progress", "none", "--checkpoint", "16M", "--ledger", ledger],
                                in: scratch)
        // Kill the server once the copy is under way.
        let killed = once(dst, holds: 48 * UInt64(Self.M), during: copyRun) {
            guard let server = strayServers().first, let pid = Int32(server.prefix(while: { $0 != ":" })) else { return false }
            kill(pid, SIGKILL)
            return true
        }
        let r = copyRun.wait()
        guard killed else {
            XCTFail("the copy ended before its qemu-nbd could be killed: " + r.summary)
            return
        }
        XCTAssertEqual(r.status, 4, r.summary)
        let last = r.errLines.last ?? ""
        XCTAssertTrue(last.contains(vdi) && last.contains("offset") && last.contains("qemu-nbd"), r.summary)
        let resumed = try copy(vdi, dst, ["--resume"])
        XCTAssertNotNil(resumed.resumedFromChunk, "the copy resumed from a checkpoint")
        XCTAssertEqual(resumed.source.sha256, try sha256sum(base, in: scratch))
        XCTAssertTrue(try sameBytes(dst, base, in: scratch))
    }

    /// Ctrl-C at the terminal (SIGINT to ferry's whole process group) stops the copy cleanly at a
    /// checkpoint: the server ferry started is in a session of its own, so it is not killed under
    /// the copy, and it is gone when ferry is. --resume finishes with the right digest.
    func testCtrlCStopsAContainerCopyCleanly() throws {
        let (vdi, base) = try makeBigVDI()
        let dst = scratch.file("big-copy.raw")
        let copyRun = try start(["/usr/bin/setsid", TestPaths.ferry, "copy", vdi, dst, "--progress", "none",
                                 "--checkpoint", "16M", "--ledger", ledger], in: scratch)
        let sent = once(dst, holds: 48 * UInt64(Self.M), during: copyRun) {
            kill(-copyRun.pid, SIGINT)
            return true
        }
        let r = copyRun.wait()
        guard sent else {
            XCTFail("the copy ended before it could be interrupted: " + r.summary)
            return
        }
        XCTAssertEqual(r.status, 130, r.summary)
        XCTAssertFalse(r.stderr.contains("qemu-nbd"), "the server must not have died under the copy: " + r.summary)
        let resumed = try copy(vdi, dst, ["--resume"])
        XCTAssertGreaterThanOrEqual(resumed.resumedFromChunk ?? 0, 32, "the copy resumed near where it stopped, not from its start")
        XCTAssertEqual(resumed.source.sha256, try sha256sum(base, in: scratch))
        XCTAssertTrue(try sameBytes(dst, base, in: scratch))
    }

    /// Over ssh: a push from a local VDI, and a pull of a VDI on the far host, read the disk
    /// inside it at the host holding it.
    func testContainerOverSSHPushAndPull() throws {
        let sshd: PrivateSSHD
        do { sshd = try PrivateSSHD() } catch let e as SSHDUnavailable { try skipUnlessRequired("no sshd: \(e.reason)") }
        defer { sshd.stop() }
        let options = remoteOptions(sshd.rsh)
        let vdi = try makeContainer("far.vdi", format: "vdi", size: 64 * Self.M, writes: Self.writes)
        let raw = try converted(vdi, format: "vdi")
        let digest = try sha256sum(raw, in: scratch)

        let far = scratch.file("pushed.raw")
        let push = try ferry(["copy", vdi, "\(sshd.host):\(far)", "--json", "--progress", "none", "--ledger", ledger] + options)
        XCTAssertEqual(push.status, 0, push.summary)
        let pj = try decode(CopyJSON.self, push.stdout)
        XCTAssertEqual(pj.source.format, "vdi")
        XCTAssertEqual(pj.destination.sha256, digest)
        XCTAssertTrue(try sameBytes(far, raw, in: scratch))

        let here = scratch.file("pulled.raw")
        let pull = try ferry(["copy", "\(sshd.host):\(vdi)", here, "--json", "--progress", "none", "--ledger", ledger] + options)
        XCTAssertEqual(pull.status, 0, pull.summary)
        let lj = try decode(CopyJSON.self, pull.stdout)
        XCTAssertEqual(lj.source.format, "vdi")
        XCTAssertLessThanOrEqual(Double(try XCTUnwrap(lj.source.bytesRead)), 1.1 * Double(try allocated(vdi, format: "vdi")))
        XCTAssertEqual(lj.destination.sha256, digest)
        XCTAssertTrue(try sameBytes(here, raw, in: scratch))
    }
}
