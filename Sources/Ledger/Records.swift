import Chunks
import Foundation

public enum ImageRole: String, Codable, Sendable { case source, destination }

/// What a run did to an image.
public enum RunKind: String, Codable, Sendable { case copy, verify, resend }

/// How a run ended, as the ledger records it (`running` until it ends).
public enum RunResult: String, Codable, Sendable {
    case running
    /// copy: both ends' digests agree; verify: every chunk matched.
    case ok
    /// copy: both ends agree, but the source could not read some bytes (zeros stand there).
    case incomplete
    /// copy: the two ends' digests differ.
    case mismatch
    /// verify: some chunks differ from the ledger, or the size changed.
    case corrupt
    /// verify: some chunks read back differently on different reads (none wrong every time).
    case unstable
    /// verify: every chunk matched, but some could only be read from memory, not the medium.
    case unverified
    /// resend: every planned chunk now matches.
    case repaired
    /// resend: the source refused some chunks (it no longer holds what was copied).
    case refused
    /// resend: some chunks are still wrong after the retries.
    case unrepairable
    /// Any run: an error stopped it (the run's `error` says which).
    case failed
    /// Any run: SIGINT or SIGTERM stopped it at a safe point.
    case interrupted
    /// A run that never recorded its end (the process was killed), found so by a later run on
    /// the same image.
    case abandoned
}

/// What a copy run records as its detail: how the transfer went.
public struct CopyRunDetail: Codable, Sendable, Equatable {
    public var transferId: String
    public var resumedFrom: Int
    public var retransmissions: Int?
    public var zeroFrames: Int?
    /// The other end's whole-image SHA-256 (remote copies).
    public var farSha256: String?
    public init(transferId: String, resumedFrom: Int, retransmissions: Int? = nil, zeroFrames: Int? = nil, farSha256: String? = nil) {
        (self.transferId, self.resumedFrom, self.retransmissions, self.zeroFrames, self.farSha256) =
            (transferId, resumedFrom, retransmissions, zeroFrames, farSha256)
    }

    /// The JSON text stored in the run's `detail` column.
    public var json: String { Ledger.json(self) }
}

/// One end of one copy, as the ledger knows it.
public struct ImageRecord: Codable, Sendable {
    public var id: Int64
    public var role: ImageRole
    public var path: String
    public var canonical: String
    public var kind: ImageKind
    public var host: String
    public var size: UInt64?
    public var chunkSize: Int
    public var sha256: String?
    public var listRoot: String?
    public var chunkCount: Int?
    public var zeroChunks: Int
    public var complete: Bool
    public var transferId: String
    public var peerImageId: Int64?
    public var peer: String?
    public var createdAt: String
    public var completedAt: String?
    public var checkpointChunks: Int
    public var names: [String]
    /// The image's identity and times when its record was made (files only).
    public var stamp: FileStamp?
    /// The medium behind a block device when its record was made.
    public var medium: Medium?
    /// A destination on ZFS: the snapshot the copy took (or why it took none).
    public var snapshot: SnapshotRecord?
    /// A resend filled its last unreadable ranges: the next full read computes its SHA-256.
    public var digestPending = false
    /// An image read through a container format or an NBD server (nil: its raw bytes).
    public var container: ContainerRecord?
}

/// How a source's bytes were read when they are not the raw bytes of a file or device: the guest
/// disk inside a VDI, qcow2, VMDK, VHD or VHDX file (the record's path and identity are the
/// container file's, its size the disk's virtual size), or an NBD export.
public struct ContainerRecord: Codable, Sendable, Equatable {
    /// qemu's name for the format (vdi, qcow2, vmdk, vpc, vhdx, qed), or `nbd`.
    public var format: String
    /// Guest bytes the container holds data for (`qemu-img map`), when known.
    public var allocatedBytes: UInt64?
    /// The container file's own size.
    public var fileSize: UInt64?
    public init(format: String, allocatedBytes: UInt64? = nil, fileSize: UInt64? = nil) {
        (self.format, self.allocatedBytes, self.fileSize) = (format, allocatedBytes, fileSize)
    }
}

/// The ZFS snapshot a copy took of its destination once it was durable: the exact image the
/// ledger describes, kept while the guest writes to the live one.
public struct SnapshotRecord: Codable, Sendable, Equatable {
    /// The dataset (file system or zvol) the destination lives in.
    public var dataset: String
    /// dataset@ferry-<transfer id>; nil when none was taken.
    public var name: String?
    public var guid: String?
    public var createtxg: UInt64?
    public var takenAt: String?
    /// Why none was taken (no zfs command, no permission, no space).
    public var error: String?
    /// When `ferry ledger release` destroyed it.
    public var releasedAt: String?
    /// A file's path inside the dataset (where it is found in the snapshot).
    public var relative: String?
    public init(dataset: String, name: String? = nil, guid: String? = nil, createtxg: UInt64? = nil, takenAt: String? = nil,
                error: String? = nil) {
        (self.dataset, self.name, self.guid, self.createtxg, self.takenAt, self.error) = (dataset, name, guid, createtxg, takenAt, error)
    }
    /// A snapshot that was taken and not released since.
    public var held: Bool { name != nil && guid != nil && releasedAt == nil }
}

/// What a new image record starts with.
public struct NewImage: Sendable {
    public var role: ImageRole
    public var identity: DeviceIdentity
    public var kind: ImageKind
    public var size: UInt64?
    public var chunkSize: Int
    public var transferId: String
    public var peer: String?
    public var options: String?
    public var stamp: FileStamp?
    public var medium: Medium?
    public var container: ContainerRecord?

    public init(role: ImageRole, identity: DeviceIdentity, kind: ImageKind, size: UInt64?, chunkSize: Int,
                transferId: String, peer: String?, options: String? = nil, stamp: FileStamp? = nil, medium: Medium? = nil,
                container: ContainerRecord? = nil) {
        (self.role, self.identity, self.kind, self.size, self.chunkSize) = (role, identity, kind, size, chunkSize)
        (self.transferId, self.peer, self.options, self.stamp, self.medium) = (transferId, peer, options, stamp, medium)
        self.container = container
    }
}

public struct RunRecord: Codable, Sendable {
    public var id: Int64
    public var imageId: Int64
    public var kind: RunKind
    public var startedAt: String
    public var endedAt: String?
    public var result: RunResult
    public var bytesRead: UInt64
    public var bytesWritten: UInt64
    public var bytesSent: UInt64
    public var readMode: String?
    public var detail: String?
    /// Why a failed or interrupted run ended.
    public var error: String?
    /// The process that ran it (on this ledger's host).
    public var pid: Int32?
}

/// A problem a verify found: a range of chunks (and bytes) that did not match, or a size change.
public struct Finding: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case corrupt      // mismatched twice
        case transient    // read back differently on different reads: unstable, not intact
        case size         // the image is shorter or longer than recorded
        case unreadable   // the medium returned an error
    }
    public var id: Int64?
    public var kind: Kind
    public var firstChunk: Int
    public var lastChunk: Int
    public var offset: UInt64
    public var length: UInt64
    public var detail: String?
    public var repairedBy: Int64?

    public init(kind: Kind, firstChunk: Int, lastChunk: Int, offset: UInt64, length: UInt64, detail: String? = nil) {
        (self.kind, self.firstChunk, self.lastChunk, self.offset, self.length) = (kind, firstChunk, lastChunk, offset, length)
        self.detail = detail
    }
}

/// A chunk's recorded hash.
public struct ChunkRow: Sendable, Equatable {
    public var index: Int
    public var digest: Digest
    public var zero: Bool
    public init(index: Int, digest: Digest, zero: Bool) { (self.index, self.digest, self.zero) = (index, digest, zero) }
}
