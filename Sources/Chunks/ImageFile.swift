import CSys
import Glibc
import Synchronization

/// What kind of thing an image lives in.
public enum ImageKind: String, Codable, Sendable {
    case file            // a regular file
    case blockDevice = "block"
    case stream          // stdin/stdout or a pipe: no size, no seeking
    case nbd             // an export an NBD server serves (named by a URI)
}

/// How an image was read or written, as reported to the user and the ledger.
public enum IOMode: String, Codable, Sendable {
    case direct                              // O_DIRECT: straight from/to the medium
    case buffered = "buffered-dropcache"     // page cache, dropped behind the stream
    case stream                              // a pipe: there is no medium to bypass
    case server = "nbd-server"               // an NBD server's reads: its cache is its own
}

/// An open disk image (file, block device or stream) with positioned, cache-aware I/O.
///
/// Reads and writes go through O_DIRECT when the medium allows it, so a 500 GB pass neither
/// floods the page cache nor reports bytes that only the cache holds. Where O_DIRECT is refused
/// (tmpfs, some FUSE file systems) it falls back to buffered I/O and drops the cache behind
/// itself, and `mode` says so.
public final class ImageFile {
    public let path: String
    public let kind: ImageKind
    /// Size in bytes (block devices: BLKGETSIZE64; streams: nil).
    public private(set) var size: UInt64?
    public private(set) var mode: IOMode
    public let writable: Bool
    public let device: UInt64
    public let inode: UInt64
    /// A character device (/dev/zero, /dev/urandom): a stream that may never end.
    public let isCharacterDevice: Bool

    private var fd: Int32
    /// A second descriptor without O_DIRECT, for unaligned tails and the buffered fallback.
    private var bufferedFD: Int32 = -1
    private let openFlags: Int32
    /// Buffered-write cache control: bytes before this offset are synced and dropped.
    private var droppedUpTo: UInt64 = 0
    private static let dropWindow: UInt64 = 32 << 20

    public static let directAlignment = 4096

    private init(path: String, fd: Int32, kind: ImageKind, size: UInt64?, mode: IOMode, writable: Bool,
                 flags: Int32, st: stat) {
        self.path = path
        self.fd = fd
        self.kind = kind
        self.size = size
        self.mode = mode
        self.writable = writable
        self.openFlags = flags
        self.device = kind == .blockDevice ? UInt64(st.st_rdev) : UInt64(st.st_dev)
        self.inode = kind == .blockDevice ? 0 : UInt64(st.st_ino)
        self.isCharacterDevice = (st.st_mode & S_IFMT) == S_IFCHR
    }

    deinit {
        if fd > 2 { Glibc.close(fd) }
        if bufferedFD > 2 { Glibc.close(bufferedFD) }
    }

    public func close() {
        if fd > 2 { Glibc.close(fd) }
        if bufferedFD > 2 { Glibc.close(bufferedFD) }
        fd = -1
        bufferedFD = -1
    }

    // MARK: Opening

    /// Opens an image for reading. `-` is stdin. `direct` asks for O_DIRECT where the medium allows.
    public static func openForReading(_ path: String, direct: Bool = true) throws -> ImageFile {
        if path == "-" {
            var st = stat()
            fstat(0, &st)
            return ImageFile(path: "-", fd: 0, kind: .stream, size: nil, mode: .stream, writable: false,
                             flags: O_RDONLY, st: st)
        }
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw FerryError.syscall("cannot open", path: path)
        }
        let type = st.st_mode & S_IFMT
        if type == S_IFDIR {
            throw FerryError(.usage, "\(path) is a directory, not a disk image",
                             hint: "name an image file or a block device")
        }
        let kind: ImageKind = type == S_IFBLK ? .blockDevice : (type == S_IFREG ? .file : .stream)
        let base = O_RDONLY | csys_o_cloexec()
        var flags = base
        var mode: IOMode = kind == .stream ? .stream : .buffered
        var fd: Int32 = -1
        if direct && kind != .stream {
            fd = Sys.open(path, base | csys_o_direct(), 0)
            if fd >= 0 { flags = base | csys_o_direct(); mode = .direct }
        }
        if fd < 0 { fd = Sys.open(path, base, 0) }
        guard fd >= 0 else { throw FerryError.syscall("cannot open", path: path) }
        let file = ImageFile(path: path, fd: fd, kind: kind, size: nil, mode: mode, writable: false, flags: flags, st: st)
        try file.refreshSize()
        if mode == .buffered { _ = csys_fadvise(fd, 0, 0, 1) }
        return file
    }

    /// Opens (or creates) a destination for writing.
    /// - A block device is opened O_EXCL, so a mounted or otherwise claimed device is refused.
    /// - A regular file is created, or truncated when `truncate` is set (a fresh copy).
    public static func openForWriting(_ path: String, truncate: Bool, direct: Bool = true) throws -> ImageFile {
        if path == "-" {
            var st = stat()
            fstat(1, &st)
            return ImageFile(path: "-", fd: 1, kind: .stream, size: nil, mode: .stream, writable: true,
                             flags: O_WRONLY, st: st)
        }
        var st = stat()
        let exists = stat(path, &st) == 0
        if !exists && errno != ENOENT { throw FerryError.syscall("cannot open", path: path) }
        let type = st.st_mode & S_IFMT
        if exists && type == S_IFDIR {
            throw FerryError(.usage, "destination \(path) is a directory",
                             hint: "name the image file to create inside it, e.g. \(path)/disk.raw")
        }
        let kind: ImageKind = !exists ? .file : (type == S_IFBLK ? .blockDevice : (type == S_IFREG ? .file : .stream))
        var base = O_WRONLY | csys_o_cloexec()
        switch kind {
        case .blockDevice: base |= csys_o_excl()
        case .file: base |= O_CREAT | (truncate ? O_TRUNC : 0)
        case .stream, .nbd: break
        }
        var flags = base
        var mode: IOMode = kind == .stream ? .stream : .buffered
        var fd: Int32 = -1
        if direct && kind != .stream {
            fd = Sys.open(path, base | csys_o_direct(), 0o644)
            if fd >= 0 { flags = base | csys_o_direct(); mode = .direct }
            else if errno == EBUSY {
                throw FerryError(.refused, "\(path) is mounted or in use by another program; refusing to write to it",
                                 hint: "unmount it, stop the VM or process using it, and try again")
            }
        }
        if fd < 0 { fd = Sys.open(path, base, 0o644) }
        guard fd >= 0 else {
            if errno == EBUSY {
                throw FerryError(.refused, "\(path) is mounted or in use by another program; refusing to write to it",
                                 hint: "unmount it, stop the VM or process using it, and try again")
            }
            throw FerryError.syscall("cannot open for writing", path: path)
        }
        fstat(fd, &st)
        let file = ImageFile(path: path, fd: fd, kind: kind, size: nil, mode: mode, writable: true, flags: flags, st: st)
        try file.refreshSize()
        return file
    }

    /// Re-reads the size: BLKGETSIZE64 for block devices (fstat says 0), st_size for files.
    public func refreshSize() throws {
        switch kind {
        case .stream, .nbd: size = nil
        case .blockDevice:
            var bytes: UInt64 = 0
            guard csys_blk_size64(fd, &bytes) == 0 else { throw FerryError.syscall("BLKGETSIZE64", path: path) }
            size = bytes
        case .file:
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw FerryError.syscall("fstat", path: path) }
            size = UInt64(st.st_size)
        }
    }

    private let reopenLock = Mutex(())

    /// The descriptor without O_DIRECT, opened on first use (a sender's retransmission thread
    /// and its reader may both ask).
    private func buffered() throws -> Int32 {
        try reopenLock.withLock { _ in try openBuffered() }
    }

    private func openBuffered() throws -> Int32 {
        if bufferedFD >= 0 { return bufferedFD }
        let flags = openFlags & ~(csys_o_direct() | O_TRUNC | O_CREAT | csys_o_excl())
        let b = Sys.open(path, flags, 0)
        guard b >= 0 else { throw FerryError.syscall("cannot reopen", path: path) }
        bufferedFD = b
        return b
    }

    /// Gives up O_DIRECT after the medium refused it mid-way (EINVAL), and says so in `mode`.
    private func fallBackToBuffered() throws {
        mode = .buffered
        let b = try buffered()
        _ = csys_fadvise(b, 0, 0, 1)
    }

    /// Whether the bytes at [offset, offset+count) can only come from memory: read through the
    /// page cache (O_DIRECT refused) and still resident after being dropped, because another
    /// process keeps them mapped. Always false for O_DIRECT reads, and for tmpfs and ramfs, where
    /// memory is the medium; false too where residency cannot be told (then the drop is all).
    public func onlyInMemory(at offset: UInt64, count: Int) -> Bool {
        guard mode == .buffered, kind == .file else { return false }
        if memoryBacked == nil { memoryBacked = csys_memory_backed(fd) != 0 }
        guard memoryBacked == false else { return false }
        return csys_resident_after_drop(bufferedFD >= 0 ? bufferedFD : fd, Int64(offset), Int64(count)) > 0
    }

    private var memoryBacked: Bool?

    /// The file's identity and times now (nil for block devices and streams).
    public var stamp: FileStamp? { kind == .file ? FileStamp.of(fd: fd) : nil }

    // MARK: Claiming

    /// Claims a destination file for this run: a lock on its open file description, so a
    /// second ferry writing the same file (a copy, a resume or a resend, local or arriving over
    /// ssh) is refused before it changes a byte, and the claim ends with the process however it
    /// ends. A block device is claimed by its O_EXCL open instead. Where the file system has no
    /// such locks the copy goes on unclaimed, as before.
    public func claimForWriting() throws {
        guard kind == .file else { return }
        if csys_ofd_trylock(fd) == 0 { return }
        if errno == EAGAIN || errno == EACCES {
            throw FerryError(.refused, "\(path) is being written by another ferry run (a copy, resume or resend)",
                             hint: "wait for that run to end or stop it; two writers would leave a mixture of both")
        }
    }

    // MARK: Reading

    /// Reads up to `count` bytes at `offset` (positioned) or from the stream, looping over short
    /// reads. Returns fewer than `count` only at end of file. `buffer` must be AlignedBuffer-backed
    /// with room for `count` rounded up to 4096.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws -> Int {
        if kind == .stream { return try readStream(into: buffer, count: count) }
        var done = 0
        while done < count {
            let pos = offset + UInt64(done)
            let n: Int
            if mode == .direct {
                // O_DIRECT wants aligned lengths: ask for the rounded length; EOF trims it.
                let want = Self.roundUp(count - done)
                n = Sys.pread(fd, buffer + done, want, pos)
                if n < 0 && errno == EINVAL && done % Self.directAlignment != 0 {
                    // Unaligned continuation after a short read: finish through the page cache.
                    let b = try buffered()
                    let m = Sys.pread(b, buffer + done, count - done, pos)
                    if m < 0 { throw FerryError.syscall("read", path: path, offset: pos) }
                    if m == 0 { break }
                    done += m
                    continue
                }
                if n < 0 && errno == EINVAL {
                    try fallBackToBuffered()
                    continue
                }
            } else {
                let b = try buffered()
                n = Sys.pread(b, buffer + done, count - done, pos)
            }
            if n < 0 { throw FerryError.syscall("read", path: path, offset: pos) }
            if n == 0 { break }
            done += min(n, count - done)
        }
        // Drop what was read from the cache, also in direct mode: some file systems (ext4 with
        // data=journal, for one) accept O_DIRECT and quietly serve it through the page cache.
        if done > 0 {
            _ = csys_fadvise(mode == .buffered ? bufferedFD : fd, Int64(offset), Int64(done), 2)
        }
        return done
    }

    /// The smallest piece a read can fail in: a block device's logical sector size, a page for
    /// a file (the kernel reads files through pages, or in file-system blocks with O_DIRECT).
    public lazy var sectorSize: Int = {
        if kind == .blockDevice {
            var n: Int32 = 0
            if csys_blk_logical_sector(fd, &n) == 0, n >= 512, n <= 65536 { return Int(n) }
            return 512
        }
        return 4096
    }()

    /// One positioned read of exactly [offset, offset+count), never rounded past `count`: a
    /// rescue read must not touch the sector after the one it asks about. Returns the bytes read
    /// (fewer only at the end of the image), or the errno of the failure.
    public func readExact(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) -> Result<Int, FerryError> {
        var done = 0
        while done < count {
            let pos = offset + UInt64(done)
            var n = -1
            if mode == .direct {
                n = Sys.pread(fd, buffer + done, count - done, pos)
                if n < 0 && errno == EINVAL {
                    // Not aligned for O_DIRECT here: ask the page cache instead.
                    guard let b = try? buffered() else { return .failure(FerryError.syscall("read", path: path, offset: pos)) }
                    n = Sys.pread(b, buffer + done, count - done, pos)
                }
            } else {
                guard let b = try? buffered() else { return .failure(FerryError.syscall("read", path: path, offset: pos)) }
                n = Sys.pread(b, buffer + done, count - done, pos)
            }
            if n < 0 { return .failure(FerryError.syscall("read", path: path, offset: pos)) }
            if n == 0 { break }
            done += n
        }
        if done > 0 { _ = csys_fadvise(mode == .buffered ? bufferedFD : fd, Int64(offset), Int64(done), 2) }
        return .success(done)
    }

    private func readStream(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        var done = 0
        while done < count {
            let n = Sys.read(fd, buffer + done, count - done)
            if n < 0 { throw FerryError.syscall("read", path: path == "-" ? "stdin" : path, offset: nil) }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Drops whatever the page cache holds for this image, so the next reads come from the medium.
    /// Dirty pages are written first (fdatasync), since DONTNEED leaves dirty pages in place.
    /// A loop device without direct I/O serves even O_DIRECT reads from its backing file's page
    /// cache: that file's cache is dropped too.
    public func dropCache() {
        guard kind != .stream else { return }
        _ = Sys.fdatasync(fd)
        _ = csys_fadvise(fd, 0, 0, 2)
        if bufferedFD >= 0 { _ = csys_fadvise(bufferedFD, 0, 0, 2) }
        if let backing = loopBacking {
            let b = Sys.open(backing, O_RDONLY | csys_o_cloexec(), 0)
            if b >= 0 {
                _ = Sys.fdatasync(b)
                _ = csys_fadvise(b, 0, 0, 2)
                Glibc.close(b)
            }
        }
    }

    /// The backing file of a loop device that reads through its page cache (nil otherwise).
    public private(set) lazy var loopBacking: String? = kind == .blockDevice ? Footprint.cachedLoopBacking(rdev: device) : nil

    /// How reads reach the medium, as a report says it: the I/O mode, and for a loop device over a
    /// cached file, that its cache is dropped before every read that vouches for bytes.
    public var readMode: String {
        guard let backing = loopBacking else { return mode.rawValue }
        return mode.rawValue + ", through loop file " + backing + " (its page cache dropped)"
    }

    // MARK: Writing

    /// Writes `count` bytes at `offset` (or appends to a stream), looping over short writes.
    public func write(from buffer: UnsafeRawPointer, count: Int, at offset: UInt64) throws {
        if kind == .stream { return try writeStream(from: buffer, count: count) }
        var done = 0
        while done < count {
            let pos = offset + UInt64(done)
            let left = count - done
            let useDirect = mode == .direct && pos % UInt64(Self.directAlignment) == 0
                && left % Self.directAlignment == 0
            let target = useDirect ? fd : try buffered()
            let n = Sys.pwrite(target, buffer + done, left, pos)
            if n < 0 && useDirect && errno == EINVAL {
                try fallBackToBuffered()
                continue
            }
            if n < 0 { throw FerryError.syscall("write", path: path, offset: pos) }
            if n == 0 { throw FerryError(.io, "write \(path) at offset \(pos): no progress (device full?)") }
            done += n
        }
        if mode == .buffered { try trimWriteCache(upTo: offset + UInt64(count)) }
    }

    /// Keeps a buffered writer from filling the page cache: start writeback of each chunk, and once
    /// the stream is a window ahead, wait for the older range and drop it.
    private func trimWriteCache(upTo end: UInt64) throws {
        guard bufferedFD >= 0, end > droppedUpTo + Self.dropWindow else { return }
        let len = end - droppedUpTo
        if csys_sync_file_range(bufferedFD, Int64(droppedUpTo), Int64(len), 1 | 2 | 4) != 0 && errno != ESPIPE {
            throw FerryError.syscall("sync_file_range", path: path, offset: droppedUpTo)
        }
        _ = csys_fadvise(bufferedFD, Int64(droppedUpTo), Int64(len), 2)
        droppedUpTo = end
    }

    private func writeStream(from buffer: UnsafeRawPointer, count: Int) throws {
        var done = 0
        while done < count {
            let n = Sys.write(fd, buffer + done, count - done)
            if n < 0 {
                if errno == EPIPE {
                    throw FerryError(.io, "the reader of stdout went away (broken pipe)")
                }
                throw FerryError.syscall("write", path: path == "-" ? "stdout" : path)
            }
            done += n
        }
    }

    /// Makes `[offset, offset+count)` read back as zeros in the cheapest way the medium offers:
    /// nothing for a region known to be a hole already, PUNCH_HOLE for files, BLKZEROOUT for block
    /// devices, written zeros for streams or where the cheap way is refused.
    public func writeZeros(at offset: UInt64, count: Int, alreadyHole: Bool, zeros: AlignedBuffer) throws {
        switch kind {
        case .file:
            if alreadyHole { return }
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw FerryError.syscall("fstat", path: path) }
            let current = UInt64(st.st_size)
            let end = offset + UInt64(count)
            // Past the end of the file a hole is made by extending it; inside, by punching.
            var punched = offset >= current
            if !punched {
                let inside = min(end, current) - offset
                if Sys.punchHole(fd, offset, inside) == 0 {
                    punched = true
                } else if errno != EOPNOTSUPP && errno != ENOSYS {
                    throw FerryError.syscall("punch hole", path: path, offset: offset)
                }
            }
            if punched {
                if end > current {
                    guard Sys.ftruncate(fd, end) == 0 else { throw FerryError.syscall("extend", path: path, offset: offset) }
                    size = end
                }
                return
            }
        case .blockDevice:
            if offset % 512 == 0 && count % 512 == 0 {
                if Sys.zeroOut(fd, offset, UInt64(count)) == 0 { return }
                if errno != EOPNOTSUPP && errno != EINVAL && errno != ENOTTY {
                    throw FerryError.syscall("BLKZEROOUT", path: path, offset: offset)
                }
            }
        case .stream, .nbd: break
        }
        var done = 0
        while done < count {
            let n = min(zeros.capacity, count - done)
            try write(from: zeros.pointer, count: n, at: offset + UInt64(done))
            done += n
        }
    }

    /// Sets a regular file's length (a fresh copy is sized up front, so zero chunks stay holes).
    public func setLength(_ length: UInt64) throws {
        guard kind == .file else { return }
        guard Sys.ftruncate(fd, length) == 0 else { throw FerryError.syscall("truncate", path: path) }
        size = length
    }

    /// fdatasync: after this returns, everything written is on the medium.
    public func sync() throws {
        guard kind != .stream else { return }
        guard Sys.fdatasync(fd) == 0 else {
            throw FerryError.syscall("fdatasync", path: path, hint: "the data may not be on the medium; do not trust this copy")
        }
        // Clean pages a quietly-buffered "O_DIRECT" left behind go too.
        _ = csys_fadvise(fd, 0, 0, 2)
        if bufferedFD >= 0 {
            guard Sys.fdatasync(bufferedFD) == 0 else { throw FerryError.syscall("fdatasync", path: path) }
            _ = csys_fadvise(bufferedFD, 0, 0, 2)
        }
    }

    public static func roundUp(_ n: Int) -> Int {
        (n + directAlignment - 1) / directAlignment * directAlignment
    }
}
