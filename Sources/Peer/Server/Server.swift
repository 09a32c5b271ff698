import Chunks
import Copy
import Foundation
import Ledger
import Verify
import Wire

/// `ferry serve`: the far end of a session, on stdin/stdout. Everything it needs (operation,
/// path, ledger, options) arrives in the Request frame, so it also runs as an authorized_keys
/// forced command that ignores the command the client asked for.
public enum Server {
    /// Serves one session; returns the error that ended it, if any (already sent to the client).
    public static func run(environment: [String: String]) -> FerryError? {
        let conn = Connection(input: 0, output: 1, peerName: "the client")
        let log: (String) -> Void = { line in try? conn.send(.log, Array(line.utf8)) }
        do {
            _ = try Handshake.run(conn, hello: Session.hello(), log: { FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!) })
            let request = try JSONBody.decode(Request.self, try conn.expect(.request, log: { _ in }), what: "request")
            try validate(request)
            let ledger = try Ledger(path: request.ledger ?? Ledger.defaultPath(environment: environment))
            switch request.operation {
            case .receive: try receive(request, conn: conn, ledger: ledger, log: log)
            case .send: try send(request, conn: conn, ledger: ledger, log: log)
            case .verify: try verify(request, conn: conn, ledger: ledger)
            case .resendReceive: try ResendServer.receive(request, conn: conn, ledger: ledger, log: log)
            case .resendSend: try ResendServer.send(request, conn: conn, ledger: ledger, log: log)
            }
            return nil
        } catch let e as FerryError {
            conn.sendError(e)
            FileHandle.standardError.write(("ferry serve: \(e)\n").data(using: .utf8)!)
            return e
        } catch {
            let e = FerryError(.remote, "\(error)")
            conn.sendError(e)
            return e
        }
    }

    /// Numbers from the client are checked before anything divides or loops by them.
    static func validate(_ r: Request) throws {
        // Serve's stdin and stdout carry the session: an image there would be mixed into frames.
        guard r.path != "-" else {
            throw FerryError(.usage, "the far end cannot read or write an image on '-': its stdin and stdout carry the session",
                             hint: "name a file or block device on the far host")
        }
        func subBlockOK(_ n: Int) -> Bool { n >= 4096 && n % 4096 == 0 && n <= ChunkGeometry.maxChunkSize }
        switch r.operation {
        case .receive, .send:
            try ChunkGeometry.validate(r.chunkSize)
            guard r.checkpointEvery >= 1 else { throw FerryError(.wire, "the request's checkpoint interval is \(r.checkpointEvery)") }
        case .resendReceive:
            guard subBlockOK(r.subBlockSize) else { throw FerryError(.wire, "the request's sub-block size is \(r.subBlockSize)") }
        case .resendSend:
            guard let plan = r.plan else { throw FerryError(.wire, "resend request without a plan") }
            try ChunkGeometry.validate(plan.chunkSize)
            guard subBlockOK(plan.subBlockSize) else { throw FerryError(.wire, "the plan's sub-block size is \(plan.subBlockSize)") }
        case .verify:
            break
        }
    }

    /// Resume: this end's unfinished record of the transfer, and the newest checkpoint that
    /// both ends hold (the client listed its own in the request).
    static func resumePoint(_ request: Request, role: ImageRole, ledger: Ledger) throws -> (ImageRecord, Int)? {
        guard request.resume,
              let prior = try ledger.images(transfer: request.transferId).last(where: { $0.role == role && !$0.complete })
        else { return nil }
        let n = Resume.common(try ledger.checkpointCounts(image: prior.id), request.checkpoints)
        return n > 0 ? (prior, n) : nil
    }

    /// Push: write the image at `request.path` from the client's chunk frames.
    static func receive(_ request: Request, conn: Connection, ledger: Ledger, log: @escaping (String) -> Void) throws {
        try ChunkGeometry.validate(request.chunkSize)
        let dest = DestinationWriter(path: request.path, chunkSize: request.chunkSize, writeZeros: request.writeZeros)
        try dest.open(expectedSize: request.size, source: nil)
        var start = 0
        var hasher = SHA256Hasher()
        if let (prior, n) = try resumePoint(request, role: .destination, ledger: ledger) {
            hasher = try dest.resume(ledger: ledger, image: prior, at: n)
            start = n
        }
        var ready = Ready(host: ledger.host, ledger: ledger.path)
        ready.resumeFrom = start
        ready.imageId = dest.imageId
        ready.io = dest.file?.mode.rawValue
        try conn.sendJSON(.ready, ready)
        // A fresh destination is truncated only when the first chunk arrives intact: a copy the
        // source side refuses (a disk-image container, say) leaves it untouched.
        let begin: (() throws -> Void)? = start > 0 ? nil : {
            try dest.beginFresh(expectedSize: request.size)
            try dest.register(in: ledger, size: request.size, transferId: request.transferId, peer: request.peer, options: nil)
        }
        let receiver = WireReceiver(connection: conn, destination: dest, ledger: ledger, checkpointEvery: request.checkpointEvery,
                                    expectedSize: request.size, beforeFirstWrite: begin, log: log)
        let result = try receiver.run(startIndex: start, hasher: hasher, progress: ProgressCounter())
        let outcome = try Receiving.finish(receiver: receiver, destination: dest, ledger: ledger, result: result, start: start,
                                           transferId: request.transferId)
        try conn.sendJSON(.result, outcome.result)
    }

    /// Pull: read the image at `request.path` and send it.
    static func send(_ request: Request, conn: Connection, ledger: Ledger, log: @escaping (String) -> Void) throws {
        try ChunkGeometry.validate(request.chunkSize)
        let source = try SourceReader(path: request.path, chunkSize: request.chunkSize, asIs: request.asIs)
        var start = 0
        var hasher = SHA256Hasher()
        if let (prior, n) = try resumePoint(request, role: .source, ledger: ledger) {
            hasher = try source.resume(ledger: ledger, image: prior, at: n)
            start = n
        }
        if start == 0 { try source.register(in: ledger, transferId: request.transferId, peer: request.peer) }
        var ready = Ready(host: ledger.host, ledger: ledger.path)
        ready.resumeFrom = start
        ready.size = source.size
        ready.kind = source.file.kind.rawValue
        ready.imageId = source.imageId
        ready.io = source.file.mode.rawValue
        try conn.sendJSON(.ready, ready)
        let sender = WireSender(connection: conn, source: source, ledger: ledger, checkpointEvery: request.checkpointEvery,
                                compressLevel: request.compressLevel, log: log)
        let (result, body) = try sender.run(startIndex: start, hasher: hasher, progress: ProgressCounter())
        let far = try JSONBody.decode(TransferResult.self, body, what: "result")
        let size = UInt64(start) * UInt64(request.chunkSize) + result.bytes
        let digest = result.wholeDigest!
        let root = try source.complete(ledger: ledger, size: size, digest: digest)
        let match = far.sha256 == digest.hex && far.listRoot == root.hex
        try ledger.finishRun(source.copyRun!, image: source.imageId!, Ledger.RunEnd(
            result: match ? .ok : .mismatch, bytesRead: source.bytesRead, bytesSent: conn.bytesSent,
            readMode: source.file.mode.rawValue,
            detail: RemoteCopy.detail(transferId: request.transferId, resumedFrom: start, retransmissions: sender.retransmissions,
                                      zeroFrames: sender.zeroFrames, farDigest: far.sha256)))
    }

    /// Verify the image at `request.path` here, streaming progress, and send the report.
    static func verify(_ request: Request, conn: Connection, ledger: Ledger) throws {
        let progress = ProgressCounter()
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
        timer.schedule(deadline: .now() + 0.5, repeating: 0.5)
        timer.setEventHandler { try? conn.send(.progress, U64Body.encode(progress.bytes)) }
        timer.resume()
        defer { timer.cancel() }
        var report = try Verifier.run(target: request.path, imageId: request.imageId, ledger: ledger, progress: progress)
        report.host = ledger.host
        timer.cancel()
        try conn.sendJSON(.result, report)
    }
}
