import ArgumentParser
import Chunks
import Foundation
import Ledger
import Peer

public struct Ferry: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "Move and audit very large disk images with a per-chunk SHA-256 ledger.",
        discussion: """
            ferry copies a disk image (a file, a block device or stdin) to a file, a block device or \
            another host over ssh in one streaming pass: the source is read once, the destination is \
            written once, and both ends record a SHA-256 per chunk and for the whole image (equal to \
            sha256sum of the raw bytes) in a SQLite ledger. Weeks later `ferry verify` re-reads the \
            destination from the medium and pinpoints corrupted byte ranges; `ferry resend` repairs \
            just those ranges from the source.

            LEDGER: one SQLite file per host: /var/lib/ferry/ledger.db for root, otherwise \
            $XDG_STATE_HOME/ferry/ledger.db (~/.local/state/ferry/ledger.db). FERRY_LEDGER or \
            --ledger PATH override it. It is created with mode 0600.

            EXIT STATUS:
            \(ExitStatus.manual)
            """,
        version: PeerVersion.long,
        subcommands: [CopyCommand.self, VerifyCommand.self, ResendCommand.self, LedgerCommand.self, ServeCommand.self]
    )

    public init() {}

    /// Entry point used by the executable: rewrites `--compress` without a level into the default
    /// level (ArgumentParser has no optional-value options), then runs.
    public static func mainWithArguments() {
        var args = Array(CommandLine.arguments.dropFirst())
        // `--compress` alone means the default level; `--compress N` and `--compress=N` name one.
        for i in args.indices where args[i] == "--compress" {
            if i + 1 < args.count, Int(args[i + 1]) != nil { continue }
            args[i] = "--compress=\(defaultCompressLevel)"
        }
        signal(SIGPIPE, SIG_IGN)
        Interrupts.install()
        _ = Faults.active   // a malformed FERRY_FAULTS is refused before anything runs
        main(args)
    }

    static let defaultCompressLevel = 1
}


/// `--ledger PATH`, shared by every command that touches the ledger.
struct LedgerOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The ledger file (default: /var/lib/ferry/ledger.db for root, else $XDG_STATE_HOME/ferry/ledger.db; FERRY_LEDGER overrides).", valueName: "path"))
    var ledger: String?

    var path: String { ledger ?? Ledger.defaultPath(environment: ProcessInfo.processInfo.environment) }

    func open(create: Bool = true) throws -> Ledger { try Ledger(path: path, create: create) }
}

/// Runs a command body: a FerryError becomes one clear line on stderr and its exit status; with
/// `json`, also a JSON error object on stdout, so a script reading stdout always gets JSON.
func reporting(json: Bool = false, jsonOnStderr: Bool = false, _ body: () throws -> ExitStatus) throws {
    let status: ExitStatus
    do {
        status = try body()
    } catch let e as FerryError {
        Output.stderr("ferry: \(e)")
        let code = ExitStatus.code(of: e)
        if json {
            let text = Output.json(ErrorReport(e, exitStatus: code))
            if jsonOnStderr { Output.stderr(text) } else { Output.stdout(text) }
        }
        throw ExitCode(code)
    }
    if status != .ok { throw ExitCode(status.rawValue) }
}

/// What `--json` prints when a command fails.
struct ErrorReport: Encodable {
    var error: String
    var hint: String?
    var kind: String
    var exitStatus: Int32
    init(_ e: FerryError, exitStatus: Int32) {
        (error, hint, kind, self.exitStatus) = (e.message, e.hint, "\(e.code)", exitStatus)
    }
}

func parseChunkSize(_ text: String) throws -> Int {
    guard let n = ChunkGeometry.parseSize(text) else {
        throw FerryError(.usage, "cannot read size '\(text)'", hint: "use a number with an optional K, M or G suffix, e.g. 4M")
    }
    try ChunkGeometry.validate(n)
    return n
}
