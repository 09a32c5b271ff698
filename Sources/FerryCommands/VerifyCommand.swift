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

            ON ZFS: where the copy took a snapshot of its destination (see ferry-copy(1)), verify \
            reads that snapshot, the exact image the ledger describes, whatever the guest wrote \
            since: a zvol through its snapshot device (snapdev=visible is set for the run and put \
            back), a file through the dataset's .zfs/snapshot directory or a temporary read-only \
            clone, destroyed afterwards. --json says which in `readFrom`. A snapshot that is gone \
            (exit 3) or was destroyed and taken again (exit 5) is reported as such, never as \
            corruption; --live reads the live image on purpose. Without a snapshot, an image that \
            another process has open (a running VM) gets a warning that differences may be its writes.

            AUDITS: --all verifies every complete destination image in this host's ledger, one \
            line each and a summary; an image that cannot be verified is reported and the rest go \
            on (--json: {"status": "ok" | "corrupt" | "error", "images": [...]}). It reads at idle \
            I/O priority (--io-priority), --max-rate caps the read rate, and --metrics-file writes \
            the results for node_exporter's textfile collector. contrib/systemd holds a monthly \
            timer and service for it. Ctrl-C or SIGTERM records where a verify stopped; --resume \
            (with TARGET, or with --all for the audit) goes on from there, against the same \
            snapshot, and still reports what was found before the stop.

            An image copied with --on-read-error=record holds zeros where its source could not be \
            read. Verify lists those ranges as "unreadable at copy time", apart from any damage \
            found since, and the verdict is INCOMPLETE (exit 1) until `ferry resend` fills them. \
            When a resend filled the last of them, the image had no whole-image SHA-256 (none was \
            ever computed over its real bytes): the next verify whose every chunk matches \
            computes it and records it in the ledger, and says so.

            A SOURCE CONTAINER: `ferry verify vm-100.vdi` checks a VDI, qcow2, VMDK, VHD or VHDX \
            file that was copied as the disk inside it against its source record, reading it the \
            same way (a private read-only qemu-nbd with O_DIRECT, zero extents not read): the \
            last audit before the old disks are wiped. An NBD export copied by its URI is \
            verified under the same URI. --json gives `format`. A qcow2 DESTINATION (a copy \
            into *.qcow2) is read the same way, as the disk inside it.

            Exit status (--all: 1 when any image is not intact, else the first error's status): 0 when every chunk matched, 1 when corruption, an unstable chunk, a size change or ranges unreadable at copy time were found, \
            5 when chunks could only be read from memory, \
            other values for errors (see ferry(1)).

            EXAMPLES:
              ferry verify /dev/zvol/rpool/data/vm-100-disk-0
              ferry verify --json backup.raw
              ferry verify /mnt/veracrypt1/vm-100.vdi
              ferry verify root@pve:/dev/zvol/rpool/data/vm-100-disk-0
              ferry verify --live /dev/zvol/rpool/data/vm-100-disk-0
              ferry verify --all --max-rate 200M --metrics-file /var/lib/prometheus/node-exporter/ferry.prom
            """
    )

    @Argument(help: ArgumentHelp("The image to verify: file, block device or [user@]host:path (none with --all).", valueName: "target"))
    var target: String?

    @Flag(name: .long, help: "Audit every complete destination image in this host's ledger, one after another.")
    var all = false

    @Option(name: .long, help: ArgumentHelp("Verify against this ledger image id instead of the latest one for TARGET.", valueName: "id"))
    var image: Int64?

    @Flag(name: .long, help: "Read the image as it is now, even where the copy took a ZFS snapshot of it (before the VM first boots, say).")
    var live = false

    @Flag(name: .long, help: "Continue the interrupted verify of TARGET (with --all: the interrupted audit) where it stopped.")
    var resume = false

    @Option(name: .long, help: ArgumentHelp("Read at most this many bytes a second (e.g. 100M), so the VMs on the pool keep their I/O.", valueName: "rate"))
    var maxRate: String?

    @Option(name: .long, help: ArgumentHelp("I/O priority of the reads: idle waits for every other process's I/O; auto is idle with --all.", valueName: "class"))
    var ioPriority: IOPriority = .auto

    @Option(name: .long, help: ArgumentHelp("Write the results in the Prometheus text format to this file (atomically), for node_exporter's textfile collector.", valueName: "path"))
    var metricsFile: String?

    @Option(name: .long, help: ArgumentHelp("How to show progress on stderr.", valueName: "style"))
    var progress: ProgressStyle = .auto

    @Flag(name: .long, help: "Print the result as JSON on stdout.")
    var json = false

    @OptionGroup var ledgerOptions: LedgerOptions

    @OptionGroup var remote: RemoteOptions

    enum IOPriority: String, ExpressibleByArgument, CaseIterable { case auto, idle, normal }

    func run() throws {
        try reporting(json: json) {
            var rate: UInt64?
            if let maxRate {
                guard let n = ChunkGeometry.parseSize(maxRate), n > 0 else {
                    throw FerryError(.usage, "cannot read --max-rate '\(maxRate)'", hint: "bytes a second, with an optional K, M or G suffix, e.g. --max-rate 100M")
                }
                rate = UInt64(n)
            }
            if ioPriority == .idle || (ioPriority == .auto && all) {
                if !Sys.idleIOPriority() { Output.stderr("ferry: note: could not lower the I/O priority to idle; reading at normal priority") }
            }
            if all {
                guard target == nil, image == nil else {
                    throw FerryError(.usage, "--all audits every image in the ledger; leave out TARGET and --image")
                }
                return try audit(rate: rate)
            }
            // --image ID alone: the image is where its record says.
            let named: String
            if let target {
                named = target
            } else if let image {
                named = try ledgerOptions.open(create: false).requireImage(image).canonical
            } else {
                throw FerryError(.usage, "name the image to verify, or pass --all", hint: "e.g. ferry verify /dev/zvol/rpool/data/vm-100-disk-0")
            }
            let target = named
            let report = try verifyOne(target, rate: rate)
            if let metricsFile {
                try AuditMetrics.write(AuditMetrics.text([Audit.Entry(imageId: report.imageId, path: target, report: report)]), to: metricsFile)
            }
            Output.stdout(json ? Output.json(report) : Self.summary(report))
            return Self.exitStatus(report)
        }
    }

    static func exitStatus(_ report: VerifyReport) -> ExitStatus {
        switch report.status {
        case .ok: return .ok
        case .corrupt, .unstable, .incomplete: return .corrupt
        case .unverified: return .refused
        }
    }

    private func verifyOne(_ target: String, rate: UInt64?) throws -> VerifyReport {
        if case .remote(let host, let path) = Location.parse(target) {
            let meter = ProgressMeter(style: progress, total: nil, label: "verify")
            meter.start()
            defer { meter.finish() }
            // This host's record of the same copy, when there is one, checks the far record.
            let local = try? ledgerOptions.open(create: false)
            return try RemoteVerify.run(host: host, path: path, imageId: image, settings: remote.settings,
                                        ledger: local, progress: meter.counter, live: live, maxRate: rate, resume: resume)
        }
        let ledger = try ledgerOptions.open(create: false)
        let record = try Verifier.findImage(target: target, imageId: image, ledger: ledger)
        let meter = ProgressMeter(style: progress, total: record.size, label: "verify")
        meter.start()
        defer { meter.finish() }
        return try Verifier.run(target: target, imageId: record.id, ledger: ledger, progress: meter.counter, live: live,
                                maxRate: rate, resume: resume)
    }

    /// `--all`: one verify per image, a line each, a summary; an image that cannot be verified
    /// is reported and the others go on.
    private func audit(rate: UInt64?) throws -> ExitStatus {
        let ledger = try ledgerOptions.open(create: false)
        var images = try Audit.images(in: ledger)
        guard !images.isEmpty else {
            throw FerryError(.notFound, "no complete destination image of this host is recorded in \(ledger.path), so there is nothing to audit",
                             hint: "`ferry ledger list` shows what is recorded; pass --ledger PATH for another ledger")
        }
        var entries: [Audit.Entry] = []
        // --resume: the audit goes on at the image whose verify was interrupted, from where that
        // verify stopped; the images before it keep the verdicts their latest verify reached.
        var resumeAt: Int64?
        if resume {
            if let i = try images.firstIndex(where: { try Verifier.interruptedVerify(of: $0.record.id, in: ledger) != nil }) {
                resumeAt = images[i].record.id
                for (record, target) in images[..<i] {
                    let last = try ledger.runs(image: record.id).last { $0.kind == .verify }
                    let entry = Audit.Entry(imageId: record.id, path: target, error: last == nil ? "not verified by the interrupted audit" : nil,
                                            errorKind: last == nil ? "notFound" : nil, carried: last)
                    entries.append(entry)
                    if !json {
                        Output.stdout("image \(record.id): \(last.map { "\($0.result.rawValue.uppercased()) (run \($0.id), ended \($0.endedAt ?? "?"))" } ?? "not verified"): \(Output.printable(target)), from the interrupted audit")
                    }
                }
                if !json { Output.stdout("resuming the audit at image \(images[i].record.id) (\(images.count - i) of \(images.count) left)") }
                images.removeFirst(i)
            } else if !json {
                Output.stdout("no interrupted audit to resume: auditing every image")
            }
        }
        var firstError: FerryError?
        for (n, (record, target)) in images.enumerated() {
            let meter = ProgressMeter(style: progress, total: record.size, label: "verify \(n + 1)/\(images.count)")
            meter.start()
            do {
                let report = try Verifier.run(target: target, imageId: record.id, ledger: ledger, progress: meter.counter,
                                              live: live, maxRate: rate, resume: record.id == resumeAt)
                meter.finish()
                entries.append(Audit.Entry(imageId: record.id, path: target, report: report))
                if !json {
                    let text = Self.summary(report)
                    Output.stdout(report.status == .ok ? "image \(record.id): " + (text.split(separator: "\n").last.map(String.init) ?? "")
                                                      : "image \(record.id):\n" + text.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
                }
            } catch var e as FerryError where e.code == .interrupted {
                meter.finish()
                e.hint = (e.hint.map { $0 + "; " } ?? "") + "`ferry verify --all --resume` goes on with the audit there"
                throw e
            } catch let e as FerryError {
                meter.finish()
                firstError = firstError ?? e
                entries.append(Audit.Entry(imageId: record.id, path: target, error: e.description, errorKind: "\(e.code)"))
                if !json { Output.stdout("image \(record.id): ERROR: \(Output.printable(target)): \(e)") }
            } catch {
                meter.finish()
                throw error
            }
        }
        if let metricsFile { try AuditMetrics.write(AuditMetrics.text(entries), to: metricsFile) }
        let status = Audit.status(of: entries)
        if json {
            Output.stdout(Output.json(Audit.Report(status: status, images: entries)))
        } else {
            let ok = entries.filter { $0.intact }.count
            let errors = entries.filter { $0.failed }.count
            Output.stdout("audited \(entries.count) image(s) in \(ledger.path): \(ok) OK, \(entries.count - ok - errors) not intact, \(errors) could not be verified")
        }
        switch status {
        case "corrupt": return .corrupt
        case "error": return firstError.map { ExitStatus.of($0.code) } ?? .io
        default: return .ok
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
        if let format = r.format, format != "raw" {
            // The summary line says how the disk was read (through qemu-nbd, or an NBD server).
        } else if r.readMode.hasPrefix("direct,") {
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
