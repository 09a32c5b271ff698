import Chunks
import Copy
import Foundation
import Ledger
import Verify
import Wire

/// `ferry serve`: the far end of a session, on stdin/stdout. Everything it needs (operation,
/// path, ledger, options) arrives in the Request frame, so it also runs as an authorized_keys
/// forced command that ignores the command the client asked for; that command's `--restrict-to`
/// and `--read-only` (a `ServePolicy`) limit what the request may touch.
public enum Server {
    /// Serves one session; returns the error that ended it, if any (already sent to the client).
    /// `restrictTo` and `readOnly` are serve's own options, resolved and applied after the
    /// handshake, so a refusal (or a misconfigured forced command) reaches the client in-band.
    public static func run(environment: [String: String], restrictTo: [String] = [], readOnly: Bool = false) -> FerryError? {
        let conn = Connection(input: 0, output: 1, peerName: "the client")
        // Until the request names the client's --timeout: a client that never says a word
        // does not keep a serve waiting forever.
        conn.idleTimeout = RemoteSettings.defaultTimeout
        let log: (String) -> Void = { line in try? conn.send(.log, Array(line.utf8)) }
        do {
            _ = try Handshake.run(conn, hello: Session.hello(), log: { Console.err($0 + "\n") })
            let request = try Request.decode(try conn.expect(.request, log: { _ in }))
            let defaultLedger = Ledger.defaultPath(environment: environment)
            let ledgerPath = request.ledger ?? defaultLedger
            switch request {
            case .receive(let r), .send(let r): conn.idleTimeout = r.timeout
            case .verify(let r): conn.idleTimeout = r.timeout
            // A resend's far side verifies or plans for a long time without a frame.
            case .resendReceive, .resendSend: conn.idleTimeout = nil
            }
            // Before any ledger or image is opened or created: what this serve may touch, and
            // never a ledger on the image.
            try ServePolicy(restrictTo: restrictTo, readOnly: readOnly).check(request, defaultLedger: defaultLedger)
            switch request {
            case .receive(let r): try DestinationWriter.refuseOverlap(ledger: ledgerPath, destination: r.path)
            case .resendReceive(let r): try DestinationWriter.refuseOverlap(ledger: ledgerPath, destination: r.path)
            default: break
            }
            let ledger = try Ledger(path: ledgerPath)
            switch request {
            case .receive(let r): try receive(r, conn: conn, ledger: ledger, log: log)
            case .send(let r): try send(r, conn: conn, ledger: ledger, log: log)
            case .verify(let r): try verify(r, conn: conn, ledger: ledger)
            case .resendReceive(let r): try ResendServer.receive(r, conn: conn, ledger: ledger, log: log)
            case .resendSend(let r): try ResendServer.send(r, conn: conn, ledger: ledger, log: log)
            }
            return nil
        } catch let e as FerryError where e.fromPeer {
            // The client's own error, which it already reported: not sent back, not echoed.
            return e
        } catch let e as FerryError {
            // Sent in-band, where the client shows it once with "remote:". Only when that fails
            // does it go to stderr, which ssh carries to the client's terminal.
            if !conn.sendError(e) { Console.err("ferry serve: \(e)\n") }
            return e
        } catch {
            let e = FerryError(.remote, "\(error)")
            conn.sendError(e)
            return e
        }
    }

    /// Push: write the image at `request.path` from the client's chunk frames.
    static func receive(_ request: CopyRequest, conn: Connection, ledger: Ledger, log: @escaping (String) -> Void) throws {
        try ledger.checkWritable()
        let format = try DestinationWriter.format(for: request.path, given: request.destFormat ?? "raw", sourceAsIs: false)
        let dest = DestinationWriter(path: request.path, chunkSize: request.chunkSize, writeZeros: request.writeZeros, ledger: ledger,
                                     format: format)
        try endingRuns(of: [dest], in: ledger) { try receive(request, into: dest, conn: conn, ledger: ledger, log: log) }
    }

    private static func receive(_ request: CopyRequest, into dest: DestinationWriter, conn: Connection, ledger: Ledger,
                                log: @escaping (String) -> Void) throws {
        let point = try Resume.point(transferId: request.transferId, role: .destination, theirs: request.resumeCheckpoints, ledger: ledger)
        if let (prior, _) = point { try dest.checkResumable(prior) }
        try dest.open(expectedSize: request.size, source: nil)
        var start = 0
        var hasher = SHA256Hasher()
        var checked: String?
        if let (prior, n) = point {
            (hasher, checked) = try dest.resume(ledger: ledger, image: prior, at: n, verifyPrefix: request.verifyPrefix)
            start = n
        }
        var ready = Ready(host: ledger.host, ledger: ledger.path)
        ready.resumeCheck = checked
        ready.resumeFrom = start
        ready.imageId = dest.imageId
        ready.io = dest.file?.mode.rawValue
        ready.format = dest.format
        try conn.sendJSON(.ready, ready)
        // A fresh destination is truncated only when the first chunk arrives intact: a copy the
        // source side refuses (a disk-image container, say) leaves it untouched.
        let begin: (() throws -> Void)? = start > 0 ? nil : {
            try dest.beginFresh(expectedSize: request.size)
            try dest.register(in: ledger, size: request.size, transferId: request.transferId, peer: request.peer, options: nil)
        }
        dest.takeSnapshot = request.snapshot
        let receiver = WireReceiver(connection: conn, destination: dest, ledger: ledger, checkpointEvery: request.checkpointEvery,
                                    expectedSize: request.size, beforeFirstWrite: begin, log: log)
        let result = try receiver.run(startIndex: start, hasher: hasher, progress: ProgressCounter())
        let outcome = try Completion.receiving(receiver: receiver, destination: dest, ledger: ledger, result: result, start: start,
                                           transferId: request.transferId)
        try conn.sendJSON(.result, outcome.result)
    }

    /// Pull: read the image at `request.path` and send it.
    static func send(_ request: CopyRequest, conn: Connection, ledger: Ledger, log: @escaping (String) -> Void) throws {
        let source = try SourceReader(path: request.path, chunkSize: request.chunkSize, asIs: request.asIs,
                                      sourceFormat: request.sourceFormat, onReadError: request.recordReadErrors ? .record : .abort, retries: request.retries)
        // A rescue copy's result copied onward carries its ranges (the client's report lists them).
        if let inherited = source.inheritRescueGaps(from: ledger) { log("warning: " + inherited) }
        try endingRuns(of: [source], in: ledger) { try send(request, from: source, conn: conn, ledger: ledger, log: log) }
    }

    private static func send(_ request: CopyRequest, from source: SourceReader, conn: Connection, ledger: Ledger,
                             log: @escaping (String) -> Void) throws {
        var start = 0
        var hasher = SHA256Hasher()
        var checked: String?
        if let (prior, n) = try Resume.point(transferId: request.transferId, role: .source, theirs: request.resumeCheckpoints, ledger: ledger) {
            (hasher, checked) = try source.resume(ledger: ledger, image: prior, at: n, verifyPrefix: request.verifyPrefix)
            start = n
        }
        if start == 0 { try source.register(in: ledger, transferId: request.transferId, peer: request.peer) }
        var ready = Ready(host: ledger.host, ledger: ledger.path)
        ready.resumeFrom = start
        ready.resumeCheck = checked
        ready.size = source.size
        ready.kind = source.file.kind.rawValue
        ready.imageId = source.imageId
        ready.io = source.file.mode.rawValue
        ready.format = source.file.format
        try conn.sendJSON(.ready, ready)
        let sender = WireSender(connection: conn, source: source, ledger: ledger, checkpointEvery: request.checkpointEvery,
                                compressLevel: request.compressLevel, log: log)
        let (result, body) = try sender.run(startIndex: start, hasher: hasher, progress: ProgressCounter())
        let far = try JSONBody.decode(TransferResult.self, body, what: "result")
        _ = try Completion.sending(sender: sender, source: source, ledger: ledger, result: result, start: start, far: far,
                                   transferId: request.transferId, bytesSent: conn.bytesSent)
    }

    /// Verify the image at `request.path` here, streaming progress, and send the report.
    static func verify(_ request: VerifyRequest, conn: Connection, ledger: Ledger) throws {
        let progress = ProgressCounter()
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
        timer.schedule(deadline: .now() + 0.5, repeating: 0.5)
        timer.setEventHandler { try? conn.send(.progress, U64Body.encode(progress.bytes)) }
        timer.resume()
        defer { timer.cancel() }
        var report = try Verifier.run(target: request.path, imageId: request.imageId, ledger: ledger, progress: progress,
                                      live: request.live, maxRate: request.maxRate, resume: request.resume)
        report.host = ledger.host
        timer.cancel()
        try conn.sendJSON(.result, report)
    }
}
