import ArgumentParser
import Chunks
import Foundation
import Ledger
import ZFS

/// Asks before a destructive ledger command: on a terminal a y/N question, elsewhere `--yes`.
private func confirm(_ question: String, yes: Bool) throws -> Bool {
    if yes { return true }
    guard isatty(0) != 0 else {
        throw FerryError(.usage, "\(question): not on a terminal, so ferry cannot ask", hint: "pass --yes to do it")
    }
    Console.err(question + " [y/N] ")
    guard let answer = readLine() else { return false }
    return ["y", "yes"].contains(answer.lowercased().trimmingCharacters(in: .whitespaces))
}

extension LedgerCommand {
    struct Release: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Destroy the ZFS snapshot a copy took of an image, and record that.",
            discussion: """
                The snapshot holds pool space as the guest's writes diverge from the image as \
                copied. Once it is released, `ferry verify` reads the live image, and differences \
                from the ledger may then be the guest's writes. Only the snapshot ferry took is \
                destroyed (its guid must still be the recorded one), on the host that holds it.
                """)
        @Argument(help: ArgumentHelp("Image id.", valueName: "id")) var id: Int64
        @Flag(name: .long, help: "Do it without asking (required when not on a terminal).") var yes = false
        @OptionGroup var ledgerOptions: LedgerOptions

        func run() throws {
            try reporting {
                let ledger = try ledgerOptions.open(create: false)
                let image = try ledger.requireImage(id)
                guard var snap = image.snapshot, let name = snap.name else {
                    throw FerryError(.notFound, "image \(id) has no snapshot" + (image.snapshot?.error.map { " (none was taken: \($0))" } ?? ""))
                }
                guard snap.releasedAt == nil else {
                    Output.stdout("the snapshot \(name) of image \(id) was already released at \(snap.releasedAt!)")
                    return .ok
                }
                guard image.host == Ledger.hostname() else {
                    throw FerryError(.refused, "the snapshot \(name) is on \(image.host), not this host", hint: "run `ferry ledger release \(id)` there")
                }
                let found = try ZFS.describe(name)
                if let found, found.guid != snap.guid {
                    throw FerryError(.refused, "\(name) is not the snapshot the copy took (guid \(found.guid), recorded \(snap.guid ?? "?")); it was left alone",
                                     hint: "destroy it yourself with `zfs destroy \(name)` if it is not needed")
                }
                if found != nil {
                    guard try confirm("destroy the snapshot \(name) of image \(id)", yes: yes) else { return .refused }
                    // A clone that a killed verify left would keep the snapshot from going.
                    ZFS.sweepStaleClones(of: name)
                    try ZFS.destroy(name)
                }
                snap.releasedAt = Ledger.now()
                try ledger.setSnapshot(image: id, snap)
                Output.stdout(found == nil ? "the snapshot \(name) was already gone; recorded it as released"
                                           : "destroyed \(name); `ferry verify` of image \(id) now reads the live image")
                return .ok
            }
        }
    }

    struct Forget: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove an image's records from the ledger: its chunk hashes, runs and findings.",
            discussion: """
                The image itself is not touched. An image whose ZFS snapshot is still held is \
                refused: release the snapshot first (`ferry ledger release ID`), so that none is \
                left behind unnamed.
                """)
        @Argument(help: ArgumentHelp("Image id.", valueName: "id")) var id: Int64
        @Flag(name: .long, help: "Do it without asking (required when not on a terminal).") var yes = false
        @OptionGroup var ledgerOptions: LedgerOptions

        func run() throws {
            try reporting {
                let ledger = try ledgerOptions.open(create: false)
                let image = try ledger.requireImage(id)
                if let snap = image.snapshot, snap.held {
                    throw FerryError(.refused, "image \(id) still holds the snapshot \(snap.name ?? "?")",
                                     hint: "release it first with `ferry ledger release \(id)`")
                }
                if let running = try ledger.runs(image: id).first(where: { $0.result == .running && ($0.pid.map { kill($0, 0) == 0 } ?? false) }) {
                    throw FerryError(.refused, "image \(id) has a \(running.kind.rawValue) running (run \(running.id), pid \(running.pid ?? 0))",
                                     hint: "let it finish or stop it, then forget the image")
                }
                guard try confirm("forget image \(id) (\(Output.printable(image.path))) and all its records", yes: yes) else { return .refused }
                try ledger.forget(image: id)
                Output.stdout("forgot image \(id)")
                return .ok
            }
        }
    }
}
