import ArgumentParser
import Chunks
import Copy
import Foundation
import Ledger
import Peer
import Resend

struct ResendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resend",
        abstract: "Repair only the damaged chunks of a destination from its source.",
        discussion: """
            The chunks to repair come from the destination's ledger: the findings of the latest \
            `ferry verify` of that image (or, with --verify, of a verify run first). The source \
            reads only those chunks, with positioned reads; each must still hash to what the \
            ledger recorded at copy time, or it is refused (the source changed, so it would not \
            be a repair) unless --force. Both ends hash fixed sub-blocks of each bad chunk \
            (--sub-block, 64K by default) and only the differing sub-blocks cross; zero \
            sub-blocks cross as zero frames.

            The destination writes the repaired ranges, fdatasyncs them, re-reads them from the \
            medium (O_DIRECT, or after dropping the page cache) and confirms each chunk matches \
            the ledger. A chunk still wrong after 3 attempts is reported unrepairable (a failing \
            disk) and the exit status is 8. The run is recorded in the destination's ledger and \
            the findings it answered are marked repaired, so a following `ferry verify` is clean.

            Ranges a copy with --on-read-error=record could not read are always part of the plan, \
            with or without a verify. The source reads each such chunk again, trying the ranges \
            1 + --retries times; the bytes that did read at copy time must read the same (else \
            the chunk is refused, exit 5). What now reads is sent, written and read back; both \
            ledgers take the chunk's new hash and keep only the ranges that still fail. While \
            any remain the exit status is 1. When the last is filled, the chunk hashes are final \
            and the next `ferry verify` computes the whole-image SHA-256.

            Either SRC or DST may be [user@]host:path (the same transport as `ferry copy`). A \
            SRC that is a VDI, qcow2, VMDK, VHD or VHDX file copied as the disk inside it is read \
            the same way again (a private read-only qemu-nbd), as is an NBD URI. A DST copied \
            into a qcow2 is repaired through a private writable qemu-nbd: the sub-blocks are \
            written into the disk inside it, flushed, and read back through the same server.

            AUDIT, THEN REPAIR:
              ferry verify root@pve:/dev/zvol/rpool/data/vm-100-disk-0     # exit 1: 3 bad ranges
              ferry resend /dev/nbd0 root@pve:/dev/zvol/rpool/data/vm-100-disk-0
              ferry verify root@pve:/dev/zvol/rpool/data/vm-100-disk-0     # exit 0
            or in one step:
              ferry resend --verify /dev/nbd0 root@pve:/dev/zvol/rpool/data/vm-100-disk-0
            Local works too, and from the VDI the copy read:
              ferry resend src.raw dst.raw
              ferry resend /mnt/veracrypt1/vm-100.vdi /dev/zvol/rpool/data/vm-100-disk-0
            """
    )

    @Argument(help: ArgumentHelp("The source the image was copied from: file, block device, VM disk container, NBD URI or [user@]host:path.", valueName: "src"))
    var source: String

    @Argument(help: ArgumentHelp("The damaged destination: file, block device or [user@]host:path.", valueName: "dst"))
    var destination: String

    @Flag(name: .long, help: "Verify the destination first and repair what that finds.")
    var verify = false

    @Flag(name: .long, help: "Repair from a source whose chunks no longer match the ledger (the ledger takes the new hashes).")
    var force = false

    @Option(name: .long, help: ArgumentHelp("Repair against this destination ledger image id.", valueName: "id"))
    var image: Int64?

    @Option(name: .long, help: ArgumentHelp("Sub-block size compared inside a bad chunk (a multiple of 4K).", valueName: "size"))
    var subBlock: String = "64K"

    @Option(name: .long, help: ArgumentHelp("How many more times the source tries each range that was unreadable at copy time, after its first try (default 2).", valueName: "n"))
    var retries: Int = RepairTarget.defaultRetries

    @Option(name: .long, help: ArgumentHelp("How to show progress on stderr.", valueName: "style"))
    var progress: ProgressStyle = .auto

    @Flag(name: .long, help: "Print the result as JSON on stdout.")
    var json = false

    @OptionGroup var ledgerOptions: LedgerOptions

    @OptionGroup var remote: RemoteOptions

    func run() throws {
        try reporting(json: json) {
            guard let sub = ChunkGeometry.parseSize(subBlock), sub >= 4096, sub % 4096 == 0 else {
                throw FerryError(.usage, "--sub-block \(subBlock) is not a multiple of 4K", hint: "e.g. --sub-block 64K")
            }
            guard (0...100).contains(retries) else {
                throw FerryError(.usage, "--retries \(retries) is out of range", hint: "0 to 100 more tries of each unreadable range")
            }
            let src = Location.parse(source)
            let dst = Location.parse(destination)
            if src.isRemote && dst.isRemote {
                throw FerryError(.usage, "both SRC and DST are remote; one end must be on this host")
            }
            let ledger = try ledgerOptions.open()
            let meter = ProgressMeter(style: progress, total: nil, label: "resend")
            meter.start()
            let report: ResendReport
            do {
                if src.isRemote || dst.isRemote {
                    report = try RemoteResend.run(source: src, destination: dst, ledger: ledger, imageId: image, verifyFirst: verify,
                                                  subBlockSize: sub, force: force, retries: retries, settings: remote.settings,
                                                  progress: meter.counter)
                } else {
                    report = try LocalResend.run(source: src.path, destination: dst.path, ledger: ledger, imageId: image,
                                                 verifyFirst: verify, subBlockSize: sub, force: force, retries: retries, progress: meter.counter,
                                                 log: { Output.stderr("ferry: " + $0) })
                }
            } catch {
                meter.finish()
                throw error
            }
            meter.finish()
            Output.stdout(json ? Output.json(report) : Self.summary(report))
            if report.failedChunks > 0 { return .unrepairable }
            if report.refusedChunks > 0 { return .refused }
            if report.unreadableRemaining != nil { return .corrupt }
            return .ok
        }
    }

    static func summary(_ r: ResendReport) -> String {
        var lines: [String] = []
        if let v = r.verify { lines.append(VerifyCommand.summary(v)) }
        if r.nothingToRepair {
            lines.append("nothing to repair: the latest verify of image \(r.imageId) (\(r.destination)) found no damage left")
            return lines.joined(separator: "\n")
        }
        for c in r.chunks where c.status != .repaired {
            switch c.status {
            case .refused: lines.append("refused: chunk \(c.index): \(c.reason ?? "source changed") (--force repairs from the source as it is now)")
            case .failed: lines.append("UNREPAIRABLE: chunk \(c.index): \(c.reason ?? "still wrong") (the disk may be failing)")
            case .forced: lines.append("forced: chunk \(c.index) rewritten from a changed source; the ledger now holds its new hash")
            case .repaired: break
            case .filled: lines.append("filled: chunk \(c.index): every byte unreadable at copy time now read at the source, written and read back")
            case .partlyFilled:
                lines.append("partly filled: chunk \(c.index): what now reads was written and read back; still unreadable: "
                    + (c.unreadable ?? []).map(\.description).joined(separator: ", "))
            case .stillUnreadable:
                lines.append("still unreadable: chunk \(c.index): "
                    + (c.unreadable ?? []).map(\.description).joined(separator: ", ") + " (nothing changed; try again later, or name another copy of the source)")
            }
        }
        if let snap = r.snapshot {
            lines.append("took the snapshot \(snap) again: it holds the repaired image, which `ferry verify` reads")
        } else if let why = r.snapshotError {
            lines.append("WARNING: the snapshot could not be taken again (\(why)): `ferry verify` still reads the unrepaired one; take it by hand or release it")
        }
        if let left = r.unreadableRemaining {
            lines.append("UNREADABLE: \(left.count) range(s), \(Output.bytes(ByteRange.total(left))) in all, still could not be read at the source; both ledgers keep them for the next `ferry resend`")
        } else if r.filledChunks + r.partlyFilledChunks > 0 {
            lines.append("every range unreadable at copy time is now filled: the chunk hashes are final; the whole-image SHA-256 was never computed over the real bytes, and the next `ferry verify \(r.destination)` computes and records it")
        }
        lines.append("repaired \(r.repairedChunks + r.forcedChunks + r.filledChunks + r.partlyFilledChunks) of \(r.chunks.count) chunks in \(String(format: "%.1f", r.seconds)) s: "
            + (r.bytesRead.map { "read \(Output.bytes($0)) at the source, " } ?? "") + "sent \(Output.bytes(r.bytesSent)), wrote \(Output.bytes(r.bytesWritten))")
        if r.failedChunks == 0 && r.refusedChunks == 0 && r.chunks.contains(where: { [.repaired, .forced, .filled, .partlyFilled].contains($0.status) }) {
            lines.append("every repaired chunk was read back from the medium and matches the ledger" + (r.readMode.map { " (read \($0))" } ?? ""))
        }
        return lines.joined(separator: "\n")
    }
}
