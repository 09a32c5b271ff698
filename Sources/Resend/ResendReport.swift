import Chunks
import Copy
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
    /// Chunks with bytes unreadable at copy time: all of them now filled, some, or none yet.
    public var filledChunks: Int
    public var partlyFilledChunks: Int
    public var stillUnreadableChunks: Int
    /// Every range of the image still unreadable after this resend (nil: none, or no result).
    public var unreadableRemaining: [ByteRange]?
    /// A ZFS destination: its snapshot, taken again after the repair (or why it could not be).
    public var snapshot: String?
    public var snapshotError: String?
    /// Bytes read at the source (only the planned chunks); nil when the source is on another host,
    /// which counts its own reads.
    public var bytesRead: UInt64?
    /// How the destination read the repaired chunks back.
    public var readMode: String?
    /// Bytes that crossed from the source side to the destination side (frames included).
    public var bytesSent: UInt64
    public var bytesWritten: UInt64
    /// Bytes the destination read back from its medium (before and after writing).
    public var bytesReread: UInt64
    public var chunks: [ResendResult.ChunkOutcome]
    public var verify: VerifyReport?
    public var seconds: Double

    public init(source: String, destination: String, plan: ResendPlan, result: ResendResult?, bytesRead: UInt64?,
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
        filledChunks = outcomes.filter { $0.status == .filled }.count
        partlyFilledChunks = outcomes.filter { $0.status == .partlyFilled }.count
        stillUnreadableChunks = outcomes.filter { $0.status == .stillUnreadable }.count
        unreadableRemaining = result?.unreadableRemaining.flatMap { $0.isEmpty ? nil : $0 }
        snapshot = result?.snapshot
        snapshotError = result?.snapshotError
        self.bytesRead = bytesRead
        self.bytesSent = bytesSent
        bytesWritten = result?.bytesWritten ?? 0
        bytesReread = result?.bytesReread ?? 0
        readMode = result?.readMode
        chunks = outcomes
        self.verify = verify
        self.seconds = seconds
    }
}
