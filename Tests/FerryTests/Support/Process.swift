// Running processes: the real ferry binary, shell pipelines, background daemons, scratch folders.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Running processes

struct RunResult {
    var status: Int32
    /// True when the process was ended by a signal (`status` is then the signal number).
    var signaled: Bool
    var stdout: Data
    var stderr: String
    var command: String

    var out: String { String(decoding: stdout, as: UTF8.self) }

    /// stderr lines, without empty ones.
    /// (Split on unicode scalars: "\r\n" is one Character in Swift.)
    var errLines: [String] {
        stderr.unicodeScalars.split(separator: "\n").map { String(String.UnicodeScalarView($0)) }.filter { !$0.isEmpty }
    }

    var summary: String {
        "`\(command)` -> \(signaled ? "signal" : "exit") \(status)\nstdout: \(out.prefix(2000))\nstderr: \(stderr.prefix(2000))"
    }
}

/// A process started in the background with posix_spawn (outputs go to files). The tests reap
/// their children themselves with waitpid, so nothing else in the test process may.
final class Background {
    let pid: pid_t
    let outPath: String
    let errPath: String
    let command: String
    private var waitStatus: Int32?

    init(pid: pid_t, outPath: String, errPath: String, command: String) {
        (self.pid, self.outPath, self.errPath, self.command) = (pid, outPath, errPath, command)
    }

    /// The raw wait status once the process ended (reaping it), nil while it runs.
    @discardableResult
    func poll(block: Bool = false) -> Int32? {
        if let s = waitStatus { return s }
        var st: Int32 = 0
        let r = waitpid(pid, &st, block ? 0 : WNOHANG)
        if r == pid { waitStatus = st }
        return waitStatus
    }

    var isRunning: Bool { poll() == nil }

    func signal(_ sig: Int32) { if isRunning { kill(pid, sig) } }

    /// Waits for the process to end (killing it after `timeout` seconds) and collects its outputs.
    func wait(timeout: Double = 300) -> RunResult {
        let deadline = Date().addingTimeInterval(timeout)
        var nap: useconds_t = 200
        var timedOut = false
        while poll() == nil {
            if Date() > deadline {
                timedOut = true
                kill(pid, SIGKILL)
                poll(block: true)
                break
            }
            usleep(nap)
            nap = min(nap * 2, 20_000)
        }
        let st = waitStatus ?? 0
        let signaled = (st & 0x7f) != 0
        let out = (try? Data(contentsOf: URL(fileURLWithPath: outPath))) ?? Data()
        var err = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: errPath))) ?? Data(), as: UTF8.self)
        if timedOut { err += "\n[test harness: killed after \(Int(timeout)) s]" }
        return RunResult(status: signaled ? st & 0x7f : (st >> 8) & 0xff, signaled: signaled,
                         stdout: out, stderr: err, command: command)
    }
}

/// A temporary folder under /tmp for one test, removed at the end.
final class Scratch {
    let path: String
    private var counter = 0

    init(_ label: String) {
        var template = Array("/tmp/ferry-test-\(label)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "cannot create a temporary folder")
        path = String(cString: made!)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func nextLogNames() -> (String, String) {
        counter += 1
        return (file(".out.\(counter)"), file(".err.\(counter)"))
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Quotes a word for /bin/sh.
/// True while `pid` exists and is not a zombie.
func isAlive(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    return !stat[close...].hasPrefix(") Z") && !stat[close...].hasPrefix(") X")
}

func shq(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

/// glibc's posix_spawn extensions (2.29+, 2.34+), which Swift's Glibc module does not import.
private enum SpawnExtras {
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    typealias AddClosefrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    static let addChdir: AddChdir? = dlsym(nil, "posix_spawn_file_actions_addchdir_np").map { unsafeBitCast($0, to: AddChdir.self) }
    static let addClosefrom: AddClosefrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: AddClosefrom.self) }
}

/// Starts `argv` in the background, in the scratch folder. `stdin`: a file to read from (else
/// /dev/null). `stdoutTo`: a file that receives stdout (else a log file in the scratch folder).
func start(_ argv: [String], in scratch: Scratch, stdin: String? = nil, stdoutTo: String? = nil,
           env: [String: String] = [:]) throws -> Background {
    let (outPath, errPath) = scratch.nextLogNames()
    let outFile = stdoutTo ?? outPath
    var environment = ProcessInfo.processInfo.environment
    environment.removeValue(forKey: "FERRY_LEDGER")
    for (k, v) in env { environment[k] = v }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, stdin ?? "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outFile, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    var argv = argv
    if let addChdir = SpawnExtras.addChdir {
        _ = addChdir(&actions, scratch.path)
    } else {
        argv = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", scratch.path] + argv
    }
    if let addClosefrom = SpawnExtras.addClosefrom { _ = addClosefrom(&actions, 3) }

    // Children start with default signal handling and nothing blocked, whatever the test runner set.
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigmask(&attr, &none)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for sig in [SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, sig) }
    posix_spawnattr_setsigdefault(&attr, &defaults)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    var cenv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (cargs + cenv).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, argv[0], &actions, &attr, &cargs, &cenv)
    guard rc == 0 else {
        throw NSError(domain: "spawn \(argv[0])", code: Int(rc), userInfo: [NSLocalizedDescriptionKey: String(cString: strerror(rc))])
    }
    return Background(pid: pid, outPath: outFile, errPath: errPath,
                      command: argv.map { $0.contains(" ") ? shq($0) : $0 }.joined(separator: " "))
}

/// Runs `argv` to the end.
@discardableResult
func runProcess(_ argv: [String], in scratch: Scratch, stdin: String? = nil, stdoutTo: String? = nil,
         env: [String: String] = [:], timeout: Double = 300) throws -> RunResult {
    try start(argv, in: scratch, stdin: stdin, stdoutTo: stdoutTo, env: env).wait(timeout: timeout)
}

/// Runs a /bin/sh command line (for pipes) to the end.
@discardableResult
func sh(_ command: String, in scratch: Scratch, timeout: Double = 300) throws -> RunResult {
    var r = try runProcess(["/bin/sh", "-c", command], in: scratch, timeout: timeout)
    r.command = command
    return r
}
