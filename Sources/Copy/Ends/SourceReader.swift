import Chunks
import Glibc
import Ledger
import NBD

/// What a copy does when the source fails to read.
public enum ReadErrorPolicy: String, Codable, Sendable, CaseIterable {
    /// End the copy at the first unreadable byte (the default).
    case abort
    /// Narrow each failing read to the sector, write zeros there, record the range, go on.
    case record
}

/// The reading end of a copy: reads the source once, in chunk order, and records what it read.
public final class SourceReader {
    public let file: ImageMedium
    public let identity: DeviceIdentity
    public let chunkSize: Int
    private let counted = ProgressCounter()
    /// Bytes read from the source so far (the pump's reads and any re-reads).
    public var bytesRead: UInt64 { file.fetchedBytes ?? counted.bytes }
    private var record: EndRecord?
    public var imageId: Int64? { record?.imageId }
    /// The ledger run recording this copy at the source end (started with the record).
    public var copyRun: Int64? { record?.copyRun }
    var recorder: ChunkRecorder? { record?.recorder }
    let asIs: Bool
    /// The source file's identity and times when the copy began (files only): a source that
    /// changes while it is read yields a digest of no image that ever existed.
    var startStamp: FileStamp?

    /// The size a stream source must have (`--size`): a stream that ends before it failed (its
    /// producer died), and one that goes on past it is cut there (an endless character device)
    /// or refused (a pipe holding more than the user said).
    public let streamSize: UInt64?

    /// What a read error does: end the copy, or record the unreadable bytes and go on.
    public let onReadError: ReadErrorPolicy
    /// How many more times a rescue tries each unreadable range before recording it.
    public let retries: Int
    private var rescue: Rescue?
    /// Bytes found unreadable so far, for the progress line.
    public let unreadableBytes: ProgressCounter
    /// Reads a rescue made, and how many of them failed.
    public var rescueReads: (reads: Int, failed: Int) { (rescue?.reads ?? 0, rescue?.failedReads ?? 0) }

    public init(path: String, chunkSize: Int, asIs: Bool, sourceFormat: String? = nil, expectedSize: UInt64? = nil,
                onReadError: ReadErrorPolicy = .abort, retries: Int = 0, unreadableBytes: ProgressCounter = ProgressCounter()) throws {
        self.unreadableBytes = unreadableBytes
        self.onReadError = onReadError
        self.retries = retries
        file = try Self.openMedium(path, asIs: asIs, sourceFormat: sourceFormat)
        identity = DeviceIdentity.of(path)
        self.chunkSize = chunkSize
        self.asIs = asIs
        if let expectedSize, let size = file.size, size != expectedSize {
            file.close()
            throw FerryError(.usage, "--size \(expectedSize) does not match \(path), which holds \(size) bytes",
                             hint: "--size is for stream sources (stdin, a pipe); leave it out for files and block devices")
        }
        if onReadError == .record && !(file is ImageFile) {
            file.close()
            throw FerryError(.usage, "--on-read-error=record narrows failing reads to the disk's sectors, and \(path) is read through \(file.format == "nbd" ? "an NBD server" : "qemu-nbd")",
                             hint: "rescue the container file itself first (ferry copy --as-is --on-read-error=record \(path) SAVED), then copy the disk inside SAVED")
        }
        streamSize = file.size == nil ? expectedSize : nil
    }

    /// Opens what `path` names: an NBD URI, the guest disk inside a container file (its format
    /// from `sourceFormat` or its header), or the file, device or stream itself.
    static func openMedium(_ path: String, asIs: Bool, sourceFormat: String?) throws -> ImageMedium {
        if DeviceIdentity.isURI(path) {
            if asIs || (sourceFormat != nil && sourceFormat != "raw") {
                throw FerryError(.usage, "\(path) is an NBD export: it has no container format to name or to copy as it is",
                                 hint: "leave out --as-is and --source-format")
            }
            return try NBDImage.openURI(path)
        }
        if let sourceFormat, !DiskImageFormat.sourceFormatNames.contains(sourceFormat) {
            throw FerryError(.usage, "--source-format \(sourceFormat) is not a format ferry reads",
                             hint: "name one of " + DiskImageFormat.sourceFormatNames.joined(separator: ", "))
        }
        let file = try ImageFile.openForReading(path, direct: true)
        if asIs || sourceFormat == "raw" { return file }
        var format = sourceFormat
        if format == nil, file.size != nil, (file.size ?? 0) > 0 {
            format = try DiskImageFormat.detect(in: file)?.qemuName
        }
        guard let format else { return file }
        guard file.size != nil else {
            file.close()
            throw FerryError(.usage, "\(path) is a stream, and the disk inside a \(format) container can only be read from a file or device",
                             hint: "save the stream to a file and copy that, or copy the stream as it is with --as-is")
        }
        file.close()
        return try NBDImage.openContainer(path, format: format)
    }

    /// The bytes this source holds, when known before reading: a file's or device's size, or a
    /// stream's `--size`.
    public var size: UInt64? { file.size ?? streamSize }

    /// How the source is read when not as raw bytes: its container format or `nbd`.
    public var containerRecord: ContainerRecord? {
        guard let image = file as? NBDImage else { return nil }
        return ContainerRecord(format: image.format, allocatedBytes: image.layout?.allocatedBytes, fileSize: image.container?.size)
    }

    /// A source that a rescue copy recorded in `ledger` wrote, with source ranges it could not
    /// read: zeros stand there in it. Copying it onward carries those zeros. The ranges are
    /// carried too, as this copy's own unreadable ranges (where they still hold zeros), so both
    /// new records say what they lack, no whole-image digest is claimed for them, and a verify
    /// of either never calls them whole. Returns the warning that says so (nil for any other
    /// source).
    public func inheritRescueGaps(from ledger: Ledger) -> String? {
        guard file.kind == .file || file.kind == .blockDevice, file is ImageFile,
              let images = try? ledger.images(named: identity.names) else { return nil }
        for image in images where image.role == .destination && identity.canBe(image.names) {
            guard let gaps = try? ledger.unreadable(image: image.id), !gaps.isEmpty else { continue }
            inheritedGaps = gaps
            return "\(file.path) was written by a rescue copy (image \(image.id), from \(image.peer ?? "its source")) that could not read \(gaps.count) range(s), \(ByteRange.total(gaps)) bytes: zeros stand there, and this copy carries them and records them as unreadable, as that copy did (`ferry ledger show \(image.id)` lists them; `ferry resend` from the failing disk fills them in \(file.path) first)"
        }
        return nil
    }

    /// Creates the source's image record (role source) in `ledger`.
    public func register(in ledger: Ledger, transferId: String, peer: String?) throws {
        startStamp = file.stamp
        record = try EndRecord.register(NewImage(role: .source, identity: identity, kind: file.kind, size: file.size,
                                                 chunkSize: chunkSize, transferId: transferId, peer: peer, stamp: startStamp,
                                                 medium: file.kind == .blockDevice ? Footprint.medium(rdev: file.device) : nil,
                                                 container: containerRecord),
                                        in: ledger)
    }

    /// Re-attaches to an unfinished source record whose chunks [0, n) are recorded.
    public func reattach(ledger: Ledger, image: Int64, upTo n: Int) throws {
        startStamp = try ledger.image(image)?.stamp
        record = try EndRecord.reattach(image: image, upTo: n, in: ledger)
    }

    /// Ends this end's copy run in the ledger as failed or interrupted (nothing when no record
    /// was made yet).
    public func fail(ledger: Ledger, _ error: any Error) {
        record?.fail(in: ledger, error, bytesRead: bytesRead)
    }

    /// Fills `slot` with the chunk at its index. Returns 0 at the end of the source.
    public func fill(_ slot: ChunkSlot) throws -> Int {
        let want: Int
        if let size {
            let start = slot.offset
            guard start < size else {
                try checkStreamEnded()
                return 0
            }
            want = Int(min(UInt64(chunkSize), size - start))
        } else {
            want = chunkSize
        }
        let n: Int
        if let rescue, rescue.knowsBad(in: slot.offset..<slot.offset + UInt64(want)) {
            n = try rescueRead(slot, want: want)
        } else {
            do {
                n = try file.read(into: slot.buffer.pointer, count: want, at: slot.offset)
            } catch where Rescue.isMediumError(error) && file.size != nil && file is ImageFile {
                guard onReadError == .record else {
                    var e = error as! FerryError
                    e.hint = (e.hint.map { $0 + "; " } ?? "") + "to copy everything that reads and record exactly what does not, run the copy again with --on-read-error=record"
                    throw e
                }
                n = try rescueRead(slot, want: want)
            }
        }
        if let expected = streamSize, n < want {
            throw FerryError(.io, "the stream \(file.path == "-" ? "on stdin" : file.path) ended after \(slot.offset + UInt64(n)) bytes, before the \(expected) that --size promised",
                             hint: "the program producing it stopped early; nothing was marked complete, so copy again once it runs to the end")
        }
        if file.size != nil && n < want {
            throw FerryError(.io, "source \(file.path) ended at offset \(slot.offset + UInt64(n)), before its size \(file.size!)",
                             hint: "the source shrank while being read; nothing was marked complete")
        }
        if slot.index == 0 && n > 0 && !asIs && file.kind == .stream, let format = DiskImageFormat.detect(slot.buffer.bytes(min(n, 4096))) {
            throw FerryError(.refused, format.refusal(path: file.path))
        }
        if slot.unreadable.isEmpty { counted.add(n) }
        if !inheritedGaps.isEmpty && n > 0 { markInherited(slot, length: n) }
        return n
    }

    /// Reads the chunk in `slot` around its unreadable sectors (zeros in their place) and notes
    /// them in the slot, for both ends' records.
    private func rescueRead(_ slot: ChunkSlot, want: Int) throws -> Int {
        let r = rescue ?? Rescue(file: file as! ImageFile, size: file.size!)
        rescue = r
        let before = r.bytesRead
        var bad = try r.read(into: slot.buffer.pointer, count: want, at: slot.offset, retries: retries)
        // One frame carries a chunk's ranges: past this many, the chunk's ranges become one (its
        // readable bytes between them are zeroed too, and a resend reads them again).
        if bad.count > Self.maxRangesPerChunk, let first = bad.first, let last = bad.last {
            memset(slot.buffer.pointer + Int(first.offset - slot.offset), 0, Int(last.end - first.offset))
            bad = [ByteRange(first.offset..<last.end)]
        }
        slot.unreadable = bad
        counted.add(Int(r.bytesRead - before))
        unreadableBytes.add(Int(ByteRange.total(bad)))
        return want
    }

    public static let maxRangesPerChunk = 2048

    /// Ranges an earlier rescue copy could not read, carried by this copy of its result.
    private var inheritedGaps: [ByteRange] = []

    /// Marks the inherited ranges inside the chunk in `slot` that still hold zeros as unreadable
    /// (a range that holds data now was filled since, and is copied as the data it is).
    private func markInherited(_ slot: ChunkSlot, length n: Int) {
        let window = slot.offset..<slot.offset + UInt64(n)
        var marked: [ByteRange] = []
        for gap in ByteRange.clipped(inheritedGaps, to: window) {
            let start = slot.buffer.pointer + Int(gap.offset - slot.offset)
            if isAllZero(start, Int(gap.length)) { marked.append(gap) }
        }
        guard !marked.isEmpty else { return }
        slot.unreadable = (slot.unreadable + marked).sorted { $0.offset < $1.offset }
        unreadableBytes.add(Int(ByteRange.total(marked)))
    }

    /// Unreadable ranges recorded so far (this run and any resumed one).
    public var unreadable: [ByteRange] { recorder?.unreadableRanges ?? resumedUnreadable }
    /// A resume's ranges from the interrupted run, for its checks before the record is re-attached.
    var resumedUnreadable: [ByteRange] = []

    /// A stream read to its `--size`: a pipe must end there (more bytes mean the image is larger
    /// than the user said, and a copy cut short would lose them); a character device is endless.
    private func checkStreamEnded() throws {
        guard let expected = streamSize, !file.isCharacterDevice else { return }
        let probe = AlignedBuffer(capacity: 4096)
        let extra = try file.read(into: probe.pointer, count: 1, at: expected)
        if extra > 0 {
            throw FerryError(.refused, "the stream \(file.path == "-" ? "on stdin" : file.path) holds more than the \(expected) bytes --size named",
                             hint: "give its true size with --size, or leave --size out; nothing was marked complete")
        }
    }

    /// Reads one chunk by index (positioned), for resume checks and resend.
    public func readChunk(_ index: Int, into buffer: AlignedBuffer) throws -> Int {
        guard let size = file.size else {
            throw FerryError(.usage, "cannot re-read chunk \(index) of a stream source", hint: "the source must be a file or block device")
        }
        let g = ChunkGeometry(size: size, chunkSize: chunkSize)
        let want = g.length(of: index)
        let window = g.offset(of: index)..<g.offset(of: index) + UInt64(want)
        let holes = ByteRange.clipped(unreadable, to: window)
        if !holes.isEmpty {
            // A chunk recorded with unreadable ranges is read again around them, zeros inside,
            // exactly as it was recorded.
            memset(buffer.pointer, 0, want)
            var pos = window.lowerBound
            for gap in holes + [ByteRange(window.upperBound..<window.upperBound)] {
                if gap.offset > pos {
                    let got = try file.readExact(into: buffer.pointer + Int(pos - window.lowerBound), count: Int(gap.offset - pos), at: pos).get()
                    counted.add(got)
                }
                pos = gap.end
            }
            return want
        }
        let n = try file.read(into: buffer.pointer, count: want, at: g.offset(of: index))
        counted.add(n)
        guard n == want else {
            throw FerryError(.io, "source \(file.path) is shorter than chunk \(index) needs (offset \(g.offset(of: index)))")
        }
        return n
    }

    public func record(_ slot: ChunkSlot) throws {
        try recorder?.add(index: slot.index, digest: slot.digest, zero: slot.isZero, unreadable: slot.unreadable)
    }

    public func flush() throws { try recorder?.flush() }

    /// Marks the source record complete: it was read to the end, these are its digests.
    public func complete(ledger: Ledger, size: UInt64, digest: Digest) throws -> Digest {
        if let before = startStamp, let now = file.stamp {
            let changes = now.changes(since: before)
            guard changes.isEmpty else {
                throw FerryError(.refused, "the source \(file.path) changed while it was being copied: " + changes.joined(separator: "; "),
                                 hint: "its digest describes no consistent image, so nothing was marked complete; stop whatever writes it (shut the VM down) and copy again")
            }
        }
        return try record?.complete(in: ledger, size: size, digest: digest) ?? .zero
    }

    public var listRoot: Digest? { recorder?.listRoot }
    public var zeroChunks: Int { recorder?.zeroChunks ?? 0 }
}
