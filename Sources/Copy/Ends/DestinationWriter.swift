import CSys
import Chunks
import Glibc
import Ledger
import NBD
import ZFS

/// The writing end of a copy: writes each chunk once, zero chunks as holes, records the chunk
/// hashes, makes data durable at checkpoints, and marks the image complete only after the final
/// fdatasync.
public final class DestinationWriter {
    public let path: String
    public let identity: DeviceIdentity
    public let chunkSize: Int
    /// `raw`: the bytes go into the file or device as they are; `qcow2`: into the guest disk of
    /// a qcow2 file, through ferry's own qemu-nbd.
    public let format: String
    public private(set) var file: (any WritableMedium)?
    private var record: EndRecord?
    public var imageId: Int64? { record?.imageId }
    /// The ledger run recording this copy at the destination end (started with the record).
    public var copyRun: Int64? { record?.copyRun }
    public private(set) var bytesWritten: UInt64 = 0
    let writeZeros: Bool
    var recorder: ChunkRecorder? { record?.recorder }
    /// True while the file region being written is known to read as zeros already (a file just
    /// truncated and sized), so zero chunks need no I/O at all.
    private var regionIsHole = false
    private lazy var zeros: AlignedBuffer = {
        let b = AlignedBuffer(capacity: chunkSize)
        memset(b.pointer, 0, b.capacity)
        return b
    }()

    /// The ledger to name the holder from when the destination is claimed by another run.
    let ledger: Ledger?
    /// Take a ZFS snapshot of a destination on ZFS once it is durable (`--no-snapshot`: no).
    public var takeSnapshot = true
    /// What became of the snapshot at completion: taken, or why not (nil: not on ZFS, or off).
    public private(set) var snapshot: SnapshotRecord?

    public init(path: String, chunkSize: Int, writeZeros: Bool, ledger: Ledger? = nil, format: String = "raw") {
        self.ledger = ledger
        self.format = format
        self.path = path
        self.identity = DeviceIdentity.of(path)
        self.chunkSize = chunkSize
        self.writeZeros = writeZeros
    }

    /// Opens the destination and checks it, without changing a byte. Refuses a directory, a
    /// mounted or busy block device, a block device smaller than `expectedSize`, and the source.
    public func open(expectedSize: UInt64?, source: (any ImageMedium)?) throws {
        // Already open (a pull checks before and after the far side names the size): check the
        // size again; a second O_EXCL open of a block device would refuse our own claim.
        if let file {
            try checkFits(file, expectedSize)
            return
        }
        // A file that does not exist yet is created by `beginFresh`, not here: a copy that
        // fails before its first chunk (a refused source, an incompatible peer) leaves nothing.
        if path != "-" && access(path, F_OK) != 0 {
            try Self.checkCreatable(path)
            try checkSectors(expectedSize)
            // An earlier attempt's image under its partial name: a resume continues it, a fresh
            // copy writes it in place (its lock refuses it while that attempt still runs).
            if format != "raw" { Self.removeAbandoned(partialPath) }
            if format != "raw" && access(partialPath, F_OK) == 0 {
                let f = try openClaimed(at: partialPath, create: nil)
                file = f
                try checkFits(f, expectedSize)
            }
            return
        }
        if let source, source.kind != .nbd { try Self.refuseShared(source: source.path, destination: path) }
        try checkSectors(expectedSize)
        let f = try openClaimed(at: path, create: nil)
        file = f
        try checkFits(f, expectedSize)
    }

    /// Where a qcow2 that ferry creates is written until the copy is complete: `.NAME.ferry-partial`
    /// beside NAME. Only a complete, flushed image takes the name a VM would boot.
    public var partialPath: String {
        let folder = Self.folder(of: path)
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return (folder == "." && !path.hasPrefix("./") ? "" : folder + (folder == "/" ? "" : "/")) + "." + name + ".ferry-partial"
    }

    /// An empty partial image older than a minute was left by a ferry stopped between creating
    /// the file and writing its header: nothing is in it, and it would block every later copy.
    static func removeAbandoned(_ partial: String) {
        var st = stat()
        guard lstat(partial, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size == 0,
              time(nil) - st.st_mtim.tv_sec > 60 else { return }
        unlink(partial)
    }

    /// A qcow2 disk is whole 512-byte sectors: a source of another size cannot be held exactly.
    func checkSectors(_ expectedSize: UInt64?) throws {
        guard format != "raw", let expectedSize, expectedSize % 512 != 0 else { return }
        throw FerryError(.refused, "the source is \(expectedSize) bytes, not a whole number of 512-byte sectors, so a \(format) image cannot hold it exactly (qemu would round its disk up)",
                         hint: "write a raw destination (--dest-format raw); nothing was written")
    }

    /// Opens and claims the destination: a raw file or device directly; a qcow2 through ferry's
    /// writable qemu-nbd (created with `create` bytes of disk, or an existing one), whose image
    /// lock is the claim.
    private func openClaimed(at target: String, create size: UInt64?) throws -> any WritableMedium {
        guard format != "raw" else {
            let f = try Self.openWritable(target)
            try claim(f)
            return f
        }
        do {
            return try NBDImage.openForWriting(target, format: format, create: size)
        } catch var e as FerryError where QemuNBD.isInUse(e) {
            if let ledger, let holder = try? Self.holder(of: identity, in: ledger) { e.message += "; it is held by \(holder)" }
            throw e
        }
    }

    /// The format a destination is written in: `--dest-format` when given (raw or qcow2), else
    /// qcow2 for a name ending in .qcow2, unless a file's own bytes are copied (`--as-is`): a
    /// qcow2 file copied as it is stays a file.
    public static func format(for path: String, given: String?, sourceAsIs: Bool) throws -> String {
        if let given {
            guard given == "raw" || NBDImage.destinationFormats.contains(given) else {
                throw FerryError(.usage, "ferry writes a destination as raw or qcow2, not '\(given)'",
                                 hint: "--dest-format raw (the disk's bytes as they are) or --dest-format qcow2")
            }
            if given != "raw" && (path == "-" || DeviceIdentity.isURI(path)) {
                throw FerryError(.usage, "\(path) cannot be written as \(given): a \(given) destination is a file ferry creates or opens",
                                 hint: "name a .\(given) file, or leave --dest-format out")
            }
            return given
        }
        return !sourceAsIs && path.lowercased().hasSuffix(".qcow2") ? "qcow2" : "raw"
    }

    /// What reads the destination back from the medium: the same connection for a qcow2 (its
    /// qemu-nbd holds qemu's lock, so no second server could open it), else the file anew.
    public func reader() throws -> any ImageMedium {
        if let image = file as? NBDImage { return image }
        return try ImageFile.openForReading(path, direct: true)
    }

    /// ferry's own qemu-nbd writing a qcow2 destination (not a holder of the image to warn about).
    public var serverPid: pid_t? { (file as? NBDImage)?.serverPid }

    /// The container record of a destination written into a container (nil: raw).
    var containerRecord: ContainerRecord? { format == "raw" ? nil : ContainerRecord(format: format) }

    /// Opens the destination for writing; one that refuses writes (a read-only mount or loop
    /// device, `chattr +i`) is a refusal that says so, not an I/O failure of the medium.
    static func openWritable(_ path: String) throws -> ImageFile {
        do {
            return try ImageFile.openForWriting(path, truncate: false)
        } catch let e as FerryError where e.code == .io && [.errno(EROFS), .errno(EPERM), .errno(EACCES)].contains(e.cause) {
            throw FerryError(.refused, "\(path) cannot be written (\(e.message)): it is read-only, not failing",
                             hint: "make it writable (a read-write mount or loop device, chattr -i) and run ferry again; nothing was written",
                             cause: e.cause)
        }
    }

    /// Claims the destination for this run; a refusal names the run holding it when this host's
    /// ledger knows it (a copy or resend still running, and its process alive).
    private func claim(_ f: any WritableMedium) throws {
        do {
            try f.claimForWriting()
        } catch var e as FerryError where e.code == .refused {
            if let ledger, let holder = try? Self.holder(of: identity, in: ledger) { e.message += "; it is held by \(holder)" }
            throw e
        }
    }

    static func holder(of identity: DeviceIdentity, in ledger: Ledger) throws -> String? {
        for image in try ledger.images(named: identity.names) where image.role == .destination && identity.canBe(image.names) {
            for run in try ledger.runs(image: image.id).reversed()
            where run.result == .running && (run.kind == .copy || run.kind == .resend) {
                guard let pid = run.pid, kill(pid, 0) == 0 || errno == EPERM else { continue }
                return "a ferry \(run.kind.rawValue) (pid \(pid), started \(run.startedAt), run \(run.id) of image \(image.id) in \(ledger.path))"
            }
        }
        return nil
    }

    /// Refuses a destination that shares storage with the source: the same file or device, a
    /// loop or nbd device over the other's file, a partition of the other's disk, a file on a
    /// file system that lives on the source device. Writing it would destroy what is being read.
    public static func refuseShared(source: String, destination: String) throws {
        guard source != "-", destination != "-",
              let shared = Footprint.of(source).overlap(with: Footprint.of(destination)) else { return }
        throw FerryError(.refused, "the source \(source) and the destination \(destination) share storage (both reach \(shared)); writing the destination would destroy the source",
                         hint: "check the order of SRC and DST, and what backs each (losetup -a, lsblk); nothing was written")
    }

    /// Refuses a ledger that is the destination or lives on it: the copy would overwrite the
    /// ledger recording it, or the ledger would change the image under the copy.
    public static func refuseOverlap(ledger: String, destination: String) throws {
        guard destination != "-" else { return }
        var home = Footprint.of(ledger)
        if home.reach.isEmpty {   // a ledger not created yet: its folder tells where it would live
            home = Footprint.of(folder(of: ledger))
        }
        let sameName = DeviceIdentity.of(ledger).canonical == DeviceIdentity.of(destination).canonical
        if sameName || home.overlap(with: Footprint.of(destination)) != nil {
            throw FerryError(.refused, "the ledger \(ledger) is \(sameName ? "the destination itself" : "on the destination \(destination)"); the copy would overwrite the record of itself",
                             hint: "keep the ledger off the image: pass --ledger (or --remote-ledger) naming a file elsewhere")
        }
    }

    /// The folder a path names a file in ("." for a bare name).
    static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The folder of a new destination file must exist and be writable.
    static func checkCreatable(_ path: String) throws {
        let folder = folder(of: path)
        var st = stat()
        guard stat(folder, &st) == 0 else {
            throw FerryError.syscall("cannot create \(path): folder", path: folder)
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw FerryError(.usage, "cannot create \(path): \(folder) is not a folder")
        }
        guard access(folder, W_OK) == 0 else {
            throw FerryError.syscall("cannot create \(path) in", path: folder)
        }
    }

    func checkFits(_ f: any WritableMedium, _ expectedSize: UInt64?) throws {
        if f.format != "raw", let expectedSize, let size = f.size, size != expectedSize {
            throw FerryError(.refused, "destination \(path) is a \(f.format) image of a \(size)-byte disk; the source's disk is \(expectedSize) bytes",
                             hint: "name a new file (ferry creates the \(f.format) image with the right size), remove this one, or resize it (`qemu-img resize -f \(f.format) \(path) \(expectedSize)`); nothing was written")
        }
        if f.kind == .blockDevice, let expectedSize, let size = f.size, size < expectedSize {
            throw FerryError(.refused, "destination \(path) holds \(size) bytes, smaller than the source's \(expectedSize)",
                             hint: "grow the device (e.g. zfs set volsize=...) or choose a larger one; nothing was written")
        }
    }

    /// Starts a fresh copy: a file destination is truncated to nothing and grows as chunks land
    /// (zero chunks stay holes; `complete` sets the final length), so a copy that fails leaves a
    /// file visibly shorter than its source, never one that looks whole. Called once the first
    /// chunk passed the source's checks.
    /// A qcow2 destination that does not exist yet is created here with the source's size, and
    /// zero chunks then need no write at all; an existing one of that size is written in place,
    /// its zero chunks zeroed (deallocated where qemu can).
    public func beginFresh(expectedSize: UInt64?) throws {
        if file == nil {
            if format != "raw" && expectedSize == nil {
                throw FerryError(.usage, "\(path) would be created as a \(format) image of the source's size, and the source is a stream of unknown size",
                                 hint: "give the stream's size with --size, or write a raw destination")
            }
            try checkSectors(expectedSize)
            file = try openClaimed(at: format == "raw" ? path : partialPath, create: format == "raw" ? nil : expectedSize)
            if format != "raw" { regionIsHole = true }
        }
        guard let f = file else { throw FerryError(.io, "destination \(path) is not open") }
        try checkFits(f, expectedSize)
        if f.kind == .file && f.format == "raw" {
            try f.setLength(0)
            regionIsHole = true
        }
    }

    public func register(in ledger: Ledger, size: UInt64?, transferId: String, peer: String?, options: String?) throws {
        guard let file else { return }
        record = try EndRecord.register(NewImage(role: .destination, identity: identity, kind: file.kind, size: size,
                                                 chunkSize: chunkSize, transferId: transferId, peer: peer, options: options,
                                                 stamp: file.stamp,
                                                 medium: file.kind == .blockDevice ? Footprint.medium(rdev: file.device) : nil,
                                                 container: containerRecord),
                                        in: ledger)
    }

    public func reattach(ledger: Ledger, image: Int64, upTo n: Int) throws {
        record = try EndRecord.reattach(image: image, upTo: n, in: ledger)
    }

    /// Ends this end's copy run in the ledger as failed or interrupted (nothing when no record
    /// was made yet).
    public func fail(ledger: Ledger, _ error: any Error) {
        record?.fail(in: ledger, error, bytesWritten: bytesWritten)
    }

    /// Writes one chunk at its offset (streams: appended) and records its hash.
    public func accept(_ slot: ChunkSlot) throws {
        guard let file else { throw FerryError(.io, "destination \(path) is not open") }
        if slot.isZero && !writeZeros {
            try file.writeZeros(at: slot.offset, count: slot.length, alreadyHole: regionIsHole, zeros: zeros)
        } else {
            try file.write(from: slot.buffer.pointer, count: slot.length, at: slot.offset)
        }
        bytesWritten += UInt64(slot.length)
        try recorder?.add(index: slot.index, digest: slot.digest, zero: slot.isZero, unreadable: slot.unreadable)
    }

    /// Writes a byte range that is not a whole pipeline chunk (resend's sub-blocks).
    public func write(_ p: UnsafeRawPointer, count: Int, at offset: UInt64, zero: Bool) throws {
        guard let file else { throw FerryError(.io, "destination \(path) is not open") }
        if zero && !writeZeros {
            try file.writeZeros(at: offset, count: count, alreadyHole: false, zeros: zeros)
        } else {
            try file.write(from: p, count: count, at: offset)
        }
        bytesWritten += UInt64(count)
    }

    /// Chunks [0, through] are written: make them durable and their rows recorded. Only after
    /// this may a checkpoint claim them (`checkpoint`, or the sender's acknowledgement).
    public func makeDurable(through index: Int) throws {
        try file?.sync()
        try recorder?.flush()
    }

    /// Makes chunks [0, through] durable, then records the checkpoint (in this order).
    public func checkpoint(ledger: Ledger, through index: Int, hasher: SHA256Hasher?) throws {
        try makeDurable(through: index)
        if let imageId { try ledger.checkpoint(image: imageId, chunks: index + 1, state: hasher?.savedState) }
    }

    public func sync() throws { try file?.sync() }

    /// The final step: size the file, fdatasync, then (and only then) mark the image complete.
    /// On ZFS, after the sync and before the record says complete, the dataset is snapshotted:
    /// that snapshot is the exact image the ledger describes, whatever the guest writes later.
    public func complete(ledger: Ledger, size: UInt64, digest: Digest) throws -> Digest {
        guard let file else { throw FerryError(.io, "destination \(path) is not open") }
        if file.kind == .file && (file.size ?? 0) != size { try file.setLength(size) }
        try file.sync()
        if file.path != path { try publish(file.path) }
        if takeSnapshot, let id = record?.imageId, let transferId = try ledger.image(id)?.transferId {
            snapshot = Self.snapshot(path: path, isBlockDevice: file.kind == .blockDevice, transferId: transferId, ledger: ledger, image: id)
        }
        return try record?.complete(in: ledger, size: size, digest: digest, snapshot: snapshot) ?? .zero
    }

    /// Gives the image written under `partial` its name, once it is whole and flushed: never over
    /// a file that appeared under that name meanwhile. The folder is synced, so the name lasts.
    func publish(_ partial: String) throws {
        guard csys_rename_noreplace(partial, path) == 0 else {
            if errno == EEXIST {
                throw FerryError(.refused, "\(path) appeared while ferry was copying into \(partial); the complete copy keeps that name",
                                 hint: "move one of them aside, then give \(partial) its name yourself (mv -n); the ledger records the image by the name \(path)")
            }
            throw FerryError.syscall("cannot rename \(partial) to", path: path)
        }
        guard csys_fsync_dir(Self.folder(of: path)) == 0 else {
            throw FerryError.syscall("fsync of the folder holding", path: path, hint: "the new name may not survive a crash; run ferry verify \(path) to check")
        }
    }

    /// Takes `DATASET@ferry-<transfer id>` of the dataset holding `path` (nil: not on ZFS). One
    /// left by an earlier attempt of the same transfer predates the writes since, and is taken
    /// again. A snapshot that cannot be taken is not a failed copy: the record says why.
    static func snapshot(path: String, isBlockDevice: Bool, transferId: String, ledger: Ledger, image: Int64) -> SnapshotRecord? {
        guard let place = ZFS.place(of: path, isBlockDevice: isBlockDevice) else { return nil }
        guard transferId.range(of: "^[A-Za-z0-9-]{1,64}$", options: .regularExpression) != nil else {
            return SnapshotRecord(dataset: place.dataset, error: "the transfer id '\(transferId.prefix(80))' cannot name a snapshot")
        }
        let name = ZFS.snapshotName(dataset: place.dataset, transferId: transferId)
        do {
            if try ZFS.describe(name) != nil {
                // Left by an earlier attempt of this copy (taken again below), unless a complete
                // record holds it: then it is that image's, and stays.
                if let owner = try ledger.images().first(where: { $0.id != image && $0.complete && $0.snapshot?.name == name && $0.snapshot?.held == true }) {
                    return SnapshotRecord(dataset: place.dataset, error: "\(name) already exists and belongs to image \(owner.id); it was left alone")
                }
                try ZFS.destroy(name)
            }
            let s = try ZFS.takeSnapshot(name)
            var record = SnapshotRecord(dataset: place.dataset, name: s.name, guid: s.guid, createtxg: s.createtxg, takenAt: Ledger.now())
            if case .file(_, let relative) = place.kind { record.relative = relative }
            return record
        } catch {
            return SnapshotRecord(dataset: place.dataset, error: "\(error)")
        }
    }

    public var listRoot: Digest? { recorder?.listRoot }
    /// Ranges written as zeros because the source could not read them.
    public var unreadable: [ByteRange] { recorder?.unreadableRanges ?? [] }
}

extension DestinationWriter {
    public var zeroChunks: Int { recorder?.zeroChunks ?? 0 }
}
