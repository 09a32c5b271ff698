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

    /// A 64 MiB VDI with the test's writes, the raw disk inside it, and that disk's SHA-256.
    private func sampleVDI(_ name: String) throws -> (vdi: String, raw: String, digest: String) {
        let vdi = try makeContainer(name, format: "vdi", size: 64 * Self.M, writes: Self.writes)
        let raw = try converted(vdi, format: "vdi")
        return (vdi, raw, try sha256sum(raw, in: scratch))
    }

    /// Over ssh: a push from a local VDI, and a pull of a VDI on the far host, read the disk
    /// inside it at the host holding it.
    func testContainerOverSSHPushAndPull() throws {
        let sshd: PrivateSSHD
        do { sshd = try PrivateSSHD() } catch let e as SSHDUnavailable { try skipUnlessRequired("no sshd: \(e.reason)") }
        defer { sshd.stop() }
        let options = remoteOptions(sshd.rsh)
        let (vdi, raw, digest) = try sampleVDI("far.vdi")

        let far = scratch.file("pushed.raw")
        let pj = try copy(vdi, "\(sshd.host):\(far)", options)
        XCTAssertEqual(pj.source.format, "vdi")
        XCTAssertEqual(pj.destination.sha256, digest)
        XCTAssertTrue(try sameBytes(far, raw, in: scratch))

        let here = scratch.file("pulled.raw")
        let lj = try copy("\(sshd.host):\(vdi)", here, options)
        XCTAssertEqual(lj.source.format, "vdi")
        XCTAssertLessThanOrEqual(Double(try XCTUnwrap(lj.source.bytesRead)), 1.1 * Double(try allocated(vdi, format: "vdi")))
        XCTAssertEqual(lj.destination.sha256, digest)
        XCTAssertTrue(try sameBytes(here, raw, in: scratch))
    }

    // MARK: qcow2 destinations

    /// Guest bytes a qcow2 holds data for, and `qemu-img check` passes.
    private func checkedQcow2(_ path: String, file: StaticString = #filePath, line: UInt = #line) throws -> UInt64 {
        _ = try tool(["qemu-img", "check", "-q", "-f", "qcow2", path], file: file, line: line)
        return try allocated(path, format: "qcow2")
    }

    /// VDI to qcow2, as a Proxmox directory storage keeps disks: ferry creates the image with the
    /// disk's size, the disk inside it is the VDI's, zero chunks are not allocated, the ledger
    /// records the destination as qcow2; verify reads it through qemu-nbd and finds exactly a
    /// chunk changed inside it; resend repairs it through qemu-nbd.
    func testQcow2DestinationIsCreatedVerifiedAndRepaired() throws {
        let vdi = try makeContainer("vm-100.vdi", format: "vdi", size: 64 * Self.M, writes: Self.writes)
        let raw = try converted(vdi, format: "vdi")
        let digest = try sha256sum(raw, in: scratch)
        let dst = scratch.file("vm-100-disk-0.qcow2")
        let report = try copy(vdi, dst)
        XCTAssertEqual(report.destination.format, "qcow2")
        XCTAssertEqual(report.destination.sha256, digest)
        XCTAssertTrue(report.digestsMatch)
        XCTAssertTrue(try sameBytes(try converted(dst, format: "qcow2"), raw, in: scratch), "the qcow2 holds the VDI's disk")
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.file(".vm-100-disk-0.qcow2.ferry-partial")))
        let info = try jsonObject(try tool(["qemu-img", "info", "--output=json", dst]))
        XCTAssertEqual(info["format"] as? String, "qcow2")
        XCTAssertEqual(info["virtual-size"] as? Int, 64 * Self.M, "created with the disk's size")
        // Chunks 1-3, 11 and 63 hold data; zero chunks (chunk 10 too) are left unallocated.
        let data = try checkedQcow2(dst)
        XCTAssertLessThanOrEqual(data, 5 * UInt64(Self.M), "only data chunks are allocated in the qcow2")
        XCTAssertGreaterThanOrEqual(data, 3 * UInt64(Self.M))

        let show = try ferry(["ledger", "show", String(try XCTUnwrap(report.destination.imageId)), "--json", "--ledger", ledger])
        XCTAssertEqual(show.status, 0, show.summary)
        let container = try XCTUnwrap((try jsonObject(show)["image"] as? [String: Any])?["container"] as? [String: Any], show.out)
        XCTAssertEqual(container["format"] as? String, "qcow2")

        let (ok, okReport) = try verify(dst)
        XCTAssertEqual(ok.status, 0, ok.summary)
        XCTAssertEqual(okReport?.format, "qcow2")
        XCTAssertEqual(okReport?.imageId, report.destination.imageId)
        _ = try tool(["qemu-io", "-f", "qcow2", "-c", "write -P 0xee 2M 4k", dst])
        let (bad, badReport) = try verify(dst)
        XCTAssertEqual(bad.status, 1, bad.summary)
        XCTAssertEqual(badReport?.badRanges, [BadRangeJSON(offset: 2 * UInt64(Self.M), length: UInt64(Self.M), firstChunk: 2, lastChunk: 2)])

        let resend = try ferry(["resend", vdi, dst, "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(resend.status, 0, resend.summary)
        XCTAssertFalse(resend.stderr.contains("is open in"), "ferry's own qemu-nbd is not a holder: " + resend.summary)
        XCTAssertTrue(try sameBytes(try converted(dst, format: "qcow2"), raw, in: scratch), "the repair went into the disk inside")
        _ = try checkedQcow2(dst)
        XCTAssertEqual(try verify(dst).0.status, 0)
    }

    /// What a qcow2 destination refuses, each before a byte is written: an existing qcow2 of
    /// another size, a .qcow2 file that is not a qcow2, a stream of unknown size, an image qemu
    /// holds a lock on (a running VM), an unknown format. An existing qcow2 of the right size is
    /// written in place, its zero chunks zeroed; --as-is copies a file's bytes, even to *.qcow2.
    func testQcow2DestinationRefusalsAndChoices() throws {
        let vdi = try makeContainer("src.vdi", format: "vdi", size: 64 * Self.M, writes: Self.writes)
        let raw = try converted(vdi, format: "vdi")

        let wrongSize = try makeContainer("small.qcow2", format: "qcow2", size: 32 * Self.M, writes: ["write -P 0x33 0 1M"])
        let before = try sha256sum(wrongSize, in: scratch)
        var r = try ferry(["copy", vdi, wrongSize, "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(r.status, 5, r.summary)
        XCTAssertTrue(r.stderr.contains("33554432") && r.stderr.contains("67108864"), r.summary)
        XCTAssertEqual(try sha256sum(wrongSize, in: scratch), before, "the wrong-size qcow2 is untouched")

        let notQcow2 = scratch.file("plain.qcow2")
        try writeImage(notQcow2, [.random(Self.M)], seed: 5)
        let plainBefore = try sha256sum(notQcow2, in: scratch)
        r = try ferry(["copy", vdi, notQcow2, "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(r.status, 5, r.summary)
        XCTAssertTrue(r.stderr.contains("not a qcow2 image"), r.summary)
        XCTAssertEqual(try sha256sum(notQcow2, in: scratch), plainBefore, "a file that is not a qcow2 is untouched")

        let streamed = scratch.file("streamed.qcow2")
        r = try ferry(["copy", "-", streamed, "--progress", "none", "--ledger", ledger], stdin: raw)
        XCTAssertEqual(r.status, 64, r.summary)
        XCTAssertTrue(r.stderr.contains("--size"), r.summary)
        XCTAssertFalse(FileManager.default.fileExists(atPath: streamed), "nothing was created")
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.file(".streamed.qcow2.ferry-partial")))
        // A disk of a size qcow2 cannot hold exactly (not whole 512-byte sectors) is refused
        // before anything is created, from a stream or a file.
        let odd = scratch.file("odd.raw")
        try writeImage(odd, [.random(1_000_001)], seed: 9)
        for extra in [["-", "--size", "1000001"], [odd]] {
            r = try ferry(["copy"] + [extra[0], scratch.file("odd.qcow2")] + extra.dropFirst() + ["--progress", "none", "--ledger", ledger],
                          stdin: odd)
            XCTAssertEqual(r.status, 5, r.summary)
            XCTAssertTrue(r.stderr.contains("512-byte sectors"), r.summary)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.contains("odd.qcow2") }, [])
        }
        r = try ferry(["copy", "-", streamed, "--size", "64M", "--json", "--progress", "none", "--ledger", ledger], stdin: raw)
        XCTAssertEqual(r.status, 0, r.summary)
        XCTAssertEqual(try decode(CopyJSON.self, r.stdout).destination.format, "qcow2")
        XCTAssertTrue(try sameBytes(try converted(streamed, format: "qcow2"), raw, in: scratch))

        // An existing qcow2 of the right size holding other data: written in place, and where the
        // source has zeros it now reads zeros.
        let reused = try makeContainer("reused.qcow2", format: "qcow2", size: 64 * Self.M,
                                       writes: ["write -P 0x77 0 64M"])
        let again = try copy(vdi, reused)
        XCTAssertEqual(again.destination.format, "qcow2")
        XCTAssertTrue(try sameBytes(try converted(reused, format: "qcow2"), raw, in: scratch), "old data under zero chunks was zeroed")
        XCTAssertLessThanOrEqual(try checkedQcow2(reused), 5 * UInt64(Self.M), "zeroed chunks were deallocated")

        // Held by another program: a qemu-nbd this test runs stands for a running VM.
        let held = try makeContainer("held.qcow2", format: "qcow2", size: 64 * Self.M, writes: [])
        let socket = scratch.file("holder.sock")
        _ = try tool(["qemu-nbd", "--fork", "--persistent", "--socket=\(socket)", "--pid-file=\(scratch.file("holder.pid"))",
                      "-f", "qcow2", held])
        let holder = Int32(try String(contentsOfFile: scratch.file("holder.pid"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        r = try ferry(["copy", vdi, held, "--progress", "none", "--ledger", ledger])
        kill(holder, SIGTERM)
        for _ in 0..<100 where kill(holder, 0) == 0 { usleep(20_000) }
        XCTAssertEqual(r.status, 5, r.summary)
        XCTAssertTrue(r.stderr.contains("in use by another program"), r.summary)
        XCTAssertEqual(try allocated(held, format: "qcow2"), 0, "nothing was written into the held image")

        // --as-is copies the VDI file's own bytes, to a file named .qcow2 too; --dest-format vdi is no format ferry writes.
        let asIs = scratch.file("asis.qcow2")
        let plain = try copy(vdi, asIs, ["--as-is"])
        XCTAssertEqual(plain.destination.format, "raw")
        XCTAssertTrue(try sameBytes(asIs, vdi, in: scratch))
        r = try ferry(["copy", vdi, scratch.file("x.vdi"), "--dest-format", "vdi", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(r.status, 64, r.summary)
        let forced = try copy(vdi, scratch.file("disk.img"), ["--dest-format", "qcow2"])
        XCTAssertEqual(forced.destination.format, "qcow2")
        XCTAssertTrue(try sameBytes(try converted(scratch.file("disk.img"), format: "qcow2"), raw, in: scratch))
    }

    /// A copy into a qcow2 whose qemu-nbd dies mid-way (SIGKILL) fails naming the image and the
    /// server; while it ran, a second copy onto the same qcow2 was refused (qemu's lock).
    /// --resume re-reads the copied chunks through a new server and
    /// finishes; a resume that would write the same file raw is refused.
    func testQcow2DestinationResumes() throws {
        let (vdi, base) = try makeBigVDI()
        let dst = scratch.file("big.qcow2")
        let partial = scratch.file(".big.qcow2.ferry-partial")
        let copyRun = try start([TestPaths.ferry, "copy", vdi, dst, "--progress", "none", "--checkpoint", "16M", "--ledger", ledger],
                                in: scratch)
        var second: RunResult?
        let killed = once(partial, holds: 48 * UInt64(Self.M), during: copyRun) {
            guard let server = strayServers().first(where: { $0.contains("big.qcow2") }),
                  let pid = Int32(server.prefix(while: { $0 != ":" })) else { return false }
            // Held still while the second copy tries, so the first cannot finish meanwhile. (The
            // second keeps a ledger of its own: the first may be stopped inside a transaction.)
            kill(copyRun.pid, SIGSTOP)
            second = try? ferry(["copy", vdi, dst, "--progress", "none", "--ledger", scratch.file("second.db")])
            kill(pid, SIGKILL)
            kill(copyRun.pid, SIGCONT)
            return true
        }
        let r = copyRun.wait()
        guard killed, let second else {
            XCTFail("the copy ended before its qemu-nbd could be killed: " + r.summary)
            return
        }
        XCTAssertEqual(second.status, 5, "a second writer is refused: " + second.summary)
        XCTAssertTrue(second.stderr.contains("in use by another program"), second.summary)
        XCTAssertEqual(r.status, 4, r.summary)
        let last = r.errLines.last ?? ""
        // (A write names its offset; the server may die under a flush instead.)
        XCTAssertTrue(last.contains(partial) && last.contains("qemu-nbd") && last.contains("is gone"), r.summary)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst), "an incomplete image never has the name a VM would boot")
        XCTAssertTrue(FileManager.default.fileExists(atPath: partial))
        let raw = try ferry(["copy", vdi, dst, "--resume", "--dest-format", "raw", "--progress", "none", "--ledger", ledger])
        XCTAssertEqual(raw.status, 5, raw.summary)
        XCTAssertTrue(raw.stderr.contains("as qcow2"), raw.summary)
        let resumed = try copy(vdi, dst, ["--resume"])
        XCTAssertNotNil(resumed.resumedFromChunk, "the copy resumed from a checkpoint")
        XCTAssertEqual(resumed.destination.sha256, try sha256sum(base, in: scratch))
        XCTAssertFalse(FileManager.default.fileExists(atPath: partial), "the complete image took its name")
        XCTAssertTrue(try sameBytes(try converted(dst, format: "qcow2"), base, in: scratch))
        // A server killed outright may leak clusters (exit 3), never corrupt the image (exit 2).
        let check = try runProcess(["/usr/bin/qemu-img", "check", "-q", "-f", "qcow2", dst], in: scratch)
        XCTAssertTrue([0, 3].contains(check.status), check.summary)
        XCTAssertEqual(try verify(dst).0.status, 0)
    }

    /// Durable means flushed through qemu: the server ferry writes a qcow2 through is traced, and
    /// it is asked to flush at every checkpoint and once after the last write, before the
    /// connection ends (so the image is never marked complete on unflushed writes). Zero chunks
    /// of a fresh image are not sent at all.
    func testQcow2WritesAreFlushedAtCheckpointsAndAtTheEnd() throws {
        let src = scratch.file("disk.raw")
        try writeImage(src, [.random(100 * Self.M), .zeros(56 * Self.M), .random(100 * Self.M)], seed: 77)
        let trace = scratch.file("nbd-trace")
        let wrapper = scratch.file("qemu-nbd-traced")
        try "#!/bin/sh\nexec /usr/bin/qemu-nbd --trace \"enable=nbd_co_receive_request_decode_type,file=\(trace)\" \"$@\"\n"
            .write(toFile: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper, 0o755)
        let dst = scratch.file("disk.qcow2")
        let r = try runProcess([TestPaths.ferry, "copy", src, dst, "--checkpoint", "64M", "--progress", "none", "--json", "--ledger", ledger],
                               in: scratch, env: ["FERRY_QEMU_NBD": wrapper])
        XCTAssertEqual(r.status, 0, r.summary)
        let requests = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
            .compactMap { line in line.range(of: "\\(([a-z ]+)\\)$", options: .regularExpression).map { String(line[$0].dropFirst().dropLast()) } }
        let flushes = requests.filter { $0 == "flush" }.count
        XCTAssertGreaterThanOrEqual(flushes, 4, "one flush per 64 MiB checkpoint of 256 MiB, and one at the end: \(Set(requests))")
        let lastWrite = try XCTUnwrap(requests.lastIndex(of: "write"))
        XCTAssertTrue(requests[lastWrite...].contains("flush"), "the last write is followed by a flush")
        XCTAssertEqual(requests.filter { $0 == "write" }.count, 200 * Self.M / (256 << 10), "data chunks only, in 256 KiB requests")
        XCTAssertFalse(requests.contains("write zeroes"), "a fresh image needs no zeroing")
        XCTAssertTrue(try sameBytes(try converted(dst, format: "qcow2"), src, in: scratch))
    }

    /// A far ferry that predates qcow2 destinations ignores --dest-format and would write raw
    /// bytes into the .qcow2 file: its Ready frame names no format, and the push stops before the
    /// first chunk, with nothing written there. Through the same relay, untouched, the push works.
    func testPushToAFarFerryThatCannotWriteQcow2IsRefused() throws {
        let src = scratch.file("small.raw")
        try writeImage(src, [.random(4 * Self.M), .zeros(4 * Self.M)], seed: 3)
        let far = scratch.file("far.qcow2")
        let old = try ferry(["copy", src, "localhost:" + far, "--progress", "none", "--ledger", ledger]
                            + remoteOptions(relayShell(["--drop-ready-key", "format"])))
        XCTAssertEqual(old.status, 5, old.summary)
        XCTAssertTrue(old.stderr.contains("does not know --dest-format"), old.summary)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.contains("far.qcow2") }, [],
                       "nothing was written at the far end")
        let now = try copy(src, "localhost:" + far, remoteOptions(relayShell(["--drop-ready-key", "none"])))
        XCTAssertEqual(now.destination.format, "qcow2")
        XCTAssertTrue(try sameBytes(try converted(far, format: "qcow2"), src, in: scratch))
    }

    /// Over ssh: a push into a qcow2 on the far host (as `ferry copy vm.vdi root@pve:...qcow2`),
    /// verified and repaired there; a pull into a local qcow2.
    func testQcow2DestinationOverSSH() throws {
        let sshd: PrivateSSHD
        do { sshd = try PrivateSSHD() } catch let e as SSHDUnavailable { try skipUnlessRequired("no sshd: \(e.reason)") }
        defer { sshd.stop() }
        let options = remoteOptions(sshd.rsh)
        let (vdi, raw, digest) = try sampleVDI("vm.vdi")

        let far = scratch.file("far-disk.qcow2")
        let pj = try copy(vdi, "\(sshd.host):\(far)", options)
        XCTAssertEqual(pj.destination.format, "qcow2")
        XCTAssertEqual(pj.destination.sha256, digest)
        XCTAssertTrue(try sameBytes(try converted(far, format: "qcow2"), raw, in: scratch))
        XCTAssertLessThanOrEqual(try checkedQcow2(far), 5 * UInt64(Self.M))

        _ = try tool(["qemu-io", "-f", "qcow2", "-c", "write -P 0xee 12M 4k", far])
        let farVerify = try ferry(["verify", "\(sshd.host):\(far)", "--json", "--progress", "none", "--ledger", ledger] + options)
        XCTAssertEqual(farVerify.status, 1, farVerify.summary)
        let resend = try ferry(["resend", vdi, "\(sshd.host):\(far)", "--progress", "none", "--ledger", ledger] + options)
        XCTAssertEqual(resend.status, 0, resend.summary)
        XCTAssertTrue(try sameBytes(try converted(far, format: "qcow2"), raw, in: scratch))

        let here = scratch.file("pulled.qcow2")
        let lj = try copy("\(sshd.host):\(vdi)", here, options)
        XCTAssertEqual(lj.destination.format, "qcow2")
        XCTAssertEqual(lj.destination.sha256, digest)
        XCTAssertTrue(try sameBytes(try converted(here, format: "qcow2"), raw, in: scratch))
    }
}
