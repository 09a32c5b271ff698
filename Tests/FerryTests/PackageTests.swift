import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The Debian package, as a Proxmox host without a Swift toolchain gets it: scripts/build-deb.sh
/// packages the binary under test (no second build), dpkg installs it into this system, and the
/// installed ferry runs in mount namespaces where the toolchain's folder is an empty tmpfs: on its
/// own, and at both ends of a copy over ssh to a private sshd started inside such a namespace.
/// Then dpkg removes it, and nothing of it may stay. Needs root (dpkg, mount).
final class PackageTests: FerryTestCase {
    private let installedFerry = "/usr/bin/ferry"
    private var root: String { TestPaths.packageRoot }

    /// Every file the package must install, besides the man pages.
    private let installedFiles = [
        "/usr/bin/ferry",
        "/usr/share/bash-completion/completions/ferry",
        "/usr/share/zsh/vendor-completions/_ferry",
        "/usr/share/fish/vendor_completions.d/ferry.fish",
        "/usr/share/doc/ferry/README.md.gz",
        "/usr/share/doc/ferry/copyright",
        "/usr/share/doc/ferry/changelog.Debian.gz",
        "/usr/share/doc/ferry/examples/systemd/ferry-audit.service",
        "/usr/share/doc/ferry/examples/systemd/ferry-audit.timer",
    ]

    /// man/*.1 of this tree: the package installs each as /usr/share/man/man1/NAME.gz.
    private var manPages: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root + "/man")) ?? [])
            .filter { $0.hasSuffix(".1") }.sorted()
    }

    /// Folders that hold a Swift toolchain here: /opt/swift, and the one `swift` on PATH belongs
    /// to (PREFIX of PREFIX/usr/bin/swift). The namespaces mount an empty tmpfs over each.
    private func toolchainFolders() throws -> [String] {
        var folders: [String] = []
        if exists("/opt/swift") { folders.append("/opt/swift") }
        let r = try sh("s=$(command -v swift) && readlink -f \"$s\"", in: scratch)
        let swift = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        if r.status == 0, swift.hasSuffix("/usr/bin/swift") {
            let prefix = String(swift.dropLast("/usr/bin/swift".count))
            if !prefix.isEmpty, !folders.contains(prefix) { folders.append(prefix) }
        }
        return folders
    }

    /// `sh -c` text that mounts an empty read-only tmpfs over each folder (the namespace's own).
    private func hideCommand(_ folders: [String]) -> String {
        folders.map { "mount -t tmpfs -o ro,size=4k ferry-no-swift \(shq($0))" }.joined(separator: " && ")
    }

    /// argv that runs `argv` in a new mount namespace with `folders` hidden.
    private func withoutToolchain(_ folders: [String], _ argv: [String]) -> [String] {
        ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
         (folders.isEmpty ? "" : hideCommand(folders) + " && ") + "exec \"$@\"", "sh"] + argv
    }

    /// The first version-looking word of a `ferry --version` text's first line.
    private func versionWord(_ text: String) -> String? {
        let first = text.split(separator: "\n").first.map(String.init) ?? ""
        return first.split(separator: " ").map { $0.hasPrefix("v") ? String($0.dropFirst()) : String($0) }
            .first { $0.range(of: #"^[0-9]+(\.[0-9]+)+"#, options: .regularExpression) != nil }
    }

    private func requireRootAndTools() throws {
        guard geteuid() == 0 else { try skipUnlessRequired("the package test installs with dpkg and mounts: it needs root") }
        for tool in ["/usr/bin/dpkg-deb", "/usr/bin/dpkg-shlibdeps", "/usr/bin/dpkg-gencontrol", "/usr/bin/lintian",
                     "/usr/bin/unshare", "/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"]
        where !FileManager.default.isExecutableFile(atPath: tool) {
            try skipUnlessRequired("\(tool) is missing (make test-deps installs dpkg-dev, lintian, openssh-server)")
        }
        let status = try runProcess(["dpkg-query", "-W", "-f=${Status}", "ferry"], in: scratch)
        if status.out.hasSuffix(" installed") {
            try skipUnlessRequired("a ferry package is installed on this host; this test installs and removes its own (dpkg -r ferry first)")
        }
        if exists(installedFerry) {
            try skipUnlessRequired("\(installedFerry) exists outside a package; this test would replace it")
        }
    }

    func testDebianPackageRunsWithoutASwiftToolchain() throws {
        try requireRootAndTools()
        let built = try runProcess([TestPaths.ferry, "--version"], in: scratch)
        XCTAssertEqual(built.status, 0, built.summary)
        guard let version = versionWord(built.out) else {
            return XCTFail("no version in the first line of ferry --version: \(built.out)")
        }

        // Package the binary under test; gzip instead of xz keeps this test fast.
        let build = try runProcess(["/bin/sh", root + "/scripts/build-deb.sh", TestPaths.ferry, scratch.file("dist")],
                                   in: scratch, env: ["DPKG_DEB_COMPRESSOR_TYPE": "gzip"], timeout: 180)
        XCTAssertEqual(build.status, 0, build.summary)
        guard build.status == 0, let deb = build.out.split(separator: "\n").last.map(String.init), exists(deb) else { return }
        let arch = try runProcess(["dpkg", "--print-architecture"], in: scratch).out.trimmingCharacters(in: .whitespacesAndNewlines)
        let name = URL(fileURLWithPath: deb).lastPathComponent
        XCTAssertTrue(name.hasPrefix("ferry_\(version)-") && name.hasSuffix("_\(arch).deb"), "package file name: \(name)")

        // Depends: what the binary loads, from Debian packages, and ssh; nothing of a toolchain.
        let fields = try runProcess(["dpkg-deb", "--field", deb, "Package", "Depends"], in: scratch)
        XCTAssertEqual(fields.status, 0, fields.summary)
        let depends = fields.out.split(separator: "\n").first { $0.hasPrefix("Depends:") }.map(String.init) ?? ""
        for needed in ["libc6", "libssl3", "libzstd1", "libsqlite3-0", "libnbd0", "openssh-client"] {
            XCTAssertTrue(depends.contains(needed), "Depends lacks \(needed): \(depends)")
        }
        XCTAssertFalse(depends.lowercased().contains("swift"), depends)

        let lintian = try runProcess(["lintian", deb], in: scratch, timeout: 120)
        let errors = lintian.out.split(separator: "\n").filter { $0.hasPrefix("E:") }
        XCTAssertTrue(lintian.status == 0 && errors.isEmpty, "lintian reports errors: " + lintian.summary)

        // Install; whatever fails below, the package goes again.
        addTeardownBlock {
            let cleanup = Scratch("package-removal")
            defer { cleanup.remove() }
            _ = try? runProcess(["dpkg", "--purge", "ferry"], in: cleanup, timeout: 120)
        }
        let install = try runProcess(["dpkg", "--install", deb], in: scratch, timeout: 120)
        XCTAssertEqual(install.status, 0, install.summary)
        guard install.status == 0 else { return }

        let manFiles = manPages.map { "/usr/share/man/man1/\($0).gz" }
        XCTAssertFalse(manPages.isEmpty, "no man/*.1 in \(root)")
        for path in installedFiles + manFiles {
            XCTAssertTrue(exists(path), "the package did not install \(path)")
        }
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: installedFerry))
        for page in manPages {
            let same = try sh("gzip -dc \(shq("/usr/share/man/man1/\(page).gz")) | cmp -s - \(shq(root + "/man/" + page))", in: scratch)
            XCTAssertEqual(same.status, 0, "/usr/share/man/man1/\(page).gz is not man/\(page) gzipped")
        }
        let bash = try runProcess(["bash", "-c", ". /usr/share/bash-completion/completions/ferry && complete -p ferry"], in: scratch)
        XCTAssertEqual(bash.status, 0, "the bash completion does not define one for ferry: " + bash.summary)
        let zsh = String(decoding: readAll("/usr/share/zsh/vendor-completions/_ferry"), as: UTF8.self)
        XCTAssertTrue(zsh.hasPrefix("#compdef ferry"), "the zsh completion does not start with #compdef ferry: \(zsh.prefix(200))")
        let fish = String(decoding: readAll("/usr/share/fish/vendor_completions.d/ferry.fish"), as: UTF8.self)
        XCTAssertTrue(fish.contains("complete -c 'ferry'") || fish.contains("complete -c ferry"),
                      "the fish completion completes no ferry command: \(fish.prefix(200))")
        let listed = try runProcess(["dpkg", "--listfiles", "ferry"], in: scratch).out.split(separator: "\n").map(String.init)
        for path in installedFiles + manFiles { XCTAssertTrue(listed.contains(path), "dpkg -L ferry does not list \(path)") }

        // The installed binary loads nothing from a toolchain.
        let ldd = try runProcess(["ldd", installedFerry], in: scratch)
        XCTAssertEqual(ldd.status, 0, ldd.summary)
        for lib in ["libswift", "libFoundation", "lib_Foundation", "libdispatch", "libBlocksRuntime"] {
            XCTAssertFalse(ldd.out.contains(lib), "\(installedFerry) loads \(lib): built without --static-swift-stdlib? (make build)\n\(ldd.out)")
        }

        let hidden = try toolchainFolders()
        XCTAssertFalse(hidden.isEmpty, "no Swift toolchain folder found to hide")
        try runWithoutToolchain(hidden, expectedVersion: built.out)
        try copyOverSSHWithoutToolchain(hidden)

        // Remove: nothing of the package stays.
        let remove = try runProcess(["dpkg", "--remove", "ferry"], in: scratch, timeout: 120)
        XCTAssertEqual(remove.status, 0, remove.summary)
        for path in installedFiles + manFiles + ["/usr/share/doc/ferry"] {
            XCTAssertFalse(exists(path), "\(path) is still there after dpkg -r ferry")
        }
        let after = try runProcess(["dpkg-query", "-W", "-f=${Status}", "ferry"], in: scratch)
        XCTAssertFalse(after.out.hasSuffix(" installed"), after.summary)
    }

    /// `ferry --version` and a local copy with the toolchain folders hidden.
    private func runWithoutToolchain(_ hidden: [String], expectedVersion: String) throws {
        let check = hidden.map { "[ -z \"$(ls -A \(shq($0)))\" ] || { echo \(shq($0)) is visible >&2; exit 90; }" }.joined(separator: "; ")
        let r = try runProcess(withoutToolchain(hidden, ["/bin/sh", "-c", check + "; exec /usr/bin/ferry --version"]), in: scratch)
        XCTAssertEqual(r.status, 0, r.summary)
        XCTAssertEqual(r.out, expectedVersion, "the installed ferry's --version differs from the binary under test")

        let src = scratch.file("a.raw")
        let dst = scratch.file("b.raw")
        try writeImage(src, mixedRegions(mib: 16), seed: 1010)
        let copy = try runProcess(withoutToolchain(hidden, [installedFerry, "copy", src, dst, "--ledger", ledger, "--progress", "none"]),
                                  in: scratch, timeout: 120)
        XCTAssertEqual(copy.status, 0, copy.summary)
        XCTAssertTrue(try sameBytes(src, dst, in: scratch), "the local copy differs from its source")
    }

    /// A copy over ssh whose two ends are the installed ferry with the toolchain hidden: the
    /// client in its own namespace, the far `ferry serve` under an sshd started in another.
    private func copyOverSSHWithoutToolchain(_ hidden: [String]) throws {
        let dir = scratch.file("sshd")
        let script = root + "/scripts/sshd-loopback.sh"
        addTeardownBlock {
            let cleanup = Scratch("package-sshd")
            defer { cleanup.remove() }
            _ = try? runProcess(["/bin/sh", script, "stop", dir], in: cleanup, timeout: 30)
        }
        let started = try runProcess(withoutToolchain(hidden, ["/bin/sh", script, "start", dir]), in: scratch, timeout: 60)
        XCTAssertEqual(started.status, 0, started.summary)
        guard started.status == 0 else { return }
        let rsh = String(decoding: readAll(dir + "/rsh"), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let host = "root@127.0.0.1"

        // What the far side sees: an empty toolchain folder, and a ferry that runs anyway.
        let probe = hidden.map { "[ -z \"$(ls -A \($0))\" ] && echo hidden \($0)" }.joined(separator: "; ") + "; /usr/bin/ferry --version"
        let seen = try sh("\(rsh) \(host) \(shq(probe))", in: scratch, timeout: 60)
        XCTAssertEqual(seen.status, 0, seen.summary)
        for folder in hidden { XCTAssertTrue(seen.out.contains("hidden \(folder)\n"), "the far side sees \(folder): " + seen.summary) }

        let src = scratch.file("disk.raw")
        let far = scratch.file("far.raw")
        try writeImage(src, mixedRegions(mib: 16), seed: 1011)
        let remote = ["-e", rsh, "--remote-ferry", installedFerry, "--remote-ledger", farLedger]
        let copy = try runProcess(withoutToolchain(hidden, [installedFerry, "copy", src, "\(host):\(far)", "--json", "--progress", "none",
                                                             "--ledger", ledger] + remote), in: scratch, timeout: 120)
        XCTAssertEqual(copy.status, 0, copy.summary)
        guard copy.status == 0 else { return }
        let report = try decode(CopyJSON.self, copy.stdout)
        XCTAssertTrue(report.digestsMatch, copy.summary)
        XCTAssertEqual(report.destination.host, host)
        XCTAssertTrue(try sameBytes(src, far, in: scratch), "the far copy differs from its source")

        // And the far end verifies it against its own ledger.
        let verify = try runProcess(withoutToolchain(hidden, [installedFerry, "verify", "\(host):\(far)", "--progress", "none",
                                                               "--ledger", ledger] + remote), in: scratch, timeout: 120)
        XCTAssertEqual(verify.status, 0, verify.summary)
    }
}
