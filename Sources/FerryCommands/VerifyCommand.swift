import ArgumentParser
import Chunks
import Foundation
import Ledger
import Peer
import Verify

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Re-read an image from the medium and compare every chunk with the ledger.",
        discussion: """
            Finds the latest complete ledger record for TARGET (by the path given, its canonical \
            path, or a stable name such as /dev/zvol/... or /dev/disk/by-id/...; or --image ID), \
            re-reads TARGET with O_DIRECT so the bytes come from the disk and not the page cache \
            (where O_DIRECT is refused, the cache is dropped before and behind the read, and the \
            output says so), hashes the chunks on all cores and compares them with the ledger.

            Every mismatching chunk is read three more times from the medium. Wrong on every \
            read, it is corrupt; right on some read, it is unstable: the medium returned wrong \
            bytes at least once, which is not intact either (the verdict is UNSTABLE, exit 1). \
            Corrupt chunks are coalesced into byte ranges; a size change is reported too. The \
            run and its findings are recorded in the ledger, where `ferry resend` finds them and \
            rewrites corrupt and unstable chunks alike.

            TARGET may be [user@]host:path: the verify then runs on the far host, against its \
            ledger and its disk, and the result is shown here.

            Where O_DIRECT is refused, each chunk's pages are dropped from the cache after it is \
            read; a page that stays (another process keeps the image mapped) was read from memory, \
            not the medium, and the verdict is UNVERIFIED (exit 5) rather than OK. On tmpfs memory \
            is the medium.

            An image copied with --on-read-error=record holds zeros where its source could not be \
            read. Verify lists those ranges as "unreadable at copy time", apart from any damage \
            found since, and the verdict is INCOMPLETE (exit 1) until `ferry resend` fills them. \
            When a resend filled the last of them, the image had no whole-image SHA-256 (none was \
            ever computed over its real bytes): the next verify whose every chunk matches \
            computes it and records it in the ledger, and says so.

            Exit status: 0 when every chunk matched, 1 when corruption, an unstable chunk, a size change or ranges unreadable at copy time were found, \
            5 when chunks could only be read from memory, \
            other values for errors (see ferry(1)).

            EXAMPLES:
              ferry verify /dev/zvol/rpool/data/vm-100-disk-0
              ferry verify --json backup.raw
              ferry verify root@pve:/dev/zvol/rpool/data/vm-100-disk-0
            """
    )

    @Argument(help: ArgumentHelp("The image to verify: file, block device or [user@]host:path.", valueName: "target"))
    var target: String

    @Option(name: .long, help: ArgumentHelp("Verify against this ledger image id instead of the latest one for TARGET.", valueName: "id"))
    var image: Int64?

    @Flag(name: .long, help: "Read the image as it is now, even where the copy took a ZFS snapshot of it (before the VM first boots, say).")
    var live = false

    @Option(name: .long, help: ArgumentHelp("How to show progress on stderr.", valueName: "style"))
    var progress: ProgressStyle = .auto

    @Flag(name: .long, help: "Print the result as JSON on stdout.")
    var json = false

    @OptionGroup var ledgerOptions: LedgerOptions

    @OptionGroup var remote: RemoteOptions

    func run() throws {
        try reporting(json: json) {
            let location = Location.parse(target)
            let report: VerifyReport
            if case .remote(let host, let path) = location {
                let meter = ProgressMeter(style: progress, total: nil, label: "verify")
                meter.start()
                defer { meter.finish() }
                // This host's record of the same copy, when there is one, checks the far record.
                let local = try? ledgerOptions.open(create: false)
                report = try RemoteVerify.run(host: host, path: path, imageId: image, settings: remote.settings,
                                              ledger: local, progress: meter.counter, live: live)
            } else {
                let ledger = try ledgerOptions.open(create: false)
                let record = try Verifier.findImage(target: target, imageId: image, ledger: ledger)
                let meter = ProgressMeter(style: progress, total: record.size, label: "verify")
                meter.start()
                defer { meter.finish() }
                report = try Verifier.run(target: target, imageId: record.id, ledger: ledger, progress: meter.counter, live: live)
            }
            Output.stdout(json ? Output.json(report) : Self.summary(report))
            switch report.status {
            case .ok: return .ok
            case .corrupt, .unstable, .incomplete: return .corrupt
            case .unverified: return .refused
            }
        }
    }

    static func summary(_ r: VerifyReport) -> String {
        let name = r.host.map { "\($0):\(r.target)" } ?? r.target
        var lines: [String] = []
        if let from = r.readFrom, let snap = from.snapshot {
            lines.append("read the snapshot \(snap) the copy took" + (from.kind == .clone ? " (through a temporary read-only clone, destroyed after)" : " (\(from.path))")
                + ": the image as copied, whatever the guest wrote since")
        }
        for w in r.warnings ?? [] { lines.append("warning: " + w) }
        if r.readMode.hasPrefix("direct,") {
            lines.append("note: \(name) is a loop device that reads its file through the page cache; that cache was dropped before every read (\(r.readMode))")
        } else if r.readMode != "direct" {
            lines.append("note: \(name) could not be opened with O_DIRECT; read through the page cache after dropping it (\(r.readMode))")
        }
        for t in r.transientChunks {
            lines.append("unstable: chunk \(t) read back differently on different reads; the disk or the path to it returned wrong bytes (check dmesg, smartctl, cables, memory)")
        }
        if r.sizeChanged {
            lines.append("size changed: recorded \(r.expectedSize) bytes, found \(r.actualSize ?? 0)")
        }
        if !r.unreadableChunks.isEmpty {
            lines.append("unreadable: the medium returned errors for chunks \(r.unreadableChunks.map(String.init).joined(separator: ", ")) (check the disk: dmesg, smartctl)")
        }
        for b in r.badRanges {
            let chunks = b.firstChunk == b.lastChunk ? "chunk \(b.firstChunk)" : "chunks \(b.firstChunk)-\(b.lastChunk)"
            lines.append("corrupt: bytes \(b.offset)-\(b.offset + b.length - 1) (\(Output.bytes(b.length)), \(chunks))")
        }
        if let gaps = r.unreadableAtCopy, !gaps.isEmpty {
            lines.append("unreadable at copy time: \(gaps.count) range(s), \(Output.bytes(ByteRange.total(gaps))) in all; the source could not read them, so zeros stand there (not damage since the copy):")
            for g in gaps.prefix(50) { lines.append("  \(g) (\(Output.bytes(g.length)))") }
            if gaps.count > 50 { lines.append("  ... and \(gaps.count - 50) more") }
        }
        if let digest = r.digestRecorded {
            lines.append("whole-image sha256 \(digest): computed by this read and recorded (a resend filled the last unreadable range)")
        }
        if let other = r.crossChecked {
            lines.append("the far record agrees with this host's record of the same copy (\(other))")
        }
        if let cached = r.cachedChunks, !cached.isEmpty {
            lines.append("from memory: chunks \(cached.map(String.init).joined(separator: ", ")) stayed in the page cache after it was dropped (another process keeps them mapped), and O_DIRECT was refused, so they were not read from the medium")
        }
        let verdict: String
        switch r.status {
        case .ok: verdict = "OK"
        case .unstable: verdict = "UNSTABLE"
        case .corrupt: verdict = "CORRUPT"
        case .unverified: verdict = "UNVERIFIED"
        case .incomplete: verdict = "INCOMPLETE"
        }
        lines.append("\(verdict): \(name): \(r.chunks - r.badChunks) of \(r.chunks) chunks match image \(r.imageId) "
            + "(\(Output.bytes(r.bytesRead)) read \(r.readMode) in \(String(format: "%.1f", r.seconds)) s, \(Output.rate(r.bytesRead, r.seconds)))")
        if r.status == .unverified {
            lines.append("stop the program that maps \(name) (a running VM, say) and verify again")
        } else if r.status == .incomplete {
            lines.append("when the source reads again, fill them with: ferry resend SRC \(name)")
        } else if r.status != .ok {
            lines.append("repair with: ferry resend SRC \(name)")
        }
        return lines.joined(separator: "\n")
    }
}
