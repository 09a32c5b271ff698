import Foundation

/// ssh's cipher decides a remote copy's speed. Measured through loopback ssh on this project's
/// bench machine: chacha20-poly1305 (OpenSSH's first choice) ~150-250 MB/s, aes128-gcm ~200-370 MB/s
/// on CPUs with AES instructions. So when the user runs the default remote shell and their ssh
/// configuration leaves the cipher list at OpenSSH's default, ferry moves the AES-GCM ciphers to
/// the front (`Ciphers ^...`: every other cipher stays allowed, so any server still negotiates).
enum CipherPreference {
    static let option = ["-o", "Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com"]

    static func options(host: String) -> [String] {
        guard cpuHasAES() else { return [] }
        guard let mine = effectiveCiphers(["-G", host]), let stock = effectiveCiphers(["-G", "-F", "/dev/null", host]),
              mine == stock else { return [] }
        return option
    }

    static func cpuHasAES() -> Bool {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        return info.split(separator: "\n").contains { $0.hasPrefix("flags") && $0.split(separator: " ").contains("aes") }
    }

    /// The `ciphers` line of `ssh -G ...` (what ssh would use), or nil when ssh cannot say.
    static func effectiveCiphers(_ args: [String]) -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["ssh"] + args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix("ciphers ") }.map(String.init)
    }
}
