import Chunks
import Ledger

/// A run of consecutive bad chunks, as byte offsets and chunk indices.
public struct BadRange: Codable, Sendable, Equatable {
    public var offset: UInt64
    public var length: UInt64
    public var firstChunk: Int
    public var lastChunk: Int

    public init(offset: UInt64, length: UInt64, firstChunk: Int, lastChunk: Int) {
        (self.offset, self.length, self.firstChunk, self.lastChunk) = (offset, length, firstChunk, lastChunk)
    }
}

/// A verify's verdict.
public enum VerifyStatus: String, Codable, Sendable {
    /// Every chunk read back matched the ledger, and the size is as recorded.
    case ok
    /// Some chunks differ or could not be read, or the size changed.
    case corrupt
    /// No chunk is wrong on every read, but some read back differently on different reads: the
    /// medium (or the path to it) returned wrong bytes at least once, so it is not intact.
    case unstable
    /// Every chunk matched, but some could only be read from memory (pages another process keeps
    /// mapped survived the cache drop, with O_DIRECT refused): not vouched for from the medium.
    case unverified
    /// Every chunk matched, but the source could not read some bytes at copy time: zeros stand
    /// there (`unreadableAtCopy`) until `ferry resend` fills them.
    case incomplete

    /// How the ledger records a verify run with this verdict.
    public var runResult: RunResult {
        switch self {
        case .ok: return .ok
        case .corrupt: return .corrupt
        case .unstable: return .unstable
        case .unverified: return .unverified
        case .incomplete: return .incomplete
        }
    }
}

/// The identity of a ledger record: which copy it belongs to and what it says the image is.
public struct RecordSummary: Codable, Sendable, Equatable {
    public var transferId: String
    public var size: UInt64?
    public var sha256: String?
    public var listRoot: String?
    public init(_ r: ImageRecord) { (transferId, size, sha256, listRoot) = (r.transferId, r.size, r.sha256, r.listRoot) }

    /// Refuses a far record that disagrees with `local`, this host's record of the same copy.
    public func check(against local: ImageRecord, far: String, ledger: String) throws {
        // One end without a whole-image digest was rewritten on purpose (resend --force) and the
        // other not: nothing to compare. Both without one (a rescue copy, filled by resend on both
        // ends) still share their list root and size.
        guard (local.sha256 == nil) == (sha256 == nil) else { return }
        var differences: [String] = []
        if let mine = local.sha256, let theirs = sha256, mine != theirs { differences.append("sha256 \(theirs) there, \(mine) here") }
        if local.listRoot != listRoot { differences.append("list root \(listRoot ?? "none") there, \(local.listRoot ?? "none") here") }
        if local.size != size { differences.append("size \(size ?? 0) there, \(local.size ?? 0) here") }
        guard !differences.isEmpty else { return }
        throw FerryError(.ledger, "the far ledger's record of \(far) disagrees with this host's record of the same copy (image \(local.id) in \(ledger)): "
                         + differences.joined(separator: "; "),
                         hint: "one of the two ledgers was damaged or edited, so the far verify cannot vouch for the image; compare them with `ferry ledger show`")
    }
}

/// What `ferry verify` found (and prints with --json).
public struct VerifyReport: Codable, Sendable {
    public var target: String
    public var host: String?
    public var ledger: String
    public var imageId: Int64
    public var runId: Int64
    public var status: VerifyStatus
    public var expectedSize: UInt64
    public var actualSize: UInt64?
    public var chunkSize: Int
    public var chunks: Int
    public var badChunks: Int
    public var badRanges: [BadRange]
    /// Chunks that mismatched on the first read and matched on the re-read (not corruption,
    /// but a sign of a flaky path between disk and memory).
    public var transientChunks: [Int]
    /// Chunks whose bytes could only have come from memory (nil: none, or a far ferry that does
    /// not tell).
    public var cachedChunks: [Int]?
    /// Chunks the medium refused to return (I/O errors), also counted in badRanges.
    public var unreadableChunks: [Int]
    public var sizeChanged: Bool
    public var bytesRead: UInt64
    public var readMode: String
    /// How the image was read: `raw`, a container format read through qemu-nbd (vdi, qcow2, ...),
    /// or `nbd` (an export). Nil from an older ferry.
    public var format: String?
    public var seconds: Double
    /// What the record verified against says of itself, so a verify run on another host can be
    /// checked against this host's record of the same copy (nil from an older ferry).
    public var record: RecordSummary?
    /// The other end's record this report was checked against, when one was (set by the client
    /// of a remote verify).
    public var crossChecked: String?
    /// Byte ranges the source could not read at copy time (zeros stand there), apart from any
    /// damage found since; nil when there are none.
    public var unreadableAtCopy: [ByteRange]?
    /// The whole-image SHA-256 this verify computed and recorded: the image had none, because a
    /// resend filled its last unreadable range after the copy.
    public var digestRecorded: String?
    /// What was read: the ZFS snapshot the copy took (in place or through a clone), or the live image.
    public var readFrom: ReadFrom?
    /// Things the verdict should be read with (the image is open in a running VM, say).
    public var warnings: [String]?
    /// `--resume`: the chunk this verify went on from (an interrupted verify read those before).
    public var resumedAt: Int?
}

extension BadRange {
    /// Coalesces sorted chunk indices into ranges of consecutive chunks.
    public static func coalesce(_ indices: [Int], geometry: ChunkGeometry) -> [BadRange] {
        var out: [BadRange] = []
        for i in indices.sorted() {
            if var last = out.last, last.lastChunk + 1 == i {
                last.lastChunk = i
                last.length = geometry.offset(of: i) + UInt64(geometry.length(of: i)) - last.offset
                out[out.count - 1] = last
            } else {
                out.append(BadRange(offset: geometry.offset(of: i), length: UInt64(geometry.length(of: i)),
                                    firstChunk: i, lastChunk: i))
            }
        }
        return out
    }
}
