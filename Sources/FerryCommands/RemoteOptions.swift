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

    var settings: RemoteSettings {
        RemoteSettings(rsh: rsh.map { RemoteSettings.splitWords($0) }, remoteFerry: remoteFerry, remoteLedger: remoteLedger)
    }
}
