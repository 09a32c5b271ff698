import Chunks
import Copy
import Foundation
import Ledger
import Verify
import Wire

/// The client side of `ferry verify host:path`.
public enum RemoteVerify {
    /// `ledger`: this host's ledger, when it exists. If it holds the other end of the copy the far
    /// record describes, the two must agree (a far ledger edited to match damage would otherwise
    /// make the far verify say OK).
    public static func run(host: String, path: String, imageId: Int64?, settings: RemoteSettings, ledger: Ledger?,
                           progress: ProgressCounter, live: Bool = false, maxRate: UInt64? = nil,
                           resume: Bool = false) throws -> VerifyReport {
        let shell = try Session.open(host: host, settings: settings)
        defer { shell.finish() }
        let conn = shell.connection
        let request = Request.verify(VerifyRequest(path: path, ledger: settings.remoteLedger, imageId: imageId, timeout: settings.timeout,
                                                    live: live, maxRate: maxRate, resume: resume))
        try conn.send(.request, request.encode())
        var talk = Conversation(.verifyClient, peer: conn.peerName)
        while true {
            let incoming = try conn.receive()
            try talk.admit(incoming)
            switch incoming {
            case .control(.progress, let body): progress.set(try U64Body.decode(body))
            case .control(.result, let body):
                var report = try JSONBody.decode(VerifyReport.self, body, what: "verify result")
                report.host = host
                if let ledger, let far = report.record,
                   let local = try ledger.images(transfer: far.transferId).last(where: { $0.complete && $0.sha256 != nil }) {
                    try far.check(against: local, far: "\(host):\(path)", ledger: ledger.path)
                    report.crossChecked = "image \(local.id) in \(ledger.path)"
                }
                return report
            case .control(let t, let body): try conn.other(t, body, during: "verify", log: Session.remoteLog)
            case .chunk: throw FerryError(.wire, "\(conn.peerName) sent a chunk frame during verify")
            }
        }
    }
}
