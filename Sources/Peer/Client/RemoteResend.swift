import Chunks
import Copy
import Ledger
import Resend
import Verify
import Wire

/// The client side of a resend with one end on another host.
public enum RemoteResend {
    public static func run(source: Location, destination: Location, ledger: Ledger, imageId: Int64?, verifyFirst: Bool,
                           subBlockSize: Int, force: Bool, retries: Int = RepairTarget.defaultRetries, settings: RemoteSettings,
                           progress: ProgressCounter) throws -> ResendReport {
        let started = monotonicSeconds()
        switch (source, destination) {
        case (.local(let src), .remote(let host, let dst)):
            // The damaged destination is far: it plans and drives; we supply from the source.
            let shell = try Session.open(host: host, settings: settings)
            defer { shell.finish() }
            let conn = shell.connection
            // A resend's far side verifies or re-reads for long stretches without a frame.
            conn.idleTimeout = nil
            let request = Request.resendReceive(RepairRequest(path: dst, ledger: settings.remoteLedger, imageId: imageId,
                                                              verifyFirst: verifyFirst, subBlockSize: subBlockSize,
                                                              peer: "\(ledger.host):\(src)"))
            try conn.send(.request, request.encode())
            let ready = try JSONBody.decode(ResendReady.self, try conn.expect(.ready, log: Session.remoteLog), what: "resend ready")
            try ChunkGeometry.validate(ready.plan.chunkSize)
            try ready.plan.validate()
            let verify = try ready.verifyJSON.map { try JSONBody.decode(VerifyReport.self, Array($0.utf8), what: "verify") }
            if ready.plan.chunks.isEmpty && (verify?.sizeChanged != true) {
                return ResendReport(source: src, destination: destination.display, plan: ready.plan, result: nil, bytesRead: 0,
                                    bytesSent: 0, verify: verify, seconds: monotonicSeconds() - started)
            }
            var plan = ready.plan
            plan.retries = retries
            let supplier = try RepairSource(connection: conn, path: src, plan: plan, ledger: ledger, force: force)
            supplier.log = Session.remoteLog
            let result = try supplier.serve()
            return ResendReport(source: src, destination: destination.display, plan: ready.plan, result: result,
                                bytesRead: supplier.bytesRead, bytesSent: conn.bytesSent, verify: verify,
                                seconds: monotonicSeconds() - started)
        case (.remote(let host, let src), .local(let dst)):
            // The damaged destination is here: plan from our ledger, the far side supplies.
            let target = try RepairTarget.prepare(path: dst, ledger: ledger, imageId: imageId, verifyFirst: verifyFirst,
                                                  subBlockSize: subBlockSize, retries: retries, progress: progress)
            if target.nothingToRepair {
                return ResendReport(source: source.display, destination: dst, plan: target.plan, result: nil, bytesRead: 0,
                                    bytesSent: 0, verify: target.verifyReport, seconds: monotonicSeconds() - started)
            }
            let shell = try Session.open(host: host, settings: settings)
            defer { shell.finish() }
            let conn = shell.connection
            // A resend's far side verifies or re-reads for long stretches without a frame.
            conn.idleTimeout = nil
            let request = Request.resendSend(SupplyRequest(path: src, ledger: settings.remoteLedger, plan: target.plan, force: force,
                                                           peer: "\(ledger.host):\(dst)"))
            try conn.send(.request, request.encode())
            _ = try conn.expect(.ready, log: Session.remoteLog)
            let result = try target.drive(conn, log: Session.remoteLog, progress: progress)
            return ResendReport(source: source.display, destination: dst, plan: target.plan, result: result,
                                bytesRead: nil, bytesSent: conn.bytesReceived, verify: target.verifyReport,
                                seconds: monotonicSeconds() - started)
        default:
            throw FerryError(.usage, "one end of a resend must be on this host")
        }
    }
}
