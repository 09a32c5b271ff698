import Chunks
import Ledger
import Synchronization

/// Records one image's chunk hashes in the ledger as they arrive (in index order), and keeps the
/// hash-list root: SHA-256 over the concatenated chunk digests.
final class ChunkRecorder {
    let ledger: Ledger
    let image: Int64
    private var pending: [ChunkRow] = []
    private var pendingUnreadable: [ByteRange] = []
    /// Every range recorded unreadable so far (restored ones included).
    private(set) var unreadable: [ByteRange] = []
    private var list = SHA256Hasher()
    private(set) var count = 0
    private(set) var zeroChunks = 0
    private static let batch = 2048
    /// A sending end flushes from its acknowledgement thread while its sink adds rows.
    private let lock = Mutex(())

    init(ledger: Ledger, image: Int64) {
        self.ledger = ledger
        self.image = image
    }

    /// Continues after chunks [0, n) recorded by an earlier attempt: the list root is rebuilt from
    /// the ledger's rows (32 bytes a chunk, no image data is read).
    func restore(upTo n: Int) throws {
        let rows = try ledger.chunks(image: image).prefix(n)
        guard rows.count == n, rows.enumerated().allSatisfy({ $0.offset == $0.element.index }) else {
            throw FerryError(.ledger, "ledger \(ledger.path) lacks chunk rows 0..<\(n) of image \(image); cannot resume",
                             hint: "start a fresh copy without --resume")
        }
        list = SHA256Hasher()
        for r in rows { list.update(r.digest); if r.zero { zeroChunks += 1 } }
        count = n
        // Ranges past the resume point are read again.
        guard let chunkSize = try ledger.image(image)?.chunkSize else { return }
        try ledger.dropUnreadable(image: image, from: UInt64(n) * UInt64(chunkSize))
        unreadable = try ledger.unreadable(image: image)
    }

    func add(index: Int, digest: Digest, zero: Bool, unreadable: [ByteRange] = []) throws {
        try lock.withLock { _ in try addLocked(index: index, digest: digest, zero: zero, unreadable: unreadable) }
    }

    private func addLocked(index: Int, digest: Digest, zero: Bool, unreadable ranges: [ByteRange]) throws {
        precondition(index == count, "chunks must be recorded in order")
        list.update(digest)
        pending.append(ChunkRow(index: index, digest: digest, zero: zero))
        pendingUnreadable += ranges
        unreadable += ranges
        count += 1
        if zero { zeroChunks += 1 }
        if pending.count >= Self.batch { try flushLocked() }
    }

    func flush() throws { try lock.withLock { _ in try flushLocked() } }

    private func flushLocked() throws {
        try ledger.recordChunks(image: image, pending, unreadable: pendingUnreadable)
        pending.removeAll(keepingCapacity: true)
        pendingUnreadable.removeAll()
    }

    /// The digest recorded for chunk `index`, while it is still in memory or in the ledger.
    func digest(of index: Int) throws -> Digest? {
        if let d = lock.withLock({ _ in pending.first(where: { $0.index == index })?.digest }) { return d }
        return try ledger.chunk(image: image, index: index)?.digest
    }

    var listRoot: Digest { lock.withLock { _ in list.finalized() } }
    var unreadableRanges: [ByteRange] { lock.withLock { _ in ByteRange.merged(unreadable) } }
}

/// One end's records of one copy in its ledger: the image, its chunk rows, and the copy run.
struct EndRecord {
    let imageId: Int64
    let recorder: ChunkRecorder
    let copyRun: Int64

    /// A new image record, with a copy run started.
    static func register(_ image: NewImage, in ledger: Ledger) throws -> EndRecord {
        let id = try ledger.createImage(image)
        return EndRecord(imageId: id, recorder: ChunkRecorder(ledger: ledger, image: id),
                         copyRun: try ledger.startRun(image: id, kind: .copy))
    }

    /// An unfinished image record whose chunks [0, n) are recorded, with a new copy run.
    static func reattach(image: Int64, upTo n: Int, in ledger: Ledger) throws -> EndRecord {
        let recorder = ChunkRecorder(ledger: ledger, image: image)
        try recorder.restore(upTo: n)
        try ledger.abandonRuns(image: image, kind: .copy)
        return EndRecord(imageId: image, recorder: recorder, copyRun: try ledger.startRun(image: image, kind: .copy))
    }

    /// Ends this end's copy run as failed or interrupted, with the error: the chunk rows and
    /// checkpoints recorded so far stay, for `--resume`. Best effort: the error being reported
    /// matters more than a ledger that cannot take this row.
    func fail(in ledger: Ledger, _ error: any Error, bytesRead: UInt64 = 0, bytesWritten: UInt64 = 0) {
        try? recorder.flush()
        try? ledger.failRun(copyRun, error: error, bytesRead: bytesRead, bytesWritten: bytesWritten)
    }

    /// Records the image complete with these digests, once its end is done (for a destination:
    /// only after the final sync). Returns the hash-list root of its chunk rows. An image with
    /// unreadable ranges gets no whole-image SHA-256: `digest` covers zeros in their place.
    func complete(in ledger: Ledger, size: UInt64, digest: Digest, snapshot: SnapshotRecord? = nil) throws -> Digest {
        try recorder.flush()
        let root = recorder.listRoot
        let whole = recorder.unreadableRanges.isEmpty ? digest : nil
        try ledger.complete(image: imageId, size: size, sha256: whole, listRoot: root, chunkCount: recorder.count,
                            zeroChunks: recorder.zeroChunks, snapshot: snapshot)
        return root
    }
}

/// A copy end whose ledger run says how it ended: `SourceReader`, `DestinationWriter`.
public protocol RecordedEnd: AnyObject {
    /// Ends the end's copy run as failed or interrupted with `error` (nothing when no record was
    /// made yet); the rows and checkpoints made durable stay, for --resume.
    func fail(ledger: Ledger, _ error: any Error)
}

extension SourceReader: RecordedEnd {}
extension DestinationWriter: RecordedEnd {}

/// Runs `body`; when it throws, each end's run records the error, and the error goes on.
public func endingRuns<T>(of ends: [any RecordedEnd], in ledger: Ledger, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch {
        for end in ends { end.fail(ledger: ledger, error) }
        throw error
    }
}
