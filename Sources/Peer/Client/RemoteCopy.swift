import Chunks
import Copy
import Foundation
import Ledger
import Wire

/// The client side of a copy with one end on another host. A push reads here and writes there;
/// a pull reads there and writes here. Either way each host records its own end in its own
/// ledger, both under one transfer id.
public enum RemoteCopy {
    public static func run(source: Location, destination: Location, options: CopyOptions, ledger: Ledger,
                           remote: RemoteSettings, progress: ProgressCounter) throws -> CopyReport {
        switch (source, destination) {
        case (.local(let src), .remote(let host, let dst)):
            return try push(src: src, host: host, dst: dst, options: options, ledger: ledger, settings: remote, progress: progress)
        case (.remote(let host, let src), .local(let dst)):
            return try pull(host: host, src: src, dst: dst, options: options, ledger: ledger, settings: remote, progress: progress)
        default:
            throw FerryError(.usage, "one end of a remote copy must be local")
        }
    }

    /// With --resume: the unfinished record of this end of an earlier copy between the same two
    /// places (nil, and a note saying so, when there is none).
    static func unfinished(_ options: CopyOptions, role: ImageRole, path: String, peer: String, ledger: Ledger) throws -> ImageRecord? {
        guard options.resume else { return nil }
        let identity = DeviceIdentity.of(path)
        let prior = try ledger.images(named: identity.names).first {
            $0.role == role && !$0.complete && $0.peer == peer && identity.canBe($0.names)
        }
        if prior == nil {
            FileHandle.standardError.write("ferry: nothing to resume between \(path) and \(peer) here; starting a fresh copy\n".data(using: .utf8)!)
        }
        return prior
    }

    static func push(src: String, host: String, dst: String, options: CopyOptions, ledger: Ledger,
                     settings: RemoteSettings, progress: ProgressCounter) throws -> CopyReport {
        let started = monotonicSeconds()
        let peer = "\(host):\(dst)"
        let prior = try unfinished(options, role: .source, path: src, peer: peer, ledger: ledger)
        let chunkSize = prior?.chunkSize ?? options.chunkSize
        let source = try SourceReader(path: src, chunkSize: chunkSize, asIs: options.asIs)
        let shell = try Session.open(host: host, settings: settings)
        defer { shell.finish() }
        let conn = shell.connection

        let transferId = prior?.transferId ?? newTransferID()
        var request = Request(operation: .receive, path: dst, ledger: settings.remoteLedger, chunkSize: chunkSize,
                              size: source.size, transferId: transferId,
                              peer: "\(ledger.host):\(source.identity.canonical)", checkpointEvery: options.checkpointEvery)
        request.writeZeros = options.writeZeros
        request.compressLevel = options.compressLevel
        request.resume = prior != nil
        request.checkpoints = try prior.map { try ledger.checkpointCounts(image: $0.id) } ?? []
        try conn.sendJSON(.request, request)
        let ready = try JSONBody.decode(Ready.self, try conn.expect(.ready, log: Session.remoteLog), what: "ready")

        var start = 0
        var hasher = SHA256Hasher()
        if ready.resumeFrom > 0, let prior {
            hasher = try source.resume(ledger: ledger, image: prior, at: ready.resumeFrom)
            start = ready.resumeFrom
            progress.set(UInt64(start) * UInt64(chunkSize))
        } else {
            try source.register(in: ledger, transferId: transferId, peer: peer)
        }
        let sender = WireSender(connection: conn, source: source, ledger: ledger, checkpointEvery: options.checkpointEvery,
                                compressLevel: options.compressLevel, log: Session.remoteLog)
        let (result, body) = try resumable { try sender.run(startIndex: start, hasher: hasher, progress: progress) }
        let far = try JSONBody.decode(TransferResult.self, body, what: "result")
        let size = UInt64(start) * UInt64(chunkSize) + result.bytes
        let digest = result.wholeDigest!
        let root = try source.complete(ledger: ledger, size: size, digest: digest)
        let match = far.sha256 == digest.hex && far.listRoot == root.hex && far.size == size
        try ledger.finishRun(source.copyRun!, image: source.imageId!, Ledger.RunEnd(
            result: match ? .ok : .mismatch, bytesRead: source.bytesRead, bytesSent: conn.bytesSent,
            readMode: source.file.mode.rawValue,
            detail: detail(transferId: transferId, resumedFrom: start, retransmissions: sender.retransmissions,
                           zeroFrames: sender.zeroFrames, farDigest: far.sha256)))
        return CopyReport(
            source: CopyEndReport(path: src, host: nil, size: size, sha256: digest.hex, imageId: source.imageId,
                                  ledger: ledger.path, io: source.file.mode.rawValue),
            destination: CopyEndReport(path: dst, host: host, size: far.size, sha256: far.sha256, imageId: far.imageId,
                                       ledger: far.ledger, io: far.io),
            chunkSize: chunkSize, chunks: ChunkGeometry(size: size, chunkSize: chunkSize).count,
            zeroChunks: source.zeroChunks, listRoot: root.hex, imageId: far.imageId, transferId: transferId,
            digestsMatch: match, resumedFromChunk: start > 0 ? start : nil, bytesRead: source.bytesRead,
            bytesWritten: far.bytesWritten, bytesSent: conn.bytesSent, zeroFrames: sender.zeroFrames,
            retransmissions: sender.retransmissions,
            remote: RemoteEndReport(host: host, path: dst, sha256: far.sha256, imageId: far.imageId, ledger: far.ledger),
            seconds: monotonicSeconds() - started)
    }

    static func pull(host: String, src: String, dst: String, options: CopyOptions, ledger: Ledger,
                     settings: RemoteSettings, progress: ProgressCounter) throws -> CopyReport {
        let started = monotonicSeconds()
        let peer = "\(host):\(src)"
        let prior = try unfinished(options, role: .destination, path: dst, peer: peer, ledger: ledger)
        let chunkSize = prior?.chunkSize ?? options.chunkSize
        let dest = DestinationWriter(path: dst, chunkSize: chunkSize, writeZeros: options.writeZeros)
        // Check the destination before the far side reads a byte.
        try dest.open(expectedSize: nil, source: nil)
        let shell = try Session.open(host: host, settings: settings)
        defer { shell.finish() }
        let conn = shell.connection

        let transferId = prior?.transferId ?? newTransferID()
        var request = Request(operation: .send, path: src, ledger: settings.remoteLedger, chunkSize: chunkSize, size: nil,
                              transferId: transferId, peer: "\(ledger.host):\(dest.identity.canonical)",
                              checkpointEvery: options.checkpointEvery)
        request.asIs = options.asIs
        request.compressLevel = options.compressLevel
        request.resume = prior != nil
        request.checkpoints = try prior.map { try ledger.checkpointCounts(image: $0.id) } ?? []
        try conn.sendJSON(.request, request)
        let ready = try JSONBody.decode(Ready.self, try conn.expect(.ready, log: Session.remoteLog), what: "ready")
        try dest.open(expectedSize: ready.size, source: nil)

        var start = 0
        var hasher = SHA256Hasher()
        var begin: (() throws -> Void)? = nil
        if ready.resumeFrom > 0, let prior {
            hasher = try dest.resume(ledger: ledger, image: prior, at: ready.resumeFrom)
            start = ready.resumeFrom
            progress.set(UInt64(start) * UInt64(chunkSize))
        } else {
            begin = {
                try dest.beginFresh(expectedSize: ready.size)
                try dest.register(in: ledger, size: ready.size, transferId: transferId, peer: peer, options: nil)
            }
        }
        let receiver = WireReceiver(connection: conn, destination: dest, ledger: ledger,
                                    checkpointEvery: options.checkpointEvery, expectedSize: ready.size,
                                    beforeFirstWrite: begin, log: Session.remoteLog)
        let result = try resumable { try receiver.run(startIndex: start, hasher: hasher, progress: progress) }
        let outcome = try Receiving.finish(receiver: receiver, destination: dest, ledger: ledger, result: result,
                                           start: start, transferId: transferId)
        try conn.sendJSON(.result, outcome.result)
        let end = receiver.end!
        return CopyReport(
            source: CopyEndReport(path: src, host: host, size: end.size, sha256: end.sha256, imageId: nil,
                                  ledger: ready.ledger, io: ready.io),
            destination: CopyEndReport(path: dst, host: nil, size: outcome.result.size, sha256: outcome.result.sha256,
                                       imageId: dest.imageId, ledger: ledger.path, io: dest.file?.mode.rawValue),
            chunkSize: chunkSize, chunks: outcome.result.chunks, zeroChunks: outcome.result.zeroChunks,
            listRoot: outcome.result.listRoot, imageId: dest.imageId, transferId: transferId, digestsMatch: outcome.match,
            resumedFromChunk: start > 0 ? start : nil, bytesRead: 0, bytesWritten: dest.bytesWritten,
            bytesSent: conn.bytesReceived, zeroFrames: receiver.zeroFrames, retransmissions: receiver.retransmissions,
            remote: RemoteEndReport(host: host, path: src, sha256: end.sha256, imageId: ready.imageId, ledger: ready.ledger),
            seconds: monotonicSeconds() - started)
    }

    /// A copy that broke off after it started can continue from its last checkpoint: say so.
    static func resumable<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch var e as FerryError where [.remote, .wire, .io, .interrupted].contains(e.code) {
            e.hint = (e.hint.map { $0 + "; " } ?? "") + "what was made durable is kept: run the same `ferry copy` with --resume to continue from the last checkpoint"
            throw e
        }
    }

    static func detail(transferId: String, resumedFrom: Int, retransmissions: Int, zeroFrames: Int, farDigest: String) -> String {
        CopyRunDetail(transferId: transferId, resumedFrom: resumedFrom, retransmissions: retransmissions,
                      zeroFrames: zeroFrames, farSha256: farDigest).json
    }
}
