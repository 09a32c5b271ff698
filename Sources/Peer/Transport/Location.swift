import Foundation
import Chunks

/// Where an image lives: a local path, or `[user@]host:path` on another host (as scp and rsync
/// write it). A path with a slash before its first colon is local (`./a:b`, `/x:y`).
public enum Location: Equatable, Sendable {
    case local(String)
    case remote(host: String, path: String)

    public static func parse(_ text: String) -> Location {
        if text == "-" || text.hasPrefix("/") || text.hasPrefix(".") { return .local(text) }
        // A URI (nbd://host/export, nbd+unix:///export?socket=...) is read from here.
        if DeviceIdentity.isURI(text) { return .local(text) }
        guard let colon = text.firstIndex(of: ":") else { return .local(text) }
        let host = String(text[..<colon])
        if host.isEmpty || host.contains("/") { return .local(text) }
        var path = String(text[text.index(after: colon)...])
        if path.isEmpty { path = "." }
        // [user@]host or [user@][v6addr]
        if host.hasPrefix("[") || host.contains("@[") {
            guard let close = text.firstIndex(of: "]"), let c = text[close...].firstIndex(of: ":") else { return .local(text) }
            let h = String(text[..<close]).replacingFirst("[", with: "") + ""
            return .remote(host: h.replacingFirst("@[", with: "@"), path: String(text[text.index(after: c)...]))
        }
        return .remote(host: host, path: path)
    }

    public var path: String {
        switch self {
        case .local(let p): return p
        case .remote(_, let p): return p
        }
    }

    public var isRemote: Bool { if case .remote = self { return true } else { return false } }

    public var display: String {
        switch self {
        case .local(let p): return p
        case .remote(let h, let p): return "\(h):\(p)"
        }
    }
}

extension String {
    func replacingFirst(_ s: String, with r: String) -> String {
        guard let range = range(of: s) else { return self }
        return replacingCharacters(in: range, with: r)
    }
}
