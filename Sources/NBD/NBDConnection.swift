import CNBD
import Chunks
import Glibc

/// One extent of an export as `base:allocation` describes it.
public struct Extent: Equatable, Sendable {
    public var offset: UInt64
    public var length: UInt64
    /// The server says these bytes read as zeros (NBD_STATE_ZERO): they need not be read.
    public var zero: Bool
    public var end: UInt64 { offset + length }
}

/// A client connection to one NBD export: the one importer of libnbd.
///
/// Reads are issued several at a time (libnbd's aio), so a data extent streams at the server's
/// speed rather than one round trip per request.
public final class NBDConnection {
    private let handle: OpaquePointer
    /// What the user or ferry named: a URI, or the container the export serves.
    public let name: String
    public let size: UInt64
    /// Whether the server answers `base:allocation` block status.
    public let knowsAllocation: Bool

    /// Largest single read request: qemu-nbd and nbdkit accept 32 MiB; smaller pieces keep
    /// several in flight for one chunk.
    static let pieceSize = 256 << 10
    static let maxInFlight = 16

    private init(handle: OpaquePointer, name: String) throws {
        self.handle = handle
        self.name = name
        let s = nbd_get_size(handle)
        guard s >= 0 else {
            let e = Self.lastError(name, "asking the export's size")
            nbd_close(handle)
            throw e
        }
        size = UInt64(s)
        knowsAllocation = nbd_can_meta_context(handle, "base:allocation") == 1
    }

    /// Connects to `uri` (`nbd://host[:port]/export`, `nbd+unix:///export?socket=PATH`).
    public static func connect(uri: String, name: String? = nil) throws -> NBDConnection {
        let h = try newHandle()
        // A URI names a server; it must not open local files or run TLS set-ups ferry cannot check.
        _ = nbd_set_uri_allow_local_file(h, false)
        guard nbd_connect_uri(h, uri) == 0 else {
            let e = lastError(name ?? uri, "connecting to \(uri)")
            nbd_close(h)
            throw e
        }
        return try NBDConnection(handle: h, name: name ?? uri)
    }

    /// Connects to the export on the unix socket at `socket`.
    public static func connect(socket: String, name: String) throws -> NBDConnection {
        let h = try newHandle()
        guard nbd_connect_unix(h, socket) == 0 else {
            let e = lastError(name, "connecting to its server on \(socket)")
            nbd_close(h)
            throw e
        }
        return try NBDConnection(handle: h, name: name)
    }

    private static func newHandle() throws -> OpaquePointer {
        guard let h = nbd_create() else {
            throw FerryError(.io, "cannot create an NBD handle: " + String(cString: nbd_get_error()))
        }
        _ = nbd_add_meta_context(h, "base:allocation")
        return h
    }

    static func lastError(_ name: String, _ doing: String) -> FerryError {
        let errno = nbd_get_errno()
        let message = nbd_get_error().map { String(cString: $0) } ?? "unknown error"
        return FerryError(.io, "\(name): \(doing) failed: \(message)", cause: errno > 0 ? .errno(errno) : nil)
    }

    /// Closes the connection (the server sees the client leave).
    public func close() {
        _ = nbd_shutdown(handle, 0)
        nbd_close(handle)
    }

    // MARK: Block status

    /// The extents from `offset`, covering at least one byte and at most `count` bytes (the server
    /// may describe less than asked). Without `base:allocation`, one data extent.
    public func extents(at offset: UInt64, count: UInt64) throws -> [Extent] {
        let count = min(count, size - offset, UInt64(UInt32.max) & ~0xFFFF)
        guard knowsAllocation else { return [Extent(offset: offset, length: count, zero: false)] }
        final class Box { var extents: [Extent] = []; var start: UInt64 = 0 }
        let box = Box()
        box.start = offset
        let user = Unmanaged.passUnretained(box).toOpaque()
        let callback = nbd_extent_callback(callback: { user, context, offset, entries, count, _ in
            guard let user, let context, let entries, String(cString: context) == "base:allocation" else { return 0 }
            let box = Unmanaged<Box>.fromOpaque(user).takeUnretainedValue()
            var pos = offset
            for i in stride(from: 0, to: count - 1, by: 2) {
                let length = UInt64(entries[i])
                let flags = entries[i + 1]
                box.extents.append(Extent(offset: pos, length: length, zero: flags & UInt32(LIBNBD_STATE_ZERO) != 0))
                pos += length
            }
            return 0
        }, user_data: user, free: nil)
        // Asynchronous, so that a signal interrupting the wait neither fails the request nor
        // leaves it in flight with `box` gone.
        let none = nbd_completion_callback(callback: nil, user_data: nil, free: nil)
        try withExtendedLifetime(box) {
            try complete(nbd_aio_block_status(handle, count, offset, callback, none, 0),
                         "asking which extents hold data at offset \(offset)")
        }
        // Keep only what lies inside the request, in order and without gaps.
        var out: [Extent] = []
        var pos = offset
        for e in box.extents where e.offset == pos && e.length > 0 {
            let length = min(e.length, offset + count - pos)
            if length == 0 { break }
            out.append(Extent(offset: pos, length: length, zero: e.zero))
            pos += length
        }
        guard !out.isEmpty else {
            throw FerryError(.io, "\(name): the server described no extent at offset \(offset)",
                             hint: "the NBD server's block status reply is broken; read it as a plain export (nothing can be skipped then)")
        }
        return out
    }

    /// Waits for the server. A signal (Ctrl-C) interrupts the wait, not the request: the wait
    /// goes on, and the copy stops cleanly at the next chunk.
    private func poll(_ doing: String) throws {
        while nbd_poll(handle, -1) < 0 {
            guard nbd_get_errno() == EINTR else { throw Self.lastError(name, doing) }
        }
    }

    // MARK: Reading and writing

    /// Reads `count` bytes at `offset` into `buffer`, as several requests in flight. Throws with
    /// the offset of the first request that failed.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws {
        try pieces(count: count, at: offset, doing: "reading") { handle, done, n, at, none in
            nbd_aio_pread(handle, buffer + done, n, at, none, 0)
        }
    }

    /// Whether the connection is gone (the server closed it or died).
    public var isDead: Bool { nbd_aio_is_dead(handle) == 1 || nbd_aio_is_closed(handle) == 1 }

    /// Whether the server accepts writes (ferry's qemu-nbd for a destination; not a read-only export).
    public var writable: Bool { nbd_is_read_only(handle) == 0 }

    /// Writes `count` bytes at `offset` from `buffer`, as several requests in flight.
    public func write(from buffer: UnsafeRawPointer, count: Int, at offset: UInt64) throws {
        try pieces(count: count, at: offset, doing: "writing") { handle, done, n, at, none in
            nbd_aio_pwrite(handle, buffer + done, n, at, none, 0)
        }
    }

    /// Makes `count` bytes at `offset` read as zeros. The server may deallocate them (no NO_HOLE
    /// flag: a qcow2 cluster becomes a zero cluster, not written data). A server that cannot
    /// zero is sent `zeros` as data.
    public func zero(count: Int, at offset: UInt64, zeros: UnsafeRawPointer, zerosLength: Int) throws {
        if nbd_can_zero(handle) == 1 {
            try pieces(count: count, at: offset, doing: "zeroing", piece: 32 << 20) { handle, _, n, at, none in
                nbd_aio_zero(handle, UInt64(n), at, none, 0)
            }
        } else {
            var done = 0
            while done < count {
                let n = min(zerosLength, count - done)
                try write(from: zeros, count: n, at: offset + UInt64(done))
                done += n
            }
        }
    }

    /// Asks the server to make every write so far durable (for qemu-nbd: its image's metadata
    /// and data written out, then fdatasync). Throws when the server cannot flush: then nothing
    /// it acknowledged can be called durable.
    public func flush() throws {
        guard nbd_can_flush(handle) == 1 else {
            throw FerryError(.io, "\(name): the NBD server cannot flush, so ferry cannot make writes through it durable",
                             hint: "write the disk through a server that supports flush (qemu-nbd does)")
        }
        let none = nbd_completion_callback(callback: nil, user_data: nil, free: nil)
        try complete(nbd_aio_flush(handle, none, 0), "flushing its writes (they may not be on the medium; do not trust them)")
    }

    /// Waits for the one request `cookie` names (a negative cookie: it was never issued).
    private func complete(_ cookie: Int64, _ doing: String) throws {
        guard cookie >= 0 else { throw Self.lastError(name, doing) }
        while true {
            let done = nbd_aio_command_completed(handle, UInt64(cookie))
            if done == 1 { return }
            if done < 0 { throw Self.lastError(name, doing) }
            try poll("waiting for: " + doing)
        }
    }

    /// Issues `count` bytes at `offset` as requests of at most `piece` bytes, up to `maxInFlight`
    /// at once, retiring them in order. Throws with the offset of the first request that failed,
    /// after the requests still out have finished (their buffer may be reused then).
    private func pieces(count: Int, at offset: UInt64, doing: String, piece: Int = pieceSize,
                        issue: (OpaquePointer, Int, Int, UInt64, nbd_completion_callback) -> Int64) throws {
        guard count > 0 else { return }
        guard offset + UInt64(count) <= size else {
            throw FerryError(.io, "\(name): \(doing) \(count) bytes at offset \(offset) goes past the export's end (\(size) bytes)")
        }
        var pending: [(cookie: Int64, offset: UInt64)] = []
        var issued = 0
        var failure: FerryError?
        let none = nbd_completion_callback(callback: nil, user_data: nil, free: nil)
        while failure == nil && (issued < count || !pending.isEmpty) {
            while failure == nil && issued < count && pending.count < Self.maxInFlight {
                let n = min(piece, count - issued)
                let at = offset + UInt64(issued)
                let cookie = issue(handle, issued, n, at, none)
                if cookie < 0 { failure = Self.lastError(name, "\(doing) \(n) bytes at offset \(at)"); break }
                pending.append((cookie, at))
                issued += n
            }
            guard failure == nil else { break }
            // Retire finished requests in order; wait while the oldest is still out, then go
            // back to issuing as soon as there is room.
            while let first = pending.first {
                let done = nbd_aio_command_completed(handle, UInt64(first.cookie))
                if done == 1 {
                    pending.removeFirst()
                    if issued < count { break } else { continue }
                }
                if done < 0 { failure = Self.lastError(name, "\(doing) at offset \(first.offset)"); break }
                do { try poll("waiting for \(doing) at offset \(first.offset)") } catch { failure = error as? FerryError; break }
            }
        }
        if let failure {
            // Let the requests still out finish before their buffer is reused.
            // (A dead connection retires them all; a signal only interrupts the wait.)
            while nbd_aio_in_flight(handle) > 0 {
                if nbd_poll(handle, 1000) < 0 && nbd_get_errno() != EINTR { break }
            }
            throw failure
        }
    }
}
