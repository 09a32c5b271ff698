import Chunks

/// The options a copy (local or remote) runs with.
public struct CopyOptions: Codable, Sendable {
    public var chunkSize = ChunkGeometry.defaultChunkSize
    public var asIs = false
    public var writeZeros = false
    public var resume = false
    /// Data is made durable and a resumable checkpoint recorded every this many bytes.
    public var checkpointBytes = 256 << 20
    /// zstd level for chunk payloads on the wire; nil = off.
    public var compressLevel: Int?
    public init() {}

    public var checkpointEvery: Int { max(1, checkpointBytes / chunkSize) }
}

/// One end of a finished copy.
public struct CopyEndReport: Codable, Sendable {
    public var path: String
    public var host: String?
    public var size: UInt64
    public var sha256: String
    public var imageId: Int64?
    public var ledger: String?
    public var io: String?
}

/// What `ferry copy` reports (and prints with --json).
public struct CopyReport: Codable, Sendable {
    public var source: CopyEndReport
    public var destination: CopyEndReport
    public var chunkSize: Int
    public var chunks: Int
    public var zeroChunks: Int
    public var listRoot: String
    /// The ledger id of the destination record (in the destination host's ledger).
    public var imageId: Int64?
    public var transferId: String
    public var digestsMatch: Bool
    public var resumedFromChunk: Int?
    public var bytesRead: UInt64
    public var bytesWritten: UInt64
    public var bytesSent: UInt64?
    public var zeroFrames: Int?
    public var retransmissions: Int?
    public var remote: RemoteEndReport?
    public var seconds: Double
}

/// The far end of a remote copy.
public struct RemoteEndReport: Codable, Sendable {
    public var host: String
    public var path: String
    public var sha256: String
    public var imageId: Int64?
    public var ledger: String
}
