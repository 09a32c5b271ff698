import Chunks
import Foundation
import Glibc

/// A `qemu-nbd` that ferry runs to read the guest disk inside a VDI, qcow2, VMDK, VHD or VHDX
/// file: read-only, one client, on a unix socket in a private 0700 directory. No root and no
/// `/dev/nbd*` are needed.
///
/// The server runs in its own session (`--fork` detaches it), so a Ctrl-C at the terminal reaches
/// ferry, which stops the copy cleanly, and not the server under it. It serves one client and
/// exits when that client leaves, so even a ferry killed outright leaves no server behind.
public final class QemuNBD {
    public let container: String
    public let format: String
    public let directory: String
    public var socket: String { directory + "/sock" }
    public private(set) var pid: pid_t = 0
    /// Serves the disk for writing (a destination), not read-only.
    public private(set) var writable = false

    /// A qemu-utils program: `override` from the environment (tests), else the first `name` on
    /// PATH or in /usr/bin; not found names the package and what ferry needed it for.
    static func tool(_ name: String, override: String, neededFor: String) throws -> String {
        if let forced = ProcessInfo.processInfo.environment[override], !forced.isEmpty { return forced }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"] {
            let candidate = dir + "/" + name
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw FerryError(.notFound, "\(name) is not installed here, and ferry \(neededFor)",
                         hint: "install it (Debian and Proxmox: apt-get install qemu-utils), or copy the container file itself with --as-is")
    }

    static func program() throws -> String {
        try tool("qemu-nbd", override: "FERRY_QEMU_NBD", neededFor: "reads the disk inside a container through it")
    }

    /// Starts a server for `container` read as `format` (a qemu driver name: vdi, qcow2, vmdk,
    /// vpc, vhdx, qed). `direct` asks it to read with O_DIRECT (from the medium, not the cache).
    /// `writable`: a destination ferry writes the disk into (zeroed ranges may be deallocated).
    public static func start(container: String, format: String, blockDevice: Bool, direct: Bool,
                             writable: Bool = false) throws -> QemuNBD {
        let program = try program()
        let options = try imageOptions(container, format: format, blockDevice: blockDevice, direct: direct)
        sweepStale()
        var template = Array("/tmp/ferry-nbd-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw FerryError(.io, "cannot create a private directory for qemu-nbd's socket in /tmp: \(String(cString: strerror(errno)))",
                             cause: .errno(errno))
        }
        let server = QemuNBD(container: container, format: format, directory: String(cString: made))
        server.writable = writable
        do {
            try server.launch(program: program, options: options)
        } catch {
            server.removeDirectory()
            throw error
        }
        return server
    }

    private init(container: String, format: String, directory: String) {
        self.container = container
        self.format = format
        self.directory = directory
    }

    /// qemu's `--image-opts` for the container: its format, the file (or device) by absolute
    /// path, so that no character of the name is read as a protocol (`nbd:`, `json:`) or an
    /// option (commas are doubled, the syntax's escape); O_DIRECT or not.
    static func imageOptions(_ container: String, format: String, blockDevice: Bool, direct: Bool) throws -> String {
        guard DiskImageFormat.isContainerFormat(format) else {
            throw FerryError(.usage, "\(format) is not a container format ferry reads",
                             hint: "name one of " + DiskImageFormat.sourceFormatNames.filter { $0 != "raw" }.joined(separator: ", "))
        }
        let absolute = container.hasPrefix("/") ? container : FileManager.default.currentDirectoryPath + "/" + container
        let escaped = absolute.replacingOccurrences(of: ",", with: ",,")
        return "driver=\(format),file.driver=\(blockDevice ? "host_device" : "file"),file.filename=\(escaped),cache.direct=\(direct ? "on" : "off")"
    }

    private func launch(program: String, options: String) throws {
        let log = directory + "/log"
        let arguments = [program, "--fork", "--pid-file=\(directory)/pid", "--socket=\(socket)"]
            + (writable ? ["--discard=unmap"] : ["--read-only"]) + ["--shared=1", "--image-opts", options]
        // posix_spawn and waitpid, not Foundation's Process: the daemon --fork leaves behind
        // inherits whatever Process watches for the exit, and that wait would never end.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        var cargs: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var child: pid_t = 0
        // In a session of its own from the start: a Ctrl-C while it starts reaches ferry only.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, 0x80)   // POSIX_SPAWN_SETSID (glibc)
        let rc = posix_spawn(&child, program, &actions, &attributes, &cargs, environ)
        guard rc == 0 else {
            throw FerryError(.io, "cannot run \(program) to read \(container): \(String(cString: strerror(rc)))",
                             hint: "check that qemu-nbd (qemu-utils) is installed and runs", cause: .errno(rc))
        }
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED and WEXITSTATUS, which Glibc does not import as functions.
        let exited = status & 0x7f == 0, code = (status >> 8) & 0xff
        guard exited, code == 0 else {
            if let signal = Interrupts.received { throw Interrupts.error(signal, during: "starting qemu-nbd for \(container)") }
            let said = logText()
            if Self.isLockConflict(said) { throw Self.inUse(container, said) }
            throw FerryError(.refused, "qemu-nbd cannot \(writable ? "write" : "read") \(container) as \(format)" + (said.isEmpty ? "" : ": " + said),
                             hint: writable ? "check that the file is a complete \(format) image (`qemu-img check -f \(format) \(container)`) and writable; nothing was written"
                                            : "check that the file is a complete \(format) image (`qemu-img check -f \(format) \(container)`); name another format with --source-format, or copy the file itself with --as-is")
        }
        guard let text = try? String(contentsOfFile: directory + "/pid", encoding: .utf8),
              let p = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), p > 0 else {
            throw FerryError(.io, "qemu-nbd started for \(container) but left no process id in \(directory)/pid")
        }
        pid = p
    }

    /// Whether qemu's words say another program holds the image (its lock refused ours). Matched
    /// on qemu's own phrases, never on a bare "lock", which a path may contain.
    static func isLockConflict(_ said: String) -> Bool {
        (said.contains("Failed to get \"") && said.contains("\" lock")) || said.contains("Is another process using the image")
            || said.contains("Failed to lock byte")
    }

    static let inUseWords = "is in use by another program (qemu holds a lock on it"

    /// The refusal for an image another program holds.
    static func inUse(_ path: String, _ said: String) -> FerryError {
        FerryError(.refused, "\(path) \(inUseWords): \(said))",
                   hint: "stop the VM, qemu-nbd or ferry run that has it open, and run ferry again; nothing was written")
    }

    /// Whether `error` is that refusal.
    public static func isInUse(_ error: FerryError) -> Bool { error.code == .refused && error.message.contains(inUseWords) }

    /// What qemu-nbd printed on stderr, on one line.
    public func logText() -> String {
        let text = (try? String(contentsOfFile: directory + "/log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map { $0.replacingOccurrences(of: "qemu-nbd: ", with: "") }.joined(separator: "; ")
    }

    /// Whether the server process still runs.
    /// (A server that exited but that nobody reaped yet counts as gone, as does a pid taken over
    /// by another program.)
    public var isRunning: Bool {
        guard pid > 0, kill(pid, 0) == 0 else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        let name = stat[stat.index(after: stat.firstIndex(of: "(") ?? stat.startIndex)..<close]
        let state = stat[stat.index(close, offsetBy: 2)...].first
        return state != "Z" && name.hasPrefix("qemu-nbd")
    }

    /// Why a read through the server failed, when the server is the reason: it died, and what it said.
    /// `connectionLost`: the connection to it is dead, so it is probably dying; it is given a
    /// moment to finish exiting, so the note says it is gone rather than nothing.
    public func failureNote(connectionLost: Bool = false) -> String? {
        guard pid > 0 else { return nil }
        for _ in 0..<50 where connectionLost && isRunning { usleep(10_000) }
        let said = logText()
        if !isRunning { return "qemu-nbd (pid \(pid)) serving \(container) is gone" + (said.isEmpty ? "" : "; it said: " + said) }
        return said.isEmpty ? nil : "qemu-nbd said: " + said
    }

    /// Stops the server (after the client closed its connection it exits on its own; this waits
    /// for that, then insists) and removes its directory.
    public func stop(waitForItFirst: Bool = true) {
        if pid > 0 {
            var waited = 0
            while waitForItFirst && isRunning && waited < 100 { usleep(20_000); waited += 1 }
            if isRunning { kill(pid, SIGTERM) }
            waited = 0
            while isRunning && waited < 100 { usleep(20_000); waited += 1 }
            if isRunning { kill(pid, SIGKILL) }
            pid = 0
        }
        removeDirectory()
    }

    /// Removes the directories of servers that are gone, left by a ferry that was killed
    /// outright (its server exits on its own when the connection drops; the directory stays).
    /// A directory still being set up (no pid file yet, younger than a minute) is left alone.
    static func sweepStale() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/tmp") else { return }
        for name in names where name.hasPrefix("ferry-nbd-") {
            let dir = "/tmp/" + name
            var st = stat()
            guard lstat(dir, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR, st.st_uid == getuid() else { continue }
            let stale: Bool
            if let text = try? String(contentsOfFile: dir + "/pid", encoding: .utf8),
               let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                let server = QemuNBD(container: "", format: "", directory: dir)
                server.pid = pid
                stale = !server.isRunning
            } else {
                stale = time(nil) - st.st_mtim.tv_sec > 60
            }
            if stale { QemuNBD(container: "", format: "", directory: dir).removeDirectory() }
        }
    }

    private func removeDirectory() {
        for name in ["sock", "pid", "log"] { unlink(directory + "/" + name) }
        rmdir(directory)
    }
}
