import Chunks
import Ledger

/// A copy where both ends are on this host: one read of the source, one write of the destination,
/// both recorded in this host's ledger and linked.
public enum LocalCopy {
    public static func run(source srcPath: String, destination dstPath: String, options: CopyOptions,
                           ledger: Ledger, progress: ProgressCounter) throws -> CopyReport {
        let started = monotonicSeconds()
        var chunkSize = options.chunkSize
        var resumeFrom: (dst: ImageRecord, src: ImageRecord)?
        if options.resume {
            resumeFrom = try Resume.unfinishedLocal(source: srcPath, destination: dstPath, ledger: ledger)
            if let r = resumeFrom { chunkSize = r.dst.chunkSize }
        }
        let source = try SourceReader(path: srcPath, chunkSize: chunkSize, asIs: options.asIs)
        let dest = DestinationWriter(path: dstPath, chunkSize: chunkSize, writeZeros: options.writeZeros)
        var transferId = newTransferID()
        var startIndex = 0
        var hasher = SHA256Hasher()
        var begun = false

        if let r = resumeFrom, let n = try ledger.checkpointCounts(image: r.dst.id).first, n > 0 {
            transferId = r.dst.transferId
            try dest.open(expectedSize: source.size, source: source.file)
            begun = true
            hasher = try source.resume(ledger: ledger, image: r.src, at: n)
            _ = try dest.resume(ledger: ledger, image: r.dst, at: n)
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
        let result = try CopyPass.run(from: origin, to: DestinationEnd(dest, checkpoints: .recordHere(ledger)),
                                      startIndex: startIndex, hasher: hasher, checkpointEvery: options.checkpointEvery,
                                      progress: progress)
        if !begun { try openDestination() }

        let size = UInt64(startIndex) * UInt64(chunkSize) + result.bytes
        let digest = result.wholeDigest!
        let srcRoot = try source.complete(ledger: ledger, size: size, digest: digest)
        let dstRoot = try dest.complete(ledger: ledger, size: size, digest: digest)
        // One copy run per end, so `ferry ledger show` of either image tells how it came to be.
        let detail = CopyRunDetail(transferId: transferId, resumedFrom: startIndex).json
        if let srcRun = source.copyRun, let dstRun = dest.copyRun, let srcID = source.imageId, let dstID = dest.imageId {
            try ledger.finishRun(srcRun, image: srcID, Ledger.RunEnd(
                result: .ok, bytesRead: source.bytesRead, readMode: source.file.mode.rawValue, detail: detail))
            try ledger.finishRun(dstRun, image: dstID, Ledger.RunEnd(
                result: srcRoot == dstRoot ? .ok : .mismatch, bytesWritten: dest.bytesWritten,
                readMode: dest.file?.mode.rawValue, detail: detail))
        }
        let chunks = ChunkGeometry(size: size, chunkSize: chunkSize).count
        return CopyReport(
            source: CopyEndReport(path: srcPath, host: nil, size: size, sha256: digest.hex, imageId: source.imageId,
                                  ledger: ledger.path, io: source.file.mode.rawValue),
            destination: CopyEndReport(path: dstPath, host: nil, size: size, sha256: digest.hex, imageId: dest.imageId,
                                       ledger: ledger.path, io: dest.file?.mode.rawValue),
            chunkSize: chunkSize, chunks: chunks, zeroChunks: dest.zeroChunks,
            listRoot: dstRoot.hex, imageId: dest.imageId, transferId: transferId, digestsMatch: srcRoot == dstRoot,
            resumedFromChunk: startIndex > 0 ? startIndex : nil, bytesRead: source.bytesRead,
            bytesWritten: dest.bytesWritten, bytesSent: nil, zeroFrames: nil, retransmissions: nil, remote: nil,
            seconds: monotonicSeconds() - started)
    }
}
