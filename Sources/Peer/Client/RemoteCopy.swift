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

    static func push(src: String, host: String, dst: String, options: CopyOptions, ledger: Ledger,
                     settings: RemoteSettings, progress: ProgressCounter) throws -> CopyReport {
        let started = monotonicSeconds()
        let peer = "\(host):\(dst)"
        _ = try options.destinationFormat(for: dst)   // a wrong --dest-format is refused before ssh starts
        let prior = try Resume.unfinished(options.resume, role: .source, path: src, peer: peer, ledger: ledger)
        let chunkSize = try prior.map { try Resume.chunkSize(of: $0, options: options) } ?? options.chunkSize
        let source = try SourceReader(path: src, chunkSize: chunkSize, asIs: options.asIs, sourceFormat: options.sourceFormat, expectedSize: options.streamSize,
                                      onReadError: options.onReadError, retries: options.retries,
                                      unreadableBytes: options.unreadableProgress)
        let inherited = source.inheritRescueGaps(from: ledger)
        if let inherited { Console.err("ferry: warning: \(inherited)\n") }
        var report = try endingRuns(of: [source], in: ledger) {
            try push(source, prior: prior, host: host, dst: dst, options: options, ledger: ledger, settings: settings,
                     progress: progress, started: started)
        }
        report.warnings = inherited.map { [$0] }
        return report
    }

    private static func push(_ source: SourceReader, prior: ImageRecord?, host: String, dst: String, options: CopyOptions,
                             ledger: Ledger, settings: RemoteSettings, progress: ProgressCounter, started: Double) throws -> CopyReport {
        let src = source.file.path
        let peer = "\(host):\(dst)"
        let chunkSize = source.chunkSize
        let shell = try Session.open(host: host, settings: settings)
        defer { shell.finish() }
        let conn = shell.connection

        let transferId = prior?.transferId ?? newTransferID()
        var request = CopyRequest(path: dst, ledger: settings.remoteLedger, chunkSize: chunkSize, size: source.size,
                                  transferId: transferId, peer: "\(ledger.host):\(source.identity.canonical)",
                                  checkpointEvery: options.checkpointEvery)
        request.writeZeros = options.writeZeros
        request.compressLevel = options.compressLevel
        request.resumeCheckpoints = try prior.map { try ledger.checkpointCounts(image: $0.id) }
        request.verifyPrefix = options.verifyPrefix
        request.timeout = settings.timeout
        request.snapshot = options.snapshot
        let destFormat = try options.destinationFormat(for: dst)
        request.destFormat = destFormat
        try conn.send(.request, Request.receive(request).encode())
        let ready = try JSONBody.decode(Ready.self, try conn.expect(.ready, log: Session.remoteLog), what: "ready")
        // A far ferry that predates qcow2 destinations ignores the field and would write raw bytes
        // into the .qcow2 file: stop before the first chunk, when it has written nothing.
        guard (ready.format ?? "raw") == destFormat else {
            throw FerryError(.refused, "the ferry on \(host) would write \(dst) as \(ready.format ?? "raw bytes"), not \(destFormat): it does not know --dest-format",
                             hint: "install this ferry version on \(host) (or pass --dest-format raw); nothing was written")
        }

        var start = 0
        var hasher = SHA256Hasher()
        var checks: [String]?
        if ready.resumeFrom > 0, let prior {
            let here: String
            (hasher, here) = try source.resume(ledger: ledger, image: prior, at: ready.resumeFrom, verifyPrefix: options.verifyPrefix)
            checks = [here] + [ready.resumeCheck.map { "\(host): \($0)" }].compactMap { $0 }
            start = ready.resumeFrom
            progress.set(UInt64(start) * UInt64(chunkSize))
        } else {
            try source.register(in: ledger, transferId: transferId, peer: peer)
        }
        let sender = WireSender(connection: conn, source: source, ledger: ledger, checkpointEvery: options.checkpointEvery,
                                compressLevel: options.compressLevel, log: Session.remoteLog)
        let (result, body) = try resumable { try sender.run(startIndex: start, hasher: hasher, progress: progress) }
        let far = try JSONBody.decode(TransferResult.self, body, what: "result")
        let sent = try Completion.sending(sender: sender, source: source, ledger: ledger, result: result, start: start,
                                          far: far, transferId: transferId, bytesSent: conn.bytesSent)
        let size = sent.size
        var report = CopyReport(
            source: CopyEndReport(path: src, host: nil, size: size, sha256: sent.digest.hex, imageId: source.imageId,
                                  ledger: ledger.path, io: source.file.mode.rawValue),
            destination: CopyEndReport(path: dst, host: host, size: far.size, sha256: far.sha256, imageId: far.imageId,
                                       ledger: far.ledger, io: far.io),
            chunkSize: chunkSize, chunks: ChunkGeometry(size: size, chunkSize: chunkSize).count,
            zeroChunks: source.zeroChunks, listRoot: sent.listRoot.hex, imageId: far.imageId, transferId: transferId,
            digestsMatch: sent.match, resumedFromChunk: start > 0 ? start : nil, bytesRead: source.bytesRead,
            bytesWritten: far.bytesWritten, bytesSent: conn.bytesSent, zeroFrames: sender.zeroFrames,
            retransmissions: sender.retransmissions,
            remote: RemoteEndReport(host: host, path: dst, sha256: far.sha256, imageId: far.imageId, ledger: far.ledger),
            seconds: monotonicSeconds() - started, resumeChecks: checks)
        report.noteUnreadable(source.unreadable, reads: source.rescueReads)
        report.source.note(format: source.file.format, bytesRead: source.bytesRead)
        report.destination.note(format: destFormat)
        report.destination.note(snapshot: far.snapshot, error: far.snapshotError)
        return report
    }

    static func pull(host: String, src: String, dst: String, options: CopyOptions, ledger: Ledger,
                     settings: RemoteSettings, progress: ProgressCounter) throws -> CopyReport {
        let started = monotonicSeconds()
        let peer = "\(host):\(src)"
        let prior = try Resume.unfinished(options.resume, role: .destination, path: dst, peer: peer, ledger: ledger)
        let chunkSize = try prior.map { try Resume.chunkSize(of: $0, options: options) } ?? options.chunkSize
        try ledger.checkWritable()
        let dest = DestinationWriter(path: dst, chunkSize: chunkSize, writeZeros: options.writeZeros, ledger: ledger,
                                     format: try options.destinationFormat(for: dst))
        if let prior { try dest.checkResumable(prior) }
        dest.takeSnapshot = options.snapshot
        return try endingRuns(of: [dest], in: ledger) {
            try pull(into: dest, prior: prior, host: host, src: src, options: options, ledger: ledger, settings: settings,
                     progress: progress, started: started)
        }
    }

    private static func pull(into dest: DestinationWriter, prior: ImageRecord?, host: String, src: String, options: CopyOptions,
                             ledger: Ledger, settings: RemoteSettings, progress: ProgressCounter, started: Double) throws -> CopyReport {
        let dst = dest.path
        let peer = "\(host):\(src)"
        let chunkSize = dest.chunkSize
        // Check the destination before the far side reads a byte.
        try dest.open(expectedSize: nil, source: nil)
        let shell = try Session.open(host: host, settings: settings)
        defer { shell.finish() }
        let conn = shell.connection

        let transferId = prior?.transferId ?? newTransferID()
        var request = CopyRequest(path: src, ledger: settings.remoteLedger, chunkSize: chunkSize, size: nil,
                                  transferId: transferId, peer: "\(ledger.host):\(dest.identity.canonical)",
                                  checkpointEvery: options.checkpointEvery)
        request.asIs = options.asIs
        request.sourceFormat = options.sourceFormat
        request.compressLevel = options.compressLevel
        request.resumeCheckpoints = try prior.map { try ledger.checkpointCounts(image: $0.id) }
        request.verifyPrefix = options.verifyPrefix
        request.timeout = settings.timeout
        request.recordReadErrors = options.onReadError == .record
        request.retries = options.retries
        try conn.send(.request, Request.send(request).encode())
        let ready = try JSONBody.decode(Ready.self, try conn.expect(.ready, log: Session.remoteLog), what: "ready")
        try dest.open(expectedSize: ready.size, source: nil)

        var start = 0
        var hasher = SHA256Hasher()
        var begin: (() throws -> Void)? = nil
        var checks: [String]?
        if ready.resumeFrom > 0, let prior {
            let here: String
            (hasher, here) = try dest.resume(ledger: ledger, image: prior, at: ready.resumeFrom, verifyPrefix: options.verifyPrefix)
            checks = [ready.resumeCheck.map { "\(host): \($0)" }, here].compactMap { $0 }
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
        receiver.unreadableBytes = options.unreadableProgress
        let result = try resumable { try receiver.run(startIndex: start, hasher: hasher, progress: progress) }
        let outcome = try Completion.receiving(receiver: receiver, destination: dest, ledger: ledger, result: result,
                                           start: start, transferId: transferId)
        try conn.sendJSON(.result, outcome.result)
        let end = receiver.end!
        var report = CopyReport(
            source: CopyEndReport(path: src, host: host, size: end.size, sha256: end.sha256, imageId: nil,
                                  ledger: ready.ledger, io: ready.io),
            destination: CopyEndReport(path: dst, host: nil, size: outcome.result.size, sha256: outcome.result.sha256,
                                       imageId: dest.imageId, ledger: ledger.path, io: dest.file?.mode.rawValue),
            chunkSize: chunkSize, chunks: outcome.result.chunks, zeroChunks: outcome.result.zeroChunks,
            listRoot: outcome.result.listRoot, imageId: dest.imageId, transferId: transferId, digestsMatch: outcome.match,
            resumedFromChunk: start > 0 ? start : nil, bytesRead: end.bytesRead ?? 0, bytesWritten: dest.bytesWritten,
            bytesSent: conn.bytesReceived, zeroFrames: receiver.zeroFrames, retransmissions: receiver.retransmissions,
            remote: RemoteEndReport(host: host, path: src, sha256: end.sha256, imageId: ready.imageId, ledger: ready.ledger),
            seconds: monotonicSeconds() - started, resumeChecks: checks)
        report.noteUnreadable(dest.unreadable, reads: nil)
        report.source.note(format: ready.format, bytesRead: end.bytesRead)
        report.destination.note(format: dest.format)
        report.destination.note(snapshot: dest.snapshot?.name, error: dest.snapshot?.error)
        return report
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
}
