import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A private sshd on 127.0.0.1 for the SSH tests: its own host key, client key, config and port,
/// started once for the class and stopped at its end.
final class PrivateSSHD {
    let dir: Scratch
    let port: Int
    let clientKey: String
    let user: String
    private var process: Background?

    /// Starts sshd, or throws a reason it cannot run here.
    init() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd") else {
            throw SSHDUnavailable(reason: "/usr/sbin/sshd is not installed (apt-get install openssh-server)")
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh") else {
            throw SSHDUnavailable(reason: "/usr/bin/ssh is not installed (apt-get install openssh-client)")
        }
        dir = Scratch("sshd")
        user = String(cString: getpwuid(geteuid())!.pointee.pw_name)
        let hostKey = dir.file("host_ed25519")
        clientKey = dir.file("client_ed25519")
        for key in [hostKey, clientKey] {
            let r = try runProcess(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], in: dir)
            guard r.status == 0 else { throw SSHDUnavailable(reason: "ssh-keygen failed: \(r.summary)") }
        }
        try FileManager.default.copyItem(atPath: clientKey + ".pub", toPath: dir.file("authorized_keys"))
        port = try Self.freePort()
        let config = """
            ListenAddress 127.0.0.1
            Port \(port)
            HostKey \(hostKey)
            AuthorizedKeysFile \(dir.file("authorized_keys"))
            PidFile \(dir.file("pid"))
            StrictModes no
            UsePAM no
            PermitRootLogin yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no

            """
        try config.write(toFile: dir.file("sshd_config"), atomically: true, encoding: .utf8)
        if geteuid() == 0 { try? FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true) }
        let sshd = try start(["/usr/sbin/sshd", "-D", "-e", "-f", dir.file("sshd_config")], in: dir)
        process = sshd
        // Wait until it accepts connections (or died).
        var up = false
        for _ in 0..<200 where sshd.isRunning {
            if Self.canConnect(port) { up = true; break }
            usleep(50_000)
        }
        guard up else {
            stop()
            throw SSHDUnavailable(reason: "sshd did not start: \(log)")
        }
        let probe = try runProcess(["/usr/bin/ssh"] + sshOptions + ["\(user)@127.0.0.1", "true"], in: dir, timeout: 60)
        guard probe.status == 0 else {
            stop()
            throw SSHDUnavailable(reason: "ssh to the private sshd failed: \(probe.summary)\nsshd log: \(log)")
        }
    }

    var log: String { process.map { String(decoding: readAll($0.errPath), as: UTF8.self) } ?? "" }

    var sshOptions: [String] {
        ["-o", "Compression=no", "-p", String(port), "-i", clientKey, "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
    }

    /// ferry's -e/--rsh for this sshd.
    var rsh: String { (["ssh"] + sshOptions).joined(separator: " ") }

    var host: String { "\(user)@127.0.0.1" }

    func stop() {
        if let p = process, p.isRunning {
            p.signal(SIGTERM)
            _ = p.wait(timeout: 10)
        }
        process = nil
        dir.remove()
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SSHDUnavailable(reason: "socket() failed") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        guard bound == 0 else { throw SSHDUnavailable(reason: "cannot bind 127.0.0.1") }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    static func canConnect(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return r == 0
    }
}

struct SSHDUnavailable: Error { var reason: String }

/// Copies and verifies over real ssh to a private sshd on 127.0.0.1.
final class SSHTests: FerryTestCase {
    // One sshd for the whole class; XCTest runs a class's tests one after another on one thread.
    nonisolated(unsafe) private static var sshd: PrivateSSHD?
    nonisolated(unsafe) private static var unavailable: String?

    override class func tearDown() {
        sshd?.stop()
        sshd = nil
        super.tearDown()
    }

    private var server: PrivateSSHD!

    override func setUpWithError() throws {
        try super.setUpWithError()
        if Self.sshd == nil && Self.unavailable == nil {
            do { Self.sshd = try PrivateSSHD() } catch let e as SSHDUnavailable { Self.unavailable = e.reason }
        }
        guard let s = Self.sshd else { try skipUnlessRequired("no sshd for the SSH tests: \(Self.unavailable ?? "?")") }
        server = s
    }

    private var sshOptions: [String] { remoteOptions(server.rsh) }

    private func remote(_ path: String) -> String { "\(server.host):\(path)" }

    func testPushMixedImage() throws {
        let src = scratch.file("disk.raw")
        let far = scratch.file("far.raw")
        try writeImage(src, mixedRegions(mib: 64), seed: 707)
        let r = try copy(src, remote(far), sshOptions)
        XCTAssertTrue(try sameBytes(src, far, in: scratch))
        let reference = try sha256sum(src, in: scratch)
        XCTAssertEqual(r.source.sha256, reference)
        XCTAssertEqual(r.destination.sha256, reference)
        XCTAssertTrue(r.digestsMatch)
        XCTAssertEqual(r.destination.host, server.host)
        XCTAssertEqual(r.zeroChunks, 7 * 3 + 7)
        XCTAssertEqual(r.zeroFrames, r.zeroChunks)
        XCTAssertLessThan(allocatedBytes(far), fileSize(far), "the far destination is not sparse")
        let independent = try chunkList(src, chunkSize: 1 << 20, in: scratch)
        XCTAssertEqual(try export(r.source.imageId, ledger: ledger), independent)
        XCTAssertEqual(try export(r.destination.imageId, ledger: farLedger), independent)
    }

    func testPullMixedImage() throws {
        let far = scratch.file("far.raw")
        let dst = scratch.file("dst.raw")
        try writeImage(far, mixedRegions(mib: 64), seed: 808)
        let r = try copy(remote(far), dst, sshOptions + ["--compress"])
        XCTAssertTrue(try sameBytes(far, dst, in: scratch))
        let reference = try sha256sum(far, in: scratch)
        XCTAssertEqual(r.source.sha256, reference)
        XCTAssertEqual(r.destination.sha256, reference)
        XCTAssertTrue(r.digestsMatch)
        XCTAssertEqual(r.zeroFrames, r.zeroChunks)
        XCTAssertGreaterThan(r.zeroChunks, 0)
        let independent = try chunkList(far, chunkSize: 1 << 20, in: scratch)
        XCTAssertEqual(try export(r.destination.imageId, ledger: ledger), independent)
        XCTAssertEqual(try export(r.remote?.imageId, ledger: farLedger), independent)
    }

    func testRemoteVerifyFindsDamage() throws {
        let src = scratch.file("disk.raw")
        let far = scratch.file("far.raw")
        try writeImage(src, mixedRegions(mib: 16), seed: 909)
        let p = try copy(src, remote(far), sshOptions)

        let ok = try ferry(["verify", remote(far), "--json", "--progress", "none", "--ledger", ledger] + sshOptions)
        XCTAssertEqual(ok.status, 0, ok.summary)
        if ok.status == 0 {
            let v = try decode(VerifyJSON.self, ok.stdout)
            XCTAssertEqual(v.status, "ok")
            XCTAssertEqual(v.imageId, p.destination.imageId)
            XCTAssertEqual(v.chunks, 16)
        }

        // Damage chunk 5 and chunk 9 on the far side.
        try flipByte(far, at: 5 * (1 << 20) + 77)
        try flipByte(far, at: 9 * (1 << 20) + 1)
        let bad = try ferry(["verify", remote(far), "--json", "--progress", "none", "--ledger", ledger] + sshOptions)
        XCTAssertEqual(bad.status, 1, bad.summary)
        guard bad.status == 1 else { return }
        let v = try decode(VerifyJSON.self, bad.stdout)
        XCTAssertEqual(v.status, "corrupt")
        XCTAssertEqual(v.host, server.host)
        XCTAssertEqual(v.badChunks, 2)
        XCTAssertEqual(v.badRanges, [
            BadRangeJSON(offset: 5 << 20, length: 1 << 20, firstChunk: 5, lastChunk: 5),
            BadRangeJSON(offset: 9 << 20, length: 1 << 20, firstChunk: 9, lastChunk: 9),
        ])
        // The far ledger recorded the run and its findings.
        let show = try ferry(["ledger", "show", String(v.imageId), "--json", "--ledger", farLedger])
        XCTAssertEqual(show.status, 0, show.summary)
        let shown = try decode(LedgerShowJSON.self, show.stdout)
        let run = shown.runs.first { $0.run.id == v.runId }
        XCTAssertEqual(run?.run.result, "corrupt")
        XCTAssertEqual(run?.findings.count, 2)
    }

    /// The third story over real ssh: audit finds damage, resend repairs just it, audit is clean.
    func testResendRepairsTheFarDestination() throws {
        let src = scratch.file("disk.raw")
        let far = scratch.file("far.raw")
        try writeImage(src, mixedRegions(mib: 16), seed: 910)
        _ = try copy(src, remote(far), sshOptions)
        try flipByte(far, at: 2 * (1 << 20) + 5)
        try flipByte(far, at: 14 * (1 << 20) + 4321)
        let r = try ferry(["resend", "--verify", src, remote(far), "--json", "--progress", "none", "--ledger", ledger] + sshOptions)
        XCTAssertEqual(r.status, 0, r.summary)
        XCTAssertTrue(r.out.contains("\"repairedChunks\":2"), r.summary)
        XCTAssertTrue(r.out.contains("\"bytesRead\":\(2 << 20)"), "the source read just the two bad chunks: " + r.summary)
        let after = try ferry(["verify", remote(far), "--progress", "none", "--ledger", ledger] + sshOptions)
        XCTAssertEqual(after.status, 0, after.summary)
        XCTAssertEqual(try sha256sum(far, in: scratch), try sha256sum(src, in: scratch))
    }

    func testUnreachableHost() throws {
        // A port nothing listens on: ssh fails, ferry says so with exit 7.
        let src = scratch.file("src")
        try writeRandom(src, size: 1000, seed: 6)
        let closedPort = try PrivateSSHD.freePort()
        let rsh = server.rsh.replacingOccurrences(of: "-p \(server.port)", with: "-p \(closedPort)")
        let r = try ferry(["copy", src, remote(scratch.file("far")), "--progress", "none", "--ledger", ledger] + remoteOptions(rsh))
        XCTAssertEqual(r.status, 7, r.summary)
        let last = r.errLines.last ?? ""
        XCTAssertTrue(last.hasPrefix("ferry: "), r.summary)
        XCTAssertTrue(last.contains("Connection refused"), "the message should say what ssh said: " + r.summary)
        // ssh ends its lines with CR LF; a CR inside ferry's message sends a terminal's cursor back
        // to the start of the line, and the hint then overwrites the message.
        XCTAssertFalse(last.unicodeScalars.contains("\r"), "the 'ferry:' line carries a carriage return from ssh's output: \(last.debugDescription)")
        XCTAssertFalse(exists(scratch.file("far")))
    }
}
