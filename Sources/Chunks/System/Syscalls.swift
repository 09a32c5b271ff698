import CSys
import Glibc

/// Every system call that opens, reads, writes, syncs, truncates, punches or zeroes image data,
/// one function each (cache advice, size queries and fstat go to the kernel directly). EINTR is
/// retried here (unless SIGINT or SIGTERM arrived, see `retryingEINTR`), and `Faults` may force
/// an error or a short transfer first. They return what the C call returns, with errno set on
/// failure, so callers keep their own error messages (path, offset, what to do).
public enum Sys {
    @inline(__always)
    static func fault(_ op: Faults.Op, offset: UInt64? = nil) -> Faults.Action? {
        guard let faults = Faults.active else { return nil }
        return faults.inject(op, offset: offset)
    }

    /// Applies a fault to a transfer call: nil to go on with `count` (maybe shortened), or -1.
    @inline(__always)
    static func transfer(_ op: Faults.Op, offset: UInt64?, count: inout Int) -> Int? {
        switch fault(op, offset: offset) {
        case nil: return nil
        case .fail(let e)?: errno = e; return -1
        case .short?: count = Faults.shortened(count); return nil
        }
    }

    /// Puts this process in the idle I/O class: its reads wait for every other process's.
    public static func idleIOPriority() -> Bool { csys_ioprio_idle() == 0 }

    public static func pread(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int, _ offset: UInt64) -> Int {
        var count = count
        if let r = transfer(.pread, offset: offset, count: &count) { return r }
        return retryingEINTR { Glibc.pread(fd, buf, count, off_t(offset)) }
    }

    public static func pwrite(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int, _ offset: UInt64) -> Int {
        var count = count
        if let r = transfer(.pwrite, offset: offset, count: &count) { return r }
        return retryingEINTR { Glibc.pwrite(fd, buf, count, off_t(offset)) }
    }

    public static func read(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int) -> Int {
        var count = count
        if let r = transfer(.read, offset: nil, count: &count) { return r }
        return retryingEINTR { Glibc.read(fd, buf, count) }
    }

    public static func write(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int) -> Int {
        var count = count
        if let r = transfer(.write, offset: nil, count: &count) { return r }
        return retryingEINTR { Glibc.write(fd, buf, count) }
    }

    /// open(2); a `short` fault does not apply and is ignored.
    public static func open(_ path: String, _ flags: Int32, _ mode: UInt32) -> Int32 {
        if case .fail(let e)? = fault(.open) { errno = e; return -1 }
        return retryingEINTR { csys_open(path, flags, mode) }
    }

    public static func fdatasync(_ fd: Int32) -> Int32 {
        if case .fail(let e)? = fault(.fdatasync) { errno = e; return -1 }
        return retryingEINTR { Glibc.fdatasync(fd) }
    }

    public static func ftruncate(_ fd: Int32, _ length: UInt64) -> Int32 {
        if case .fail(let e)? = fault(.ftruncate, offset: length) { errno = e; return -1 }
        return retryingEINTR { Glibc.ftruncate(fd, off_t(length)) }
    }

    /// fallocate(PUNCH_HOLE|KEEP_SIZE) over [offset, offset+length).
    public static func punchHole(_ fd: Int32, _ offset: UInt64, _ length: UInt64) -> Int32 {
        if case .fail(let e)? = fault(.punch, offset: offset) { errno = e; return -1 }
        return retryingEINTR { csys_punch_hole(fd, Int64(offset), Int64(length)) }
    }

    /// BLKZEROOUT over [offset, offset+length).
    public static func zeroOut(_ fd: Int32, _ offset: UInt64, _ length: UInt64) -> Int32 {
        if case .fail(let e)? = fault(.zeroout, offset: offset) { errno = e; return -1 }
        return retryingEINTR { csys_blk_zeroout(fd, offset, length) }
    }
}
