import Chunks
import Copy
import Ledger
import Resend
import Verify
import Wire

/// `ferry serve`'s two resend roles.
enum ResendServer {
    /// The destination is here: plan from this host's ledger, then repair with the client's source.
    static func receive(_ request: RepairRequest, conn: Connection, ledger: Ledger, log: @escaping (String) -> Void) throws {
        let target = try RepairTarget.prepare(path: request.path, ledger: ledger, imageId: request.imageId,
                                              verifyFirst: request.verifyFirst, subBlockSize: request.subBlockSize,
                                              progress: ProgressCounter())
        let verifyJSON = target.verifyReport.map { String(decoding: JSONBody.encode($0), as: UTF8.self) }
        try conn.sendJSON(.ready, ResendReady(plan: target.plan, verifyJSON: verifyJSON))
        if target.nothingToRepair { return }
        _ = try target.drive(conn, log: log, progress: ProgressCounter())
    }

    /// The source is here: supply the sub-blocks the client's destination asks for.
    static func send(_ request: SupplyRequest, conn: Connection, ledger: Ledger, log: @escaping (String) -> Void) throws {
        let supplier = try RepairSource(connection: conn, path: request.path, plan: request.plan, ledger: ledger, force: request.force)
        try conn.sendJSON(.ready, Ready(host: ledger.host, ledger: ledger.path))
        _ = try supplier.serve()
    }
}
