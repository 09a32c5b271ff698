import ArgumentParser
import Chunks
import Copy
import Foundation
import Ledger
import Peer

struct CopyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Copy a disk image in one pass, hashing and recording both ends.",
        discussion: """
            SRC is a regular file, a block device, or - (stdin); DST is a regular file (created or \
            overwritten), a block device, or - (stdout). Either side may be [user@]host:path on \
            another host reached over ssh, where `ferry serve` runs the far end.

            The source is read once and the destination written once, with O_DIRECT where the \
            medium allows (else through the page cache, dropped behind the stream), so a 500 GB \
            copy does not flood the cache. Every chunk gets a SHA-256 and the whole stream one \
            that equals `sha256sum SRC`. Zero chunks become holes (files) or BLKZEROOUT (block \
            devices). The destination is fdatasync'ed before the ledger marks it complete, and at \
            checkpoints (every --checkpoint bytes) so that --resume can continue an interrupted copy.

            The destination is claimed for the whole run, on the host where it lives: a file by a \
            lock on its open file description, a block device by an exclusive open. A second \
            ferry copy, resume or resend onto it is refused (exit 5) before it changes a byte.

            ON ZFS: a destination on ZFS (a zvol, or a file on a dataset) is snapshotted after \
            the final sync and before the ledger records it complete: DATASET@ferry-<transfer id>, \
            recorded with its guid (over ssh, the far end takes it). `ferry verify` reads that \
            snapshot, so the guest's writes after the VM boots are not taken for corruption. \
            --no-snapshot takes none; a snapshot that cannot be taken does not fail the copy, which \
            says why (`destination.snapshotError` with --json). `ferry ledger release ID` destroys it.

            A FAILING SOURCE: by default a read error ends the copy (exit 4). With \
            --on-read-error=record ferry reads around it as ddrescue does on its first pass: a \
            failing read is halved down to the device's logical sector (a page for a file), so \
            every byte before the first bad sector is kept; from there it probes single sectors \
            at doubling distances and halves the last gap, so a long bad stretch costs a few dozen \
            failed reads and its edges are exact to the sector. No sector is retried on this pass \
            unless --retries asks. Zeros are written for what did not read; both ledgers record \
            the ranges with the chunks that hold them (whose hashes cover those zeros); no \
            whole-image SHA-256 is claimed; the copy finishes with exit 1 and lists the ranges \
            (`source.unreadableRanges` with --json). `ferry verify` reports them as unreadable at \
            copy time, and `ferry resend SRC DST` tries exactly them again later (after the disk \
            cooled, was reseated, or from the other half of a mirror named as SRC). Readable \
            sectors inside a stretch that the skips jumped over are recorded too; the resend \
            finds them.

            VM DISK CONTAINERS: a source that is a VDI, qcow2, VMDK, VHD (vpc), VHDX or QED file \
            (its header says so; --source-format names it) is copied as the guest disk inside it, \
            the bytes `qemu-img convert -O raw` would give, and its SHA-256 equals `sha256sum` of \
            that. ferry starts its own read-only qemu-nbd on a socket in a private 0700 \
            directory (no root, no nbd kernel module, no /dev/nbd*), reads it with libnbd, and \
            stops it when the copy ends, fails or is interrupted. Extents the container does not \
            allocate are never read: ferry asks for base:allocation block status, and those \
            chunks are zero chunks (holes at the destination, nothing on the wire) whose zeros \
            still go into the whole-image hash. `source.bytesRead` (--json) counts the bytes \
            actually read. The ledger records the container's format and allocated bytes. \
            `ferry verify` and `ferry resend` read the container the same way. --as-is copies the \
            container file's own bytes instead. Needs qemu-nbd and qemu-img (qemu-utils) on the \
            host holding the container.

            QCOW2 DESTINATIONS: a destination named *.qcow2 (or --dest-format qcow2) receives the \
            disk inside a qcow2 file, as a Proxmox directory storage keeps it. ferry creates the \
            file with `qemu-img create` and the source's size (or opens an existing qcow2 of \
            exactly that size; another size is refused), writes through its own writable qemu-nbd \
            (O_DIRECT where the file system allows it), leaves zero chunks unallocated (a fresh \
            image: no write at all; an existing one: zeroed, deallocated where qemu can), and \
            flushes through qemu at every checkpoint and before the copy is marked complete. A \
            new image is written as .NAME.ferry-partial and takes its name only then, so a \
            failed copy leaves nothing a VM would boot (--resume continues it). \
            qemu's image lock is the claim: a VM or another writer holding the file is refused. \
            The ledger records the destination as qcow2, and `ferry verify` and `ferry resend` \
            read and write it through qemu-nbd too. Needs qemu-utils on the host writing it.

            NBD EXPORTS: nbd://host[:port]/export and nbd+unix:///export?socket=PATH (libnbd's \
            URIs) name an export that a qemu-nbd, nbdkit or running QEMU serves; it is read the \
            same way, zero extents skipped. /dev/nbd0 is still read as a block device.

            EXAMPLES:
              ferry copy vm-100.vdi root@pve:/dev/zvol/rpool/data/vm-100-disk-0
              ferry copy /dev/nbd0 /dev/zvol/rpool/data/vm-100-disk-0
              ferry copy disk.raw backup.raw --chunk-size 4M
              some-producer | ferry copy - out.raw
              ferry copy /dev/nbd0 root@pve:/dev/zvol/rpool/data/vm-100-disk-0
              ferry copy --resume /dev/nbd0 root@pve:/dev/zvol/rpool/data/vm-100-disk-0
              ferry copy --on-read-error=record /dev/sdb root@pve:/dev/zvol/rpool/data/vm-101-disk-0
            """
    )

    @Argument(help: ArgumentHelp("Source: file, block device, VM disk container (VDI, qcow2, VMDK, VHD, VHDX), NBD URI, - for stdin, or [user@]host:path.", valueName: "src"))
    var source: String

    @Argument(help: ArgumentHelp("Destination: file, block device, qcow2 file (*.qcow2), - for stdout, or [user@]host:path.", valueName: "dst"))
    var destination: String

    @Option(name: .long, help: ArgumentHelp("Chunk size, a power of two from 64K to 256M (default 1M; a resume keeps the interrupted copy's).", valueName: "size"))
    var chunkSize: String?

    @Option(name: .long, help: ArgumentHelp("The size a stream source (stdin, a pipe) must have: a stream that ends sooner is a failed copy, not a small image; an endless one (/dev/zero) stops there.", valueName: "bytes"))
    var size: String?

    @Flag(name: .long, help: "Copy a disk-image container (VDI, qcow2, VMDK, VHD, VHDX) file's own bytes, not the disk inside it.")
    var asIs = false

    @Option(name: .long, help: ArgumentHelp("Read the source as this format: raw (its bytes as they are), vdi, qcow2, vmdk, vpc (VHD), vhdx or qed. Default: from its header.", valueName: "format"))
    var sourceFormat: String?

    @Option(name: .long, help: ArgumentHelp("Write the destination as this format: raw (the disk's bytes as they are) or qcow2 (the disk inside a qcow2 file ferry creates with the source's size, or one of that size; zero chunks stay unallocated). Default: qcow2 for a name ending in .qcow2 (unless --as-is; with --source-format raw, name it), else raw.", valueName: "format"))
    var destFormat: String?

    @Flag(name: .long, help: "Write zero chunks as zeros instead of holes or BLKZEROOUT.")
    var writeZeros = false

    @Flag(name: .long, help: "Continue an interrupted copy with the same arguments from its last checkpoint.")
    var resume = false

    @Flag(name: .long, help: "With --resume: re-read every copied chunk at both ends before continuing, not a sample.")
    var verifyPrefix = false

    @Option(name: .long, help: ArgumentHelp("Make the destination durable and record a resume point every this many bytes.", valueName: "size"))
    var checkpoint: String = "256M"

    @Option(name: .long, help: ArgumentHelp("How to show progress on stderr (auto: a bar when stderr is a terminal).", valueName: "style"))
    var progress: ProgressStyle = .auto

    @Option(name: .long, help: ArgumentHelp("Compress chunk payloads on the wire with zstd at this level (--compress alone: level 1); remote copies only.", valueName: "level"))
    var compress: Int?

    @Option(name: .long, help: ArgumentHelp("What a source read error does: abort (the default) ends the copy; record narrows it to the sector, writes zeros there, records the range in both ledgers and goes on (exit 1 at the end).", valueName: "abort|record"))
    var onReadError: ReadErrorPolicy = .abort

    @Option(name: .long, help: ArgumentHelp("With --on-read-error=record: try each unreadable range this many more times before recording it (default 0: no sector is retried on the first pass).", valueName: "n"))
    var retries: Int = 0

    @Flag(name: .long, help: "Take no ZFS snapshot of a destination on ZFS (by default DATASET@ferry-<transfer id> is taken once the copy is durable, and verify reads it).")
    var noSnapshot = false

    @Flag(name: .long, help: "Print a JSON summary on stdout (on stderr when DST is -).")
    var json = false

    @OptionGroup var ledgerOptions: LedgerOptions

    @OptionGroup var remote: RemoteOptions

    func run() throws { try reporting(json: json, jsonOnStderr: destination == "-", copy) }

    private func copy() throws -> ExitStatus {
        var options = CopyOptions()
        options.chunkSize = try parseChunkSize(chunkSize ?? "1M")
        options.chunkSizeGiven = chunkSize != nil
        options.verifyPrefix = verifyPrefix
        if verifyPrefix && !resume {
            throw FerryError(.usage, "--verify-prefix only applies to --resume", hint: "add --resume, or leave --verify-prefix out")
        }
        if let size {
            guard let n = ChunkGeometry.parseSize(size), n > 0 else {
                throw FerryError(.usage, "cannot read --size '\(size)'", hint: "bytes, with an optional K, M, G or T suffix, e.g. --size 64G")
            }
            options.streamSize = UInt64(n)
        }
        guard let cp = ChunkGeometry.parseSize(checkpoint), cp > 0 else {
            throw FerryError(.usage, "cannot read --checkpoint '\(checkpoint)'", hint: "e.g. --checkpoint 256M")
        }
        options.checkpointBytes = cp
        options.asIs = asIs
        options.sourceFormat = sourceFormat
        options.destFormat = destFormat
        options.writeZeros = writeZeros
        options.resume = resume
        if let compress, !(1...19).contains(compress) {
            throw FerryError(.usage, "--compress level \(compress) is out of range", hint: "zstd levels 1 (fast) to 19")
        }
        options.compressLevel = compress
        guard (0...100).contains(retries) else {
            throw FerryError(.usage, "--retries \(retries) is out of range", hint: "0 to 100 more tries of each unreadable range")
        }
        if retries > 0 && onReadError != .record {
            throw FerryError(.usage, "--retries only applies to --on-read-error=record", hint: "add --on-read-error=record")
        }
        options.snapshot = !noSnapshot
        options.onReadError = onReadError
        options.retries = retries
        if onReadError == .record && source == "-" {
            throw FerryError(.usage, "--on-read-error=record needs a source it can read at an offset; stdin is a stream",
                             hint: "copy from the file or block device itself")
        }
        let src = Location.parse(source)
        let dst = Location.parse(destination)
        if src.isRemote && dst.isRemote {
            throw FerryError(.usage, "both SRC and DST are remote; one end must be on this host",
                             hint: "run ferry on one of the two hosts")
        }
        for case .remote(let host, let path) in [src, dst] where path == "-" {
            throw FerryError(.usage, "\(host):- would be the far ferry's stdin or stdout, which carry the session",
                             hint: "name a file or block device on \(host), e.g. \(host):/var/tmp/disk.raw")
        }
        // Before the ledger is opened, which creates a missing one.
        if case .local(let path) = dst { try DestinationWriter.refuseOverlap(ledger: ledgerOptions.path, destination: path) }
        let ledger = try ledgerOptions.open()
        if src == .local("-") && options.streamSize == nil && !resume {
            Output.stderr("ferry: note: the source is a stream without --size; a stream cut short (its producer died) cannot be told from a small image. Pass --size BYTES when the size is known.")
        }
        let meter = ProgressMeter(style: progress, total: options.streamSize ?? (try? sizeHint(src)), label: "copy")
        meter.unreadable = options.unreadableProgress
        meter.start()
        let report: CopyReport
        do {
            if src.isRemote || dst.isRemote {
                report = try RemoteCopy.run(source: src, destination: dst, options: options, ledger: ledger,
                                            remote: remote.settings, progress: meter.counter)
            } else {
                report = try LocalCopy.run(source: src.path, destination: dst.path, options: options, ledger: ledger,
                                           progress: meter.counter)
            }
        } catch {
            meter.finish()
            throw error
        }
        meter.finish()
        // When the image goes to stdout, the summary goes to stderr.
        let text = json ? Output.json(report) : Self.summary(report)
        if dst == .local("-") { Output.stderr(text) } else { Output.stdout(text) }
        return report.intact ? .ok : .corrupt
    }

    /// The source size for the progress bar, when it can be known without reading.
    private func sizeHint(_ src: Location) throws -> UInt64? {
        guard case .local(let p) = src, p != "-" else { return nil }
        return try ImageFile.openForReading(p, direct: false).size
    }

    static func summary(_ r: CopyReport) -> String {
        var lines: [String] = []
        let rate = Output.rate(r.destination.size, r.seconds)
        let head = "copied \(Output.bytes(r.destination.size)) in \(String(format: "%.1f", r.seconds)) s (\(rate)), "
            + "\(r.chunks) chunks of \(Output.bytes(UInt64(r.chunkSize))), \(r.zeroChunks) zero"
        lines.append(head)
        if let from = r.resumedFromChunk {
            let offset = UInt64(from) * UInt64(r.chunkSize)
            lines.append("  resumed      at chunk \(from): this run copied bytes [\(offset), \(r.destination.size)); bytes before were checked, not copied again:")
            for check in r.resumeChecks ?? [] { lines.append("                 \(check)") }
        }
        let srcName = r.source.host.map { "\($0):\(r.source.path)" } ?? r.source.path
        let dstName = r.destination.host.map { "\($0):\(r.destination.path)" } ?? r.destination.path
        let none = "(none: some source bytes were unreadable)"
        lines.append("  source       sha256 \(r.source.sha256 ?? none)  \(srcName)")
        lines.append("  destination  sha256 \(r.destination.sha256 ?? none)  \(dstName)")
        lines.append("  list root    \(r.listRoot)")
        if let snap = r.destination.snapshot {
            lines.append("  snapshot     \(snap): the image as copied, which `ferry verify` reads while the guest writes to the live one")
        } else if let why = r.destination.snapshotError {
            lines.append("  snapshot     none: \(why) (the copy is complete; `ferry verify` will read the live image)")
        }
        if let id = r.imageId {
            lines.append("  ledger       image \(id) in \(r.destination.ledger ?? "?")\(r.remote != nil && r.destination.host != nil ? " on \(r.destination.host!)" : "")")
        }
        if let retries = r.retransmissions, retries > 0 { lines.append("  retransmitted \(retries) chunk(s) that arrived damaged") }
        if let ranges = r.source.unreadableRanges, let total = r.unreadableBytes {
            lines.append("UNREADABLE: \(ranges.count) range(s) of the source, \(Output.bytes(total)) in all, could not be read; zeros stand there at the destination:")
            for range in ranges.prefix(50) { lines.append("  \(range) (\(Output.bytes(range.length)))") }
            if ranges.count > 50 { lines.append("  ... and \(ranges.count - 50) more (`ferry ledger show \(r.imageId.map(String.init) ?? "ID")` lists them all)") }
            if let reads = r.rescueReads { lines.append("  narrowing them took \(reads) reads, \(r.failedReads ?? 0) of which failed") }
            lines.append("  both ledgers record the ranges; once the source reads again (cooled, reseated, the other half of a mirror), `ferry resend SRC DST` fills them")
        }
        for w in r.warnings ?? [] { lines.append("warning: " + w) }
        lines.append(r.digestsMatch ? (r.intact ? "digests match" : "the rest arrived intact: both ends agree on every byte that was read")
                                    : "DIGESTS DIFFER: the destination does not hold what was read; do not trust it")
        return lines.joined(separator: "\n")
    }
}

extension ReadErrorPolicy: ExpressibleByArgument {}
