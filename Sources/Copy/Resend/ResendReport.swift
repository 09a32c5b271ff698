import Chunks
import Foundation
import Glibc
import Ledger
import Verify
import Wire

/// What `ferry resend` reports (and prints with --json).
public struct ResendReport: Codable, Sendable {
    public var source: String
    public var destination: String
    public var imageId: Int64
    public var runId: Int64?
    public var nothingToRepair: Bool
    public var repairedChunks: Int
    public var forcedChunks: Int
    public var failedChunks: Int
    public var refusedChunks: Int
    /// Bytes read at the source (only the planned chunks).
    public var bytesRead: UInt64
    /// Bytes that crossed from the source side to the destination side (frames included).
    public var bytesSent: UInt64
    public var bytesWritten: UInt64
    /// Bytes the destination read back from its medium (before and after writing).
    public var bytesReread: UInt64
    public var chunks: [ResendResult.ChunkOutcome]
    public var verify: VerifyReport?
    public var seconds: Double

    public init(source: String, destination: String, plan: ResendPlan, result: ResendResult?, bytesRead: UInt64,
                bytesSent: UInt64, verify: VerifyReport?, seconds: Double) {
        self.source = source
        self.destination = destination
        imageId = plan.imageId
        runId = result?.runId
        let outcomes = result?.chunks ?? []
        nothingToRepair = result == nil
        repairedChunks = outcomes.filter { $0.status == .repaired }.count
        forcedChunks = outcomes.filter { $0.status == .forced }.count
        failedChunks = outcomes.filter { $0.status == .failed }.count
        refusedChunks = outcomes.filter { $0.status == .refused }.count
        self.bytesRead = bytesRead
        self.bytesSent = bytesSent
        bytesWritten = result?.bytesWritten ?? 0
        bytesReread = result?.bytesReread ?? 0
        chunks = outcomes
        self.verify = verify
        self.seconds = seconds
    }
}

/// `ferry resend SRC DST` with both ends on this host: the same source and destination sides
/// as a remote resend, joined by a socket pair instead of ssh.
public enum LocalResend {
    public static func run(source: String, destination: String, ledger: Ledger, imageId: Int64?, verifyFirst: Bool,
                           subBlockSize: Int, force: Bool, progress: ProgressCounter,
                           log: @escaping (String) -> Void) throws -> ResendReport {
        let started = monotonicSeconds()
        let target = try RepairTarget.prepare(path: destination, ledger: ledger, imageId: imageId, verifyFirst: verifyFirst,
                                              subBlockSize: subBlockSize, progress: progress)
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
            if case .failure(let e) = sourceOutcome { throw e }
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

