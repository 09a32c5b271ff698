import CSys
import Glibc

/// SIGINT and SIGTERM. The first one is recorded, blocking calls return EINTR, and the loops that
/// move chunks stop at the next chunk with an `.interrupted` error, so a run ends through its
/// normal error path: nothing is marked complete, and a copy keeps its last checkpoint for
/// `--resume`. A second signal ends the process at once.
public enum Interrupts {
    public static func install() { csys_install_interrupts() }

    /// The signal that arrived, if one did.
    public static var received: Int32? {
        let s = csys_interrupt_signal()
        return s == 0 ? nil : s
    }

    /// Throws the interruption, if one arrived.
    public static func check() throws {
        if let s = received { throw error(s) }
    }

    public static func error(_ signal: Int32, during what: String? = nil) -> FerryError {
        FerryError(.interrupted, "interrupted by \(name(signal))" + (what.map { " during \($0)" } ?? ""),
                   hint: "nothing was marked complete; a copy continues from its last checkpoint with --resume")
    }

    static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGINT: return "SIGINT"
        case SIGTERM: return "SIGTERM"
        default: return "signal \(signal)"
        }
    }
}
