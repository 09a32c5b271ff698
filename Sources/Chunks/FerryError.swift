import Glibc

/// An error a user can act on: what happened, where (path, offset), and what to do next.
public struct FerryError: Error, CustomStringConvertible, Equatable {
    /// The class of failure; it picks the exit status (see `ExitStatus` in FerryCommands). Data
    /// that is not intact is not an error but a finding: copy, verify and resend report it, and
    /// their commands map the report to exit status 1, 5 or 8.
    public enum Code: String, Sendable {
        case usage          // bad arguments
        case notFound       // a path, image or ledger record does not exist
        case io             // a read, write or sync failed
        case refused        // ferry declined to do something unsafe
        case ledger         // the ledger cannot be opened, is not a ferry ledger, or is too new
        case wire           // the peer spoke a broken or incompatible protocol
        case remote         // the far side or its transport failed
        case interrupted    // SIGINT or SIGTERM
    }

    /// What the layer below said, kept typed so callers decide by value, never by message text.
    public enum Cause: Equatable, Sendable {
        /// A syscall failed with this errno.
        case errno(Int32)
        /// SQLite returned this (extended) result code.
        case sqlite(Int32)
        /// No data moved on a session for its idle limit (`--timeout`).
        case stalled
        /// The other end of a session closed it (end of file, or a broken pipe).
        case peerGone
    }

    public var code: Code
    public var message: String
    public var hint: String?
    public var cause: Cause?
    /// The other end of a session reported this error (it arrived in an error frame): it is shown
    /// once, with "remote:", and never sent back.
    public var fromPeer = false

    public init(_ code: Code, _ message: String, hint: String? = nil, cause: Cause? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
        self.cause = cause
    }

    public var description: String {
        guard let hint else { return message }
        return "\(message) (\(hint))"
    }

    /// An error from a failed syscall: names the operation, the path and, when known, the offset.
    public static func syscall(_ op: String, path: String, offset: UInt64? = nil, errno err: Int32 = Glibc.errno,
                               hint: String? = nil) -> FerryError {
        if err == EINTR, let signal = Interrupts.received {
            return Interrupts.error(signal, during: "\(op) \(path)" + (offset.map { " at offset \($0)" } ?? ""))
        }
        var msg = "\(op) \(path)"
        if let offset { msg += " at offset \(offset)" }
        msg += ": \(String(cString: strerror(err)))"
        let code: Code = (err == ENOENT) ? .notFound : .io
        return FerryError(code, msg, hint: hint ?? defaultHint(err), cause: .errno(err))
    }

    static func defaultHint(_ err: Int32) -> String? {
        switch err {
        case EACCES, EPERM: return "check permissions, or run as root for block devices"
        case ENOSPC: return "the destination is full; free space or choose a larger target"
        case EIO: return "the medium reported an I/O error; check the disk (dmesg, smartctl)"
        case EBUSY: return "the device is mounted or in use; unmount it or stop what holds it"
        case EROFS: return "the destination is read-only"
        default: return nil
        }
    }
}

/// Runs a syscall, retrying while it fails with EINTR, unless the EINTR came from SIGINT or
/// SIGTERM: then the failure stands, and the caller's error says the run was interrupted.
@inline(__always)
public func retryingEINTR<T: BinaryInteger>(_ body: () -> T) -> T {
    while true {
        let r = body()
        if r == -1 && errno == EINTR && Interrupts.received == nil { continue }
        return r
    }
}
