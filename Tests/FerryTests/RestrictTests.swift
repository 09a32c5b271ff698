import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `ferry serve --restrict-to DIR --read-only` as an authorized_keys forced command. The remote
/// shell here is a script that ignores the command the client asks for and runs its own serve
/// command line, as sshd does with `command=`; one test runs a real sshd with such a key.
final class RestrictTests: FerryTestCase {
    private var allowed: String { scratch.file("allowed") }
    private var outside: String { scratch.file("outside") }
    /// The ledger serve uses when the request names none (FERRY_LEDGER in the forced command).
    private var serveLedger: String { scratch.file("serve.db") }

    override func setUpWithError() throws {
        try super.setUpWithError()
        for dir in [allowed, outside] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
    }

    /// The forced command: `ferry serve ARGS` whatever the client asked for.
    private func forced(_ args: [String]) throws -> String {
        let script = scratch.file("forced-\(UUID().uuidString).sh")
        let line = "FERRY_LEDGER=\(shq(serveLedger)) exec \(shq(TestPaths.ferry)) serve " + args.map(shq).joined(separator: " ")
        try "#!/bin/sh\n# ignores the host and the command, as sshd's command= does\n\(line)\n".write(toFile: script, atomically: true, encoding: .utf8)
        return "sh " + shq(script)
    }

    /// Client options for the forced command, with the far ledger `farLedger` (nil: serve's own).
    private func restricted(_ serveArgs: [String], farLedger: String? = nil) throws -> [String] {
        ["-e", try forced(serveArgs)] + (farLedger.map { ["--remote-ledger", $0] } ?? [])
    }

    private var restrictToAllowed: [String] { ["--restrict-to", allowed] }

    private func run(_ args: [String]) throws -> RunResult {
        try ferry(args + ["--progress", "none", "--ledger", ledger])
    }

    /// Exit 5, and the client's last line is the far refusal naming `path`.
    private func assertRefused(_ r: RunResult, naming path: String, status: Int32 = 5, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, status, r.summary, file: file, line: line)
        let last = r.errLines.last ?? ""
        XCTAssertTrue(last.hasPrefix("ferry: remote: "), "the last line should be the far refusal: " + r.summary, file: file, line: line)
        XCTAssertTrue(last.contains(path), "the refusal should name \(path): " + r.summary, file: file, line: line)
    }

    private func contents(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
    }

    func testAllowedPushAndPullEndToEnd() throws {
        // The folder is named through a symlink: serve resolves it too.
        let alias = scratch.file("alias")
        try FileManager.default.createSymbolicLink(atPath: alias, withDestinationPath: allowed)
        let src = scratch.file("src.raw")
        try writeImage(src, mixedRegions(mib: 16), seed: 41)
        let options = try restricted(["--restrict-to", alias], farLedger: alias + "/far.db")
        let push = try copy(src, "localhost:" + alias + "/disk.raw", options)
        XCTAssertTrue(push.digestsMatch)
        XCTAssertTrue(try sameBytes(src, allowed + "/disk.raw", in: scratch))
        XCTAssertEqual(try export(push.destination.imageId, ledger: allowed + "/far.db"), try chunkList(src, chunkSize: 1 << 20, in: scratch))
        // Serve's own ledger (the request names none) may lie outside the folders.
        let back = scratch.file("back.raw")
        let pull = try copy("localhost:" + allowed + "/disk.raw", back, try restricted(restrictToAllowed))
        XCTAssertTrue(pull.digestsMatch)
        XCTAssertTrue(try sameBytes(src, back, in: scratch))
        XCTAssertTrue(exists(serveLedger))
    }

    func testPushOutsideIsRefusedBeforeAnythingIsCreated() throws {
        let src = scratch.file("src.raw")
        try writeRandom(src, size: 3 << 20, seed: 42)
        let dst = outside + "/disk.raw"
        let r = try run(["copy", src, "localhost:" + dst] + (try restricted(restrictToAllowed, farLedger: allowed + "/far.db")))
        assertRefused(r, naming: dst)
        XCTAssertTrue(r.stderr.contains(allowed), "the refusal names the allowed folder: " + r.summary)
        XCTAssertEqual(contents(outside), [])
        XCTAssertEqual(contents(allowed), [], "no far ledger is created for a refused request")
        XCTAssertFalse(exists(serveLedger))
        // A folder that merely starts with the allowed one's name is outside it.
        let sibling = allowed + "2"
        try FileManager.default.createDirectory(atPath: sibling, withIntermediateDirectories: true)
        assertRefused(try run(["copy", src, "localhost:" + sibling + "/disk.raw"] + (try restricted(restrictToAllowed))), naming: sibling)
        assertRefused(try run(["copy", src, "localhost:" + allowed + "/../outside/disk.raw"] + (try restricted(restrictToAllowed))),
                      naming: "'..'")
        XCTAssertEqual(contents(outside), [])
        XCTAssertEqual(contents(sibling), [])
    }

    func testSymlinksLeavingTheFolderAreRefused() throws {
        let src = scratch.file("src.raw")
        try writeRandom(src, size: 2 << 20, seed: 43)
        let target = outside + "/target.raw"
        try writeRandom(target, size: 1 << 20, seed: 44)
        let before = try sha256sum(target, in: scratch)
        try FileManager.default.createSymbolicLink(atPath: allowed + "/link.raw", withDestinationPath: target)
        try FileManager.default.createSymbolicLink(atPath: allowed + "/dangling.raw", withDestinationPath: outside + "/new.raw")
        try FileManager.default.createSymbolicLink(atPath: allowed + "/out", withDestinationPath: outside)
        let options = try restricted(restrictToAllowed)

        let push = try run(["copy", src, "localhost:" + allowed + "/link.raw"] + options)
        assertRefused(push, naming: allowed + "/link.raw")
        XCTAssertTrue(push.stderr.contains("resolves to \(target)"), push.summary)
        XCTAssertEqual(try sha256sum(target, in: scratch), before, "the link's target was written")
        let pull = try run(["copy", "localhost:" + allowed + "/link.raw", scratch.file("stolen.raw")] + options)
        assertRefused(pull, naming: allowed + "/link.raw")
        // A dangling link would be followed by the create; a linked folder leads outside too.
        assertRefused(try run(["copy", src, "localhost:" + allowed + "/dangling.raw"] + options), naming: allowed + "/dangling.raw")
        assertRefused(try run(["copy", src, "localhost:" + allowed + "/out/new.raw"] + options), naming: allowed + "/out/new.raw")
        XCTAssertEqual(contents(outside), ["target.raw"])
        XCTAssertFalse(exists(scratch.file("stolen.raw")))
    }

    func testLedgerOutsideIsRefused() throws {
        let src = scratch.file("src.raw")
        try writeRandom(src, size: 2 << 20, seed: 45)
        let farLedger = outside + "/far.db"
        let r = try run(["copy", src, "localhost:" + allowed + "/disk.raw"] + (try restricted(restrictToAllowed, farLedger: farLedger)))
        assertRefused(r, naming: "ledger " + farLedger)
        XCTAssertEqual(contents(outside), [])
        XCTAssertEqual(contents(allowed), [], "the image is not created when its ledger is refused")
    }

    func testPullOfTheHostKeyIsRefused() throws {
        let key = FileManager.default.fileExists(atPath: "/etc/ssh/ssh_host_ed25519_key") ? "/etc/ssh/ssh_host_ed25519_key" : "/etc/passwd"
        let stolen = scratch.file("key")
        let r = try run(["copy", "localhost:" + key, stolen, "--as-is"] + (try restricted(restrictToAllowed)))
        assertRefused(r, naming: key)
        XCTAssertFalse(exists(stolen))
        let v = try run(["verify", "localhost:" + key] + (try restricted(restrictToAllowed)))
        assertRefused(v, naming: key)
    }

    func testReadOnlyRefusesWritesAndServesReads() throws {
        let src = scratch.file("src.raw")
        try writeImage(src, mixedRegions(mib: 16), seed: 46)
        let far = allowed + "/disk.raw"
        let farLedger = allowed + "/far.db"
        _ = try copy(src, "localhost:" + far, remoteOptions(farLedger: farLedger))   // an unrestricted serve
        try flipByte(far, at: 3 << 20)
        let damaged = try sha256sum(far, in: scratch)
        let readOnly = try restricted(restrictToAllowed + ["--read-only"], farLedger: farLedger)

        let push = try run(["copy", src, "localhost:" + allowed + "/new.raw"] + readOnly)
        assertRefused(push, naming: allowed + "/new.raw")
        XCTAssertTrue(push.stderr.contains("read-only"), push.summary)
        XCTAssertFalse(exists(allowed + "/new.raw"))
        let resend = try run(["resend", src, "localhost:" + far] + readOnly)
        assertRefused(resend, naming: far)
        XCTAssertEqual(try sha256sum(far, in: scratch), damaged, "a read-only serve repaired its image")

        // Verify runs (and finds the damage); so does a pull, and a resend that reads here.
        let (v, report) = try verify("localhost:" + far, readOnly)
        XCTAssertEqual(v.status, 1, v.summary)
        XCTAssertEqual(report?.badChunks, 1)
        let dst = scratch.file("pulled.raw")
        let pull = try copy("localhost:" + far, dst, readOnly)
        XCTAssertTrue(pull.digestsMatch)
        XCTAssertTrue(try sameBytes(far, dst, in: scratch))
        try flipByte(dst, at: 5 << 20)
        let repair = try run(["resend", "--verify", "localhost:" + far, dst] + readOnly)
        XCTAssertEqual(repair.status, 0, repair.summary)
        XCTAssertTrue(try sameBytes(far, dst, in: scratch))
    }

    func testMisconfiguredForcedCommandSaysSo() throws {
        let src = scratch.file("src.raw")
        try writeRandom(src, size: 1 << 20, seed: 47)
        let r = try run(["copy", src, "localhost:" + allowed + "/disk.raw"] + (try restricted(["--restrict-to", scratch.file("missing")])))
        assertRefused(r, naming: "--restrict-to " + scratch.file("missing"), status: 64)
        XCTAssertEqual(contents(allowed), [])
    }

    /// A zvol is a root-owned link in /dev/zvol/POOL to /dev/zdN: a loop device stands in for it.
    func testRootOwnedLinkToABlockDeviceInTheFolder() throws {
        guard geteuid() == 0 else { try skipUnlessRequired("needs root for a loop device and a root-owned link") }
        let backing = scratch.file("backing.img")
        try writeImage(backing, [.fill(0xA5, 4 << 20)])
        let attach = try runProcess(["/usr/bin/env", "losetup", "-f", "--show", backing], in: scratch)
        let dev = attach.out.trimmingCharacters(in: .whitespacesAndNewlines)
        guard attach.status == 0, dev.hasPrefix("/dev/") else { try skipUnlessRequired("cannot attach a loop device: \(attach.summary)") }
        defer { _ = try? runProcess(["/usr/bin/env", "losetup", "-d", dev], in: scratch) }
        let zvols = scratch.file("zvol")
        try FileManager.default.createDirectory(atPath: zvols, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: zvols + "/vm-1", withDestinationPath: dev)
        let src = scratch.file("src.raw")
        try writeImage(src, [.random(2 << 20), .zeros(1 << 20), .random(1 << 20)], seed: 48)

        let options = try restricted(["--restrict-to", zvols], farLedger: zvols + "/far.db")
        let r = try copy(src, "localhost:" + zvols + "/vm-1", options)
        XCTAssertTrue(r.digestsMatch)
        XCTAssertEqual(try sha256sum(dev, in: scratch), try sha256sum(src, in: scratch))
        // The device itself is outside the folder.
        assertRefused(try run(["copy", src, "localhost:" + dev] + options), naming: dev)
    }

    /// The real thing: an authorized_keys line with command="ferry serve --restrict-to ...".
    func testRealSSHForcedCommand() throws {
        let sshd: PrivateSSHD
        do { sshd = try PrivateSSHD() } catch let e as SSHDUnavailable { try skipUnlessRequired("no sshd: \(e.reason)") }
        defer { sshd.stop() }
        let key = try String(contentsOfFile: sshd.clientKey + ".pub", encoding: .utf8)
        let command = "FERRY_LEDGER=\(serveLedger) \(TestPaths.ferry) serve --restrict-to \(allowed)"
        try "command=\"\(command)\",restrict \(key)".write(toFile: sshd.dir.file("authorized_keys"), atomically: true, encoding: .utf8)
        let src = scratch.file("src.raw")
        try writeRandom(src, size: 3 << 20, seed: 49)
        let options = ["-e", sshd.rsh]

        let ok = try copy(src, sshd.host + ":" + allowed + "/disk.raw", options)
        XCTAssertTrue(ok.digestsMatch)
        XCTAssertTrue(try sameBytes(src, allowed + "/disk.raw", in: scratch))
        let refused = try run(["copy", src, sshd.host + ":" + outside + "/disk.raw"] + options)
        assertRefused(refused, naming: outside + "/disk.raw")
        XCTAssertEqual(contents(outside), [])
    }
}
