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
            request that carries everything it needs (operation, path, ledger, options). The \
            client puts nothing on its command line, so it works as an authorized_keys forced \
            command, where --restrict-to and --read-only limit what the key may do:

              command="/usr/local/bin/ferry serve --restrict-to /tank/images --read-only",restrict ssh-ed25519 AAAA... backup@old

            --restrict-to DIR (repeatable) confines every image and every ledger the request \
            names to those folders. A path is resolved with every symlink followed (a file that \
            does not exist yet: its folder resolved, plus its name) and must then lie inside a \
            folder, itself resolved, component by component (/tank2 is not inside /tank); a path \
            with '..' is refused. Block devices: a symlink owned by root that points to a block \
            device is allowed when the folder holding the link is inside, so --restrict-to \
            /dev/zvol/tank allows /dev/zvol/tank/vm-1 (a link to /dev/zd0) and the links udev \
            makes for its partitions; a link to anything else must resolve inside. The ledger \
            serve uses when the request names none (its default, or FERRY_LEDGER set in the \
            forced command) is not the client's choice and may lie anywhere.

            --read-only refuses a copy to this host and a resend to this host. Copies from it, \
            verify and resends from it still run, and still write the ledger (their runs and the \
            source's record).

            Both refuse with exit status 5, before any image or ledger is opened or created, \
            with a message naming the path and the allowed folders. Each host records its own \
            end of a copy in its own ledger (the request may name the ledger, from the client's \
            --remote-ledger). Errors travel back to the client in-band and are shown there \
            prefixed with "remote:".

            EXAMPLES:
              ferry copy --remote-ferry /opt/ferry/bin/ferry disk.raw root@pve:/dev/zvol/tank/vm-1
              ferry copy -e 'ssh -p 2222 -i ~/.ssh/ferry' disk.raw backup@nas:/tank/disk.raw
            """
    )

    @Option(name: .customLong("restrict-to"),
            help: ArgumentHelp("Allow only images and ledgers inside this folder, symlinks resolved (repeatable).",
                               valueName: "dir"))
    var restrictTo: [String] = []

    @Flag(name: .customLong("read-only"), help: "Refuse to write images here: no copy or resend to this host.")
    var readOnly = false

    func run() throws {
        if let e = Server.run(environment: ProcessInfo.processInfo.environment, restrictTo: restrictTo, readOnly: readOnly) {
            throw ExitCode(ExitStatus.of(e.code).rawValue)
        }
    }
}
