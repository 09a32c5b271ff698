import ArgumentParser
import Foundation
import Peer

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the far end of a copy, verify or resend on stdin/stdout (started over ssh).",
        discussion: """
            `ferry serve` is what `ferry copy`, `ferry verify` and `ferry resend` run on the other \
            host through the remote shell (ssh by default), as rsync runs `rsync --server`. It \
            speaks ferry's framed protocol on stdin/stdout: a versioned handshake, then one \
            request that carries everything it needs (operation, path, ledger, options). Nothing \
            is taken from its command line, so it works as an authorized_keys forced command:

              command="/usr/local/bin/ferry serve",restrict ssh-ed25519 AAAA... backup@old

            Each host records its own end of a copy in its own ledger (the request may name the \
            ledger, from the client's --remote-ledger). Errors travel back to the client in-band \
            and are shown there prefixed with "remote:".

            EXAMPLES:
              ferry copy --remote-ferry /opt/ferry/bin/ferry disk.raw root@pve:/dev/zvol/tank/vm-1
              ferry copy -e 'ssh -p 2222 -i ~/.ssh/ferry' disk.raw backup@nas:/tank/disk.raw
            """
    )

    func run() throws {
        if let e = Server.run(environment: ProcessInfo.processInfo.environment) {
            throw ExitCode(ExitStatus.of(e.code).rawValue)
        }
    }
}
