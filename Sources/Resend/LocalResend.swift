import Chunks
import Copy
import Foundation
import Glibc
import Ledger
import Verify
import Wire

/// `ferry resend SRC DST` with both ends on this host: the same source and destination sides
/// as a remote resend, joined by a socket pair instead of ssh.
public enum LocalResend {
    public static func run(source: String, destination: String, ledger: Ledger, imageId: Int64?, verifyFirst: Bool,
                           subBlockSize: Int, force: Bool, retries: Int = RepairTarget.defaultRetries, progress: ProgressCounter,
                           log: @escaping (String) -> Void) throws -> ResendReport {
        let started = monotonicSeconds()
        let target = try RepairTarget.prepare(path: destination, ledger: ledger, imageId: imageId, verifyFirst: verifyFirst,
                                              subBlockSize: subBlockSize, retries: retries, progress: progress)
        if target.nothingToRepair {
            return ResendReport(source: source, destination: destination, plan: target.plan, result: nil, bytesRead: 0,
                                bytesSent: 0, verify: target.verifyReport, seconds: monotonicSeconds() - started)
        }
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else {
            throw FerryError.syscall("socketpair", path: "resend")
        }
        let destSide = Connection(input: fds[0], output: fds[0], peerName: "the source side")
        let sourceSide = Connection(input: fds[1], output: fds[1], peerName: "the destination side")
        let supplier: RepairSource
        do {
            supplier = try RepairSource(connection: sourceSide, path: source, plan: target.plan, ledger: ledger, force: force)
        } catch {
            close(fds[0]); close(fds[1])
            throw error
        }
        // The source side owns `supplier` and its end of the socket pair; the two sides share
        // nothing else and talk only through the socket.
        let sourceThread = Worker<Void>(name: "ferry.resend-source") {
            do { _ = try supplier.serve() } catch {
                if let e = error as? FerryError { sourceSide.sendError(e) }
                throw error
            }
        }
        let result: ResendResult
        do {
            result = try target.drive(destSide, log: log, progress: progress)
        } catch {
            shutdown(fds[0], Int32(SHUT_RDWR))
            let sourceOutcome = sourceThread.result()
            close(fds[0]); close(fds[1])
            // The source side's own failure is the cause (the destination side got it as an error
            // frame, or lost the connection), unless all the source side saw was its socket
            // closing behind a destination that failed on its own (a busy or unwritable image).
            if case .failure(let e) = sourceOutcome {
                let sourceOnlyLostUs = (e as? FerryError)?.code == .remote
                let weLostIt = [.wire, .remote].contains((error as? FerryError)?.code)
                if !sourceOnlyLostUs || weLostIt { throw e }
            }
            throw error
        }
        let sourceOutcome = sourceThread.result()
        close(fds[0]); close(fds[1])
        if case .failure(let e) = sourceOutcome { throw e }
        return ResendReport(source: source, destination: destination, plan: target.plan, result: result,
                            bytesRead: supplier.bytesRead, bytesSent: destSide.bytesReceived, verify: target.verifyReport,
                            seconds: monotonicSeconds() - started)
    }
}

