import ArgumentParser
import Peer

/// How to reach the far host: the remote shell, the far ferry and its ledger.
struct RemoteOptions: ParsableArguments {
    @Option(name: [.customShort("e"), .customLong("rsh")],
            help: ArgumentHelp("Remote shell command (default: ssh -o Compression=no). Words are split on spaces.", valueName: "cmd"))
    var rsh: String?

    @Option(name: .long, help: ArgumentHelp("Path of ferry on the far host.", valueName: "path"))
    var remoteFerry: String = "ferry"

    @Option(name: .long, help: ArgumentHelp("The far host's ledger (default: its own default ledger).", valueName: "path"))
    var remoteLedger: String?

    @Option(name: .long, help: ArgumentHelp("End a remote session when no data has moved for this many seconds, at both ends (0: wait forever). What was made durable is kept for --resume.", valueName: "seconds"))
    var timeout: Double = RemoteSettings.defaultTimeout

    var settings: RemoteSettings {
        RemoteSettings(rsh: rsh.map { RemoteSettings.splitWords($0) }, remoteFerry: remoteFerry, remoteLedger: remoteLedger,
                       timeout: timeout > 0 ? timeout : nil)
    }

    func validate() throws {
        guard timeout >= 0, timeout.isFinite else {
            throw ValidationError("--timeout takes seconds, 0 or more (0: wait forever)")
        }
    }
}
