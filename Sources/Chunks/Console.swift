import Glibc

/// Lines for the user on stdout and stderr, written with write(2). A closed stdout (`ferry ledger
/// list | head`) ends ferry quietly with the status a shell gives a process SIGPIPE ended, as it
/// ends `cat`; a closed stderr is ignored. Nothing here traps.
public enum Console {
    public static func out(_ text: String) { write(1, text) }
    public static func err(_ text: String) { write(2, text) }

    static func write(_ fd: Int32, _ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var done = 0
            while done < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
                if n > 0 { done += n; continue }
                if n < 0 && errno == EINTR { continue }
                if fd == 1 && n < 0 && errno == EPIPE { exit(128 + SIGPIPE) }
                return
            }
        }
    }
}
