import Chunks
import Foundation

/// Where results go and how they look: human lines or JSON, stdout or (when stdout carries the
/// image) stderr.
enum Output {
    static func json<T: Encodable>(_ value: T) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? e.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    static func prettyJSON<T: Encodable>(_ value: T) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
        guard let data = try? e.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    static func stdout(_ s: String) {
        Console.out(s + "\n")
    }

    static func stderr(_ s: String) {
        Console.err(s + "\n")
    }

    /// A path or name as a terminal line may show it: control characters (a newline, an escape
    /// sequence in a file name) become visible escapes, so a table row stays one row.
    static func printable(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            switch u.value {
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x09: out += "\\t"
            case 0x0D: out += "\\r"
            case 0..<0x20, 0x7F, 0x80..<0xA0: out += String(format: "\\x%02x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }

    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var v = Double(n)
        var u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.2f %@", v, units[u])
    }

    static func duration(_ s: Double) -> String {
        guard s.isFinite, s >= 0 else { return "--:--" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60)
                         : String(format: "%d:%02d", t / 60, t % 60)
    }

    static func rate(_ count: UInt64, _ seconds: Double) -> String {
        seconds > 0 ? bytes(UInt64(Double(count) / seconds)) + "/s" : "-"
    }
}
