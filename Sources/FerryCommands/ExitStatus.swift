import ArgumentParser
import Chunks

/// ferry's exit statuses, in one place (documented in ferry(1), EXIT STATUS).
public enum ExitStatus: Int32, CaseIterable {
    case ok = 0
    /// verify found corruption or a size change; a copy's two ends disagree.
    case corrupt = 1
    case usage = 64
    case notFound = 3
    case io = 4
    case refused = 5
    case ledger = 6
    case remote = 7
    case unrepairable = 8
    case interrupted = 130

    /// The exit code for an error: an interruption exits 128 + the signal (130 for SIGINT, 143
    /// for SIGTERM), as a shell reports a process the signal ended.
    public static func code(of e: FerryError) -> Int32 {
        if e.code == .interrupted, let s = Interrupts.received { return 128 + s }
        return of(e.code).rawValue
    }

    public static func of(_ code: FerryError.Code) -> ExitStatus {
        switch code {
        case .usage: return .usage
        case .notFound: return .notFound
        case .io: return .io
        case .refused: return .refused
        case .ledger: return .ledger
        case .wire, .remote: return .remote
        case .interrupted: return .interrupted
        }
    }

    public static let manual = """
        0    success: the copy completed and both ends agree, or verify found every chunk intact.
        1    data is not intact: verify found corrupt chunks or a size change, or a copy's two ends \
        computed different digests (a resend that leaves chunks bad exits 8, or 5 when the source \
        refused them); or some source bytes could not be read (a copy with --on-read-error=record, \
        a verify of its image, a resend that left some of them unreadable).
        3    not found: a path, a ledger record or an image to verify does not exist.
        4    I/O error reading or writing an image.
        5    refused: ferry declined to do something unsafe (destination mounted or too small, \
        source is a disk-image container, source changed since the copy, destination being written \
        by another ferry run, a medium other than the one recorded, chunks verify could only read \
        from memory).
        6    ledger error: the ledger cannot be opened, is not a ferry ledger, or is newer than this ferry.
        7    remote error: ssh or the far ferry failed, or the peer speaks an incompatible protocol.
        8    unrepairable: chunks still read back wrong after repeated repair attempts (a failing disk).
        64   usage error (bad arguments).
        130  interrupted by SIGINT (143: by SIGTERM): the run stopped at the next chunk, marked \
        nothing complete and recorded the run as interrupted; a local copy first made what it \
        wrote durable and recorded a checkpoint there, and any copy continues from its last \
        checkpoint with --resume. A second signal ends ferry at once.
        """
}
