import Chunks

/// How the client reaches the far host.
public struct RemoteSettings: Sendable, Equatable {
    /// The remote shell and its arguments; nil means `ssh -o Compression=no`.
    public var rsh: [String]?
    /// The far ferry binary.
    public var remoteFerry: String
    /// The far ledger; nil means the far side's default.
    public var remoteLedger: String?
    /// Seconds with no data moving after which a session ends (nil: never), at both ends.
    public var timeout: Double?

    public static let defaultTimeout: Double = 300

    public init(rsh: [String]? = nil, remoteFerry: String = "ferry", remoteLedger: String? = nil,
                timeout: Double? = RemoteSettings.defaultTimeout) {
        (self.rsh, self.remoteFerry, self.remoteLedger, self.timeout) = (rsh, remoteFerry, remoteLedger, timeout)
    }

    /// The default remote shell: the seed's setting, as compression on a LAN only slows the copy.
    public static let defaultShell = ["ssh", "-o", "Compression=no"]

    /// Splits `--rsh` into words: on spaces, honouring single and double quotes and backslashes.
    public static func splitWords(_ s: String) -> [String] {
        var words: [String] = []
        var cur = ""
        var inWord = false
        var quote: Character? = nil
        var escape = false
        for ch in s {
            if escape { cur.append(ch); escape = false; inWord = true; continue }
            if ch == "\\" && quote != "'" { escape = true; continue }
            if let q = quote {
                if ch == q { quote = nil } else { cur.append(ch) }
                continue
            }
            if ch == "'" || ch == "\"" { quote = ch; inWord = true; continue }
            if ch == " " || ch == "\t" || ch == "\n" {
                if inWord { words.append(cur); cur = ""; inWord = false }
                continue
            }
            cur.append(ch)
            inWord = true
        }
        if inWord { words.append(cur) }
        return words
    }

    /// Quotes a word for a POSIX shell: the far sshd hands the command line to the user's shell.
    public static func shellQuote(_ s: String) -> String {
        if !s.isEmpty && s.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=:@%+,".contains($0) }) && s.unicodeScalars.allSatisfy({ $0.isASCII }) {
            return s
        }
        return "'" + s.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }

    /// The full argv that starts the far `ferry serve`: the remote shell, the host, and one
    /// quoted command string. Everything else (paths, options, ledger) travels in the protocol.
    /// `extraSSHOptions` go right after the default shell's own options (the cipher preference).
    public func command(host: String, extraSSHOptions: [String] = []) throws -> [String] {
        guard !host.isEmpty, !host.hasPrefix("-") else {
            throw FerryError(.usage, "'\(host)' is not a host name")
        }
        let shell = rsh ?? (Self.defaultShell + extraSSHOptions)
        guard !shell.isEmpty else { throw FerryError(.usage, "--rsh is empty") }
        return shell + [host, Self.shellQuote(remoteFerry) + " serve"]
    }
}
