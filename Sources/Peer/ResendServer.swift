import Chunks
import Ledger
import Wire

enum ResendServer {
    static func receive(_ request: Request, conn: Connection, ledger: Ledger, log: @escaping (String) -> Void) throws {
        throw FerryError(.usage, "resend over the wire is not available in this build")
    }
    static func send(_ request: Request, conn: Connection, ledger: Ledger, log: @escaping (String) -> Void) throws {
        throw FerryError(.usage, "resend over the wire is not available in this build")
    }
}
