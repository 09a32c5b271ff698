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
            resumeFrom = try findUnfinished(source: srcPath, destination: dstPath, ledger: ledger)
            if let r = resumeFrom { chunkSize = r.dst.chunkSize }
        }
        let source = try SourceReader(path: srcPath, chunkSize: chunkSize, asIs: options.asIs)
        let dest = DestinationWriter(path: dstPath, chunkSize: chunkSize, writeZeros: options.writeZeros)
        let pump = ChunkPump(chunkSize: chunkSize)
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

        let result = try pump.run(startIndex: startIndex, hasher: hasher, checkpointEvery: options.checkpointEvery, fill: { slot in
            let n = try source.fill(slot)
            // The destination is begun only after chunk 0 passed the container check, so a
            // refused copy leaves the destination untouched.
            if !begun { try openDestination() }
            return n
        }, consume: { slot in
            try dest.accept(slot)
            try source.record(slot)
            progress.add(slot.length)
        }, afterWhole: { slot in
            try source.flush()
            try dest.checkpoint(ledger: ledger, through: slot.index, hasher: slot.hasherAfter)
            if let id = source.imageId { try ledger.checkpoint(image: id, chunks: slot.index + 1, state: slot.hasherAfter?.savedState) }
        })
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

    /// The latest unfinished copy from `source` to `destination` in this ledger, if any.
    static func findUnfinished(source: String, destination: String, ledger: Ledger) throws -> (dst: ImageRecord, src: ImageRecord)? {
        let srcIdentity = DeviceIdentity.of(source)
        let dstIdentity = DeviceIdentity.of(destination)
        for dst in try ledger.images(named: dstIdentity.names)
        where dst.role == .destination && !dst.complete && dstIdentity.canBe(dst.names) {
            guard let peer = dst.peerImageId, let src = try ledger.image(peer), !src.complete,
                  srcIdentity.canBe(src.names) else { continue }
            return (dst, src)
        }
        return nil
    }
}
