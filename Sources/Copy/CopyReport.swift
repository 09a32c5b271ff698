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
    /// Resume: re-read every copied chunk at both ends before continuing, not a sample.
    public var verifyPrefix = false
    /// The size a stream source must have (`--size`).
    public var streamSize: UInt64?
    /// True when the user named --chunk-size (a resume must then use the same).
    public var chunkSizeGiven = false
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

    public init(path: String, host: String? = nil, size: UInt64, sha256: String, imageId: Int64? = nil, ledger: String? = nil, io: String? = nil) {
        self.path = path
        self.host = host
        self.size = size
        self.sha256 = sha256
        self.imageId = imageId
        self.ledger = ledger
        self.io = io
    }
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
    /// A resumed copy: what each end checked before it trusted the part copied before.
    public var resumeChecks: [String]?

    public init(source: CopyEndReport, destination: CopyEndReport, chunkSize: Int, chunks: Int, zeroChunks: Int, listRoot: String, imageId: Int64? = nil, transferId: String, digestsMatch: Bool, resumedFromChunk: Int? = nil, bytesRead: UInt64, bytesWritten: UInt64, bytesSent: UInt64? = nil, zeroFrames: Int? = nil, retransmissions: Int? = nil, remote: RemoteEndReport? = nil, seconds: Double, resumeChecks: [String]? = nil) {
        self.source = source
        self.destination = destination
        self.chunkSize = chunkSize
        self.chunks = chunks
        self.zeroChunks = zeroChunks
        self.listRoot = listRoot
        self.imageId = imageId
        self.transferId = transferId
        self.digestsMatch = digestsMatch
        self.resumedFromChunk = resumedFromChunk
        self.bytesRead = bytesRead
        self.bytesWritten = bytesWritten
        self.bytesSent = bytesSent
        self.zeroFrames = zeroFrames
        self.retransmissions = retransmissions
        self.remote = remote
        self.seconds = seconds
        self.resumeChecks = resumeChecks
    }
}

/// The far end of a remote copy.
public struct RemoteEndReport: Codable, Sendable {
    public var host: String
    public var path: String
    public var sha256: String
    public var imageId: Int64?
    public var ledger: String

    public init(host: String, path: String, sha256: String, imageId: Int64? = nil, ledger: String) {
        self.host = host
        self.path = path
        self.sha256 = sha256
        self.imageId = imageId
        self.ledger = ledger
    }
}
