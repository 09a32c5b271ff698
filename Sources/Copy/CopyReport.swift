import Chunks
import Ledger

/// The options a copy (local or remote) runs with.
public struct CopyOptions: Sendable {
    public var chunkSize = ChunkGeometry.defaultChunkSize
    public var asIs = false
    /// The source's container format (`--source-format`): nil to read it from the header.
    public var sourceFormat: String?
    /// The destination's format (`--dest-format`): nil for qcow2 when the name ends in .qcow2,
    /// else raw.
    public var destFormat: String?
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
    /// What a source read error does, and how many more times a rescue tries each bad range.
    public var onReadError = ReadErrorPolicy.abort
    public var retries = 0
    /// Snapshot a destination on ZFS once it is durable (`--no-snapshot` turns it off).
    public var snapshot = true
    /// Counts unreadable source bytes as they are found, for the progress line.
    public var unreadableProgress = ProgressCounter()
    public init() {}

    public var checkpointEvery: Int { max(1, checkpointBytes / chunkSize) }

    /// The format the destination at `path` is written in (see `DestinationWriter.format`).
    public func destinationFormat(for path: String) throws -> String {
        // --source-format raw reads a raw disk whose first sector only looks like a container:
        // whether the .qcow2 name means a qcow2 of it is the user's to say.
        if destFormat == nil && !asIs && sourceFormat == "raw" && path.lowercased().hasSuffix(".qcow2") {
            throw FerryError(.usage, "--source-format raw with a destination named .qcow2: say how to write \(path)",
                             hint: "add --dest-format qcow2 (the source's bytes as the disk inside a qcow2) or --dest-format raw (a plain file)")
        }
        return try DestinationWriter.format(for: path, given: destFormat, sourceAsIs: asIs)
    }
}

/// One end of a finished copy.
public struct CopyEndReport: Codable, Sendable {
    public var path: String
    public var host: String?
    public var size: UInt64
    /// The whole-image SHA-256; null when some source bytes could not be read (no digest of the
    /// real image was ever computed).
    public var sha256: String?
    public var imageId: Int64?
    public var ledger: String?
    public var io: String?
    /// The source end of a rescue copy: the byte ranges it could not read (zeros stand there).
    public var unreadableRanges: [ByteRange]?
    /// The destination end: the ZFS snapshot taken once it was durable (null when none), and,
    /// on ZFS, why none was taken.
    public var snapshot: String?
    public var snapshotError: String?
    /// How the end's bytes are read or written: `raw` (a plain file or device), a container
    /// format (vdi, qcow2, vmdk, vpc, vhdx, qed), or `nbd` (an export).
    public var format: String?
    /// The source end: bytes actually read from the medium or NBD server (extents the server
    /// reports as zeros are not read).
    public var bytesRead: UInt64?
    /// Whether `snapshot` is reported (the destination end) or left out (the source end).
    public var reportsSnapshot = false

    /// Fills in how the end's bytes were read or written, and (a source) how many were read.
    public mutating func note(format: String?, bytesRead: UInt64? = nil) {
        (self.format, self.bytesRead) = (format ?? "raw", bytesRead)
    }

    /// Fills in the snapshot fields of a destination end: the snapshot's name, or why none.
    public mutating func note(snapshot name: String?, error: String?) {
        reportsSnapshot = true
        (snapshot, snapshotError) = (name, error)
    }

    public init(path: String, host: String? = nil, size: UInt64, sha256: String?, imageId: Int64? = nil, ledger: String? = nil, io: String? = nil) {
        self.path = path
        self.host = host
        self.size = size
        self.sha256 = sha256
        self.imageId = imageId
        self.ledger = ledger
        self.io = io
    }

    enum CodingKeys: String, CodingKey { case path, host, size, sha256, imageId, ledger, io, format, bytesRead, unreadableRanges, snapshot, snapshotError }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.decode(String.self, forKey: .path)
        host = try c.decodeIfPresent(String.self, forKey: .host)
        size = try c.decode(UInt64.self, forKey: .size)
        sha256 = try c.decodeIfPresent(String.self, forKey: .sha256)
        imageId = try c.decodeIfPresent(Int64.self, forKey: .imageId)
        ledger = try c.decodeIfPresent(String.self, forKey: .ledger)
        io = try c.decodeIfPresent(String.self, forKey: .io)
        unreadableRanges = try c.decodeIfPresent([ByteRange].self, forKey: .unreadableRanges)
        format = try c.decodeIfPresent(String.self, forKey: .format)
        bytesRead = try c.decodeIfPresent(UInt64.self, forKey: .bytesRead)
        reportsSnapshot = c.contains(.snapshot)
        snapshot = try c.decodeIfPresent(String.self, forKey: .snapshot)
        snapshotError = try c.decodeIfPresent(String.self, forKey: .snapshotError)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(path, forKey: .path)
        try c.encodeIfPresent(host, forKey: .host)
        try c.encode(size, forKey: .size)
        try c.encode(sha256, forKey: .sha256)   // null, not absent, when there is none
        try c.encodeIfPresent(imageId, forKey: .imageId)
        try c.encodeIfPresent(ledger, forKey: .ledger)
        try c.encodeIfPresent(io, forKey: .io)
        try c.encodeIfPresent(format, forKey: .format)
        try c.encodeIfPresent(bytesRead, forKey: .bytesRead)
        try c.encodeIfPresent(unreadableRanges, forKey: .unreadableRanges)
        if reportsSnapshot { try c.encode(snapshot, forKey: .snapshot) }
        try c.encodeIfPresent(snapshotError, forKey: .snapshotError)
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
    /// A rescue copy (`--on-read-error=record`): bytes the source could not read, and the reads
    /// it took to narrow them (how many failed).
    public var unreadableBytes: UInt64?
    public var rescueReads: Int?
    public var failedReads: Int?
    /// Things the result should be read with (a source that holds a rescue copy's zeros).
    public var warnings: [String]?

    /// Every byte arrived and both ends agree: no unreadable source bytes, digests equal.
    public var intact: Bool { digestsMatch && (unreadableBytes ?? 0) == 0 }

    /// Fills in what the source could not read.
    public mutating func noteUnreadable(_ ranges: [ByteRange], reads: (reads: Int, failed: Int)?) {
        guard !ranges.isEmpty else { return }
        source.unreadableRanges = ranges
        unreadableBytes = ByteRange.total(ranges)
        source.sha256 = nil
        destination.sha256 = nil
        remote?.sha256 = nil
        if let reads, reads.reads > 0 { (rescueReads, failedReads) = (reads.reads, reads.failed) }
    }

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
    public var sha256: String?
    public var imageId: Int64?
    public var ledger: String

    public init(host: String, path: String, sha256: String?, imageId: Int64? = nil, ledger: String) {
        self.host = host
        self.path = path
        self.sha256 = sha256
        self.imageId = imageId
        self.ledger = ledger
    }
}
