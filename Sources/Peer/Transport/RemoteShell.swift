import Chunks
import Foundation
import Glibc
import Wire
import Synchronization

/// The far `ferry serve`, started through the remote shell (ssh) as a child process whose
/// stdin/stdout carry the frames. Its stderr is shown here line by line as "remote: ...", and
/// the last lines are kept to explain a dead peer.
public final class RemoteShell {
    public let host: String
    public let argv: [String]
    public let connection: Connection
    let pid: pid_t
    private let stderrFD: Int32
    /// Shared by the caller's thread and the stderr forwarder.
    private struct Shared {
        var lastLines: [String] = []
        var exitStatus: Int32?
        var outputClosed = false
    }
    private let shared = Mutex(Shared())
    private let stderrDone = DispatchSemaphore(value: 0)

    /// The far ferry binary as the command line names it.
    let remoteFerry: String

    public init(host: String, settings: RemoteSettings) throws {
        self.host = host
        remoteFerry = settings.remoteFerry
        argv = try settings.command(host: host, extraSSHOptions: settings.rsh == nil ? CipherPreference.options(host: host) : [])
        var toChild: [Int32] = [0, 0], fromChild: [Int32] = [0, 0], errChild: [Int32] = [0, 0]
        guard Self.cloexecPipe(&toChild), Self.cloexecPipe(&fromChild), Self.cloexecPipe(&errChild) else {
            throw FerryError.syscall("pipe", path: "remote shell")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errChild[1], 2)
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawnp(&child, argv[0], &actions, nil, &cargs, environ)
        close(toChild[0]); close(fromChild[1]); close(errChild[1])
        guard rc == 0 else {
            close(toChild[1]); close(fromChild[0]); close(errChild[0])
            throw FerryError(.remote, "cannot start remote shell '\(argv[0])': \(String(cString: strerror(rc)))",
                             hint: "install ssh, or name another remote shell with --rsh")
        }
        pid = child
        stderrFD = errChild[0]
        connection = Connection(input: fromChild[0], output: toChild[1], peerName: "\(argv[0]) \(host)")
        connection.onClosed = { [weak self] in self?.deathReport() ?? FerryError(.remote, "the remote side closed the connection") }
        // Shares only `shared` (behind its mutex) and the stderr descriptor, which it alone reads.
        _ = Worker<Void>(name: "ferry.remote-stderr") { [self] in forwardStderr() }
    }

    deinit {
        closeOutput()
        close(connection.input)
    }

    private func closeOutput() {
        let wasClosed = shared.withLock { s -> Bool in
            defer { s.outputClosed = true }
            return s.outputClosed
        }
        if !wasClosed { close(connection.output) }
    }

    /// A pipe whose ends are not inherited by other children (the child gets dup2'ed copies).
    static func cloexecPipe(_ fds: inout [Int32]) -> Bool {
        guard pipe(&fds) == 0 else { return false }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        return true
    }

    private func forwardStderr() {
        defer { close(stderrFD); stderrDone.signal() }
        var pending = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = retryingEINTR { read(stderrFD, &buf, buf.count) }
            if n <= 0 { break }
            pending.append(contentsOf: buf[0..<n])
            while let nl = pending.firstIndex(of: 10) {
                emit(String(decoding: pending[..<nl], as: UTF8.self))
                pending.removeSubrange(...nl)
            }
        }
        if !pending.isEmpty { emit(String(decoding: pending, as: UTF8.self)) }
    }

    private func emit(_ raw: String) {
        // ssh ends some of its messages with CR LF.
        let line = raw.hasSuffix("\r") ? String(raw.dropLast()) : raw
        shared.withLock { s in
            s.lastLines.append(line)
            if s.lastLines.count > 5 { s.lastLines.removeFirst() }
        }
        Console.err("remote: " + line + "\n")
    }

    /// Waits for the child to exit (at most `seconds`), returning its wait status.
    @discardableResult
    public func wait(seconds: Double = 10) -> Int32? {
        if let s = shared.withLock({ $0.exitStatus }) { return s }
        let deadline = monotonicSeconds() + seconds
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { shared.withLock { $0.exitStatus = status }; return status }
            if r < 0 { return nil }
            if monotonicSeconds() > deadline { return nil }
            usleep(20_000)
        }
    }

    /// Ends the session: closes our end of the pipe (the far side sees EOF) and reaps the child.
    public func finish() {
        closeOutput()
        if wait(seconds: 10) == nil {
            kill(pid, SIGTERM)
            wait(seconds: 2)
        }
        _ = stderrDone.wait(timeout: .now() + 2)
    }

    /// Why the far side went away: the remote shell's exit status and the last thing it said.
    func deathReport() -> FerryError {
        let status = wait(seconds: 3)
        _ = stderrDone.wait(timeout: .now() + 1)
        let said = shared.withLock { $0.lastLines.last(where: { !$0.trimmingCharacters(in: .whitespaces).isEmpty }) }
        var msg = "the connection to \(host) closed"
        if let status {
            if status & 0x7f == 0 { msg += ": \(argv[0]) exited with status \((status >> 8) & 0xff)" }
            else { msg += ": \(argv[0]) was killed by signal \(status & 0x7f)" }
        } else {
            msg += " (\(argv[0]) is still running)"
        }
        if let said { msg += "; it last said: \(said)" }
        // 127 is the far shell's "command not found": ferry itself is missing over there.
        if let status, status & 0x7f == 0, (status >> 8) & 0xff == 127 {
            return FerryError(.remote, "ferry is not installed on \(host): the far shell found no `\(remoteFerry)` to run (\(msg))",
                              hint: "install it there, e.g. `make deb && scp dist/ferry_*.deb \(host): && ssh \(host) apt install ./ferry_*.deb`, or name the far binary with --remote-ferry PATH")
        }
        return FerryError(.remote, msg, hint: "check that `\(argv.joined(separator: " "))` works")
    }
}
