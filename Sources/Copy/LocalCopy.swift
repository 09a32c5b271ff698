import Chunks
import Ledger

/// A copy where both ends are on this host: one read of the source, one write of the destination,
/// both recorded in this host's ledger and linked.
public enum LocalCopy {
    public static func run(source srcPath: String, destination dstPath: String, options: CopyOptions,
                           ledger: Ledger, progress: ProgressCounter) throws -> CopyReport {
        let started = monotonicSeconds()
        // (A ledger on the destination was refused before the ledger was opened: CopyCommand.)
        // The ledger takes a write before the destination is touched: an unwritable ledger must
        // not leave a destination already truncated.
        try ledger.checkWritable()
        var chunkSize = options.chunkSize
        var resumeFrom: (dst: ImageRecord, src: ImageRecord)?
        if options.resume {
            resumeFrom = try Resume.unfinishedLocal(source: srcPath, destination: dstPath, ledger: ledger)
            if let r = resumeFrom { chunkSize = try Resume.chunkSize(of: r.dst, options: options) }
        }
        let source = try SourceReader(path: srcPath, chunkSize: chunkSize, asIs: options.asIs, sourceFormat: options.sourceFormat, expectedSize: options.streamSize,
                                      onReadError: options.onReadError, retries: options.retries,
                                      unreadableBytes: options.unreadableProgress)
        let dest = DestinationWriter(path: dstPath, chunkSize: chunkSize, writeZeros: options.writeZeros, ledger: ledger,
                                     format: try options.destinationFormat(for: dstPath))
        dest.takeSnapshot = options.snapshot
        // Said before hours of copying, and again with the result.
        let inherited = source.inheritRescueGaps(from: ledger)
        if let inherited { Console.err("ferry: warning: \(inherited)\n") }
        // Each end's run says how it ended; what was made durable stays for --resume.
        var report = try endingRuns(of: [source, dest], in: ledger) {
            try copy(source, dest, resumeFrom: resumeFrom, options: options, ledger: ledger, progress: progress, started: started)
        }
        report.warnings = inherited.map { [$0] }
        return report
    }

    private static func copy(_ source: SourceReader, _ dest: DestinationWriter, resumeFrom: (dst: ImageRecord, src: ImageRecord)?,
                             options: CopyOptions, ledger: Ledger, progress: ProgressCounter, started: Double) throws -> CopyReport {
        let chunkSize = source.chunkSize
        var transferId = newTransferID()
        var startIndex = 0
        var hasher = SHA256Hasher()
        var begun = false
        var checks: [String]?

        if let r = resumeFrom, let n = try ledger.checkpointCounts(image: r.dst.id).first, n > 0 {
            transferId = r.dst.transferId
            try dest.checkResumable(r.dst)
            try dest.open(expectedSize: source.size, source: source.file)
            begun = true
            let srcCheck: String, dstCheck: String
            (hasher, srcCheck) = try source.resume(ledger: ledger, image: r.src, at: n, verifyPrefix: options.verifyPrefix)
            (_, dstCheck) = try dest.resume(ledger: ledger, image: r.dst, at: n, verifyPrefix: options.verifyPrefix)
            checks = [srcCheck, dstCheck]
            startIndex = n
            progress.set(UInt64(n) * UInt64(chunkSize))
        }

        // Checks only; nothing is written before chunk 0 passed the container check.
        if !begun { try dest.open(expectedSize: source.size, source: source.file) }
        func openDestination() throws {
            try dest.beginFresh(expectedSize: source.size)
            try source.register(in: ledger, transferId: transferId, peer: dest.identity.canonical)
            try dest.register(in: ledger, size: source.size, transferId: transferId, peer: source.identity.canonical,
                              options: nil)
            if let a = source.imageId, let b = dest.imageId { try ledger.link(a, b) }
            begun = true
        }

        // The destination is begun only after chunk 0 passed the container check, so a refused
        // copy leaves the destination untouched.
        let origin = SourceEnd(source, checkpoints: .recordHere(ledger), afterFirstFill: begun ? nil : { try openDestination() })
        let result: PumpResult
        do {
            result = try CopyPass.run(from: origin, to: DestinationEnd(dest, checkpoints: .recordHere(ledger)),
                                      startIndex: startIndex, hasher: hasher, checkpointEvery: options.checkpointEvery,
                                      checkpointOnInterrupt: true, progress: progress)
        } catch var e as FerryError where e.code == .interrupted || e.code == .io {
            if let id = dest.imageId, let n = try? ledger.checkpointCounts(image: id).first, n > 0, source.size != nil {
                let resume = "chunks [0, \(n)) (\(n * chunkSize) bytes) are durable and recorded; run the same ferry copy with --resume to continue from there"
                e.hint = e.code == .interrupted ? resume : (e.hint.map { $0 + "; " } ?? "") + resume
            }
            throw e
        }
        if !begun { try openDestination() }

        let size = UInt64(startIndex) * UInt64(chunkSize) + result.bytes
        let digest = result.wholeDigest!
        let srcRoot = try source.complete(ledger: ledger, size: size, digest: digest)
        let dstRoot = try dest.complete(ledger: ledger, size: size, digest: digest)
        // One copy run per end, so `ferry ledger show` of either image tells how it came to be.
        let detail = CopyRunDetail(transferId: transferId, resumedFrom: startIndex).json
        if let srcRun = source.copyRun, let dstRun = dest.copyRun, let srcID = source.imageId, let dstID = dest.imageId {
            let whole: RunResult = source.unreadable.isEmpty ? .ok : .incomplete
            try ledger.finishRun(srcRun, image: srcID, Ledger.RunEnd(
                result: whole, bytesRead: source.bytesRead, readMode: source.file.mode.rawValue, detail: detail))
            try ledger.finishRun(dstRun, image: dstID, Ledger.RunEnd(
                result: srcRoot == dstRoot ? whole : .mismatch, bytesWritten: dest.bytesWritten,
                readMode: dest.file?.mode.rawValue, detail: detail))
        }
        let chunks = ChunkGeometry(size: size, chunkSize: chunkSize).count
        var report = CopyReport(
            source: CopyEndReport(path: source.file.path, host: nil, size: size, sha256: digest.hex, imageId: source.imageId,
                                  ledger: ledger.path, io: source.file.mode.rawValue),
            destination: CopyEndReport(path: dest.path, host: nil, size: size, sha256: digest.hex, imageId: dest.imageId,
                                       ledger: ledger.path, io: dest.file?.mode.rawValue),
            chunkSize: chunkSize, chunks: chunks, zeroChunks: dest.zeroChunks,
            listRoot: dstRoot.hex, imageId: dest.imageId, transferId: transferId, digestsMatch: srcRoot == dstRoot,
            resumedFromChunk: startIndex > 0 ? startIndex : nil, bytesRead: source.bytesRead,
            bytesWritten: dest.bytesWritten, bytesSent: nil, zeroFrames: nil, retransmissions: nil, remote: nil,
            seconds: monotonicSeconds() - started, resumeChecks: checks)
        report.source.note(format: source.file.format, bytesRead: source.bytesRead)
        report.destination.note(format: dest.format)
        report.noteUnreadable(source.unreadable, reads: source.rescueReads)
        report.destination.note(snapshot: dest.snapshot?.name, error: dest.snapshot?.error)
        return report
    }
}
