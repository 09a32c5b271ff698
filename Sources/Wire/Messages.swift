import Chunks
import Foundation

/// The protocol version this build speaks, and the oldest it still accepts.
public enum ProtocolVersion {
    public static let current = 1
    public static let oldest = 1
}

/// First frame from each side.
public struct Hello: Codable, Sendable {
    public var magic = "ferry"
    public var protocolVersion: Int
    public var oldestProtocol: Int
    public var ferryVersion: String
    /// Path of the running binary, named in a version refusal.
    public var binary: String
    public var host: String
    public var capabilities: [String]

    public init(ferryVersion: String, binary: String, host: String) {
        protocolVersion = ProtocolVersion.current
        oldestProtocol = ProtocolVersion.oldest
        self.ferryVersion = ferryVersion
        self.binary = binary
        self.host = host
        capabilities = ["zstd", "resume", "verify", "resend"]
    }
}

/// The server's answer to a Request, once it is ready.
public struct Ready: Codable, Sendable {
    public var host: String
    public var ledger: String
    public var imageId: Int64?
    public var size: UInt64?
    public var kind: String?
    public var io: String?
    /// Pull: how the source is read: `raw`, a container format (vdi, qcow2, ...) or `nbd`.
    public var format: String?
    /// Resume: the chunk index both ends continue from (0 = from the start).
    public var resumeFrom: Int = 0
    public var transferId: String?
    public var chunkSize: Int?
    /// Resume: what this end checked before it trusted the copied part.
    public var resumeCheck: String?
    public init(host: String, ledger: String) { (self.host, self.ledger) = (host, ledger) }
}

/// The sender's last word: how much was sent and what it hashed.
public struct End: Codable, Sendable {
    public var size: UInt64
    public var chunks: Int
    /// Over the bytes sent: zeros stand where the source could not read (see `unreadableBytes`).
    public var sha256: String
    /// Bytes the source could not read and sent as zeros (nil: none).
    public var unreadableBytes: UInt64?
    /// Bytes read from the source medium or NBD server (extents known to be zeros are not read).
    public var bytesRead: UInt64?
    public init(size: UInt64, chunks: Int, sha256: String) { (self.size, self.chunks, self.sha256) = (size, chunks, sha256) }
}

/// The receiver's (or the sending server's) outcome of a copy.
public struct TransferResult: Codable, Sendable {
    public var host: String
    public var ledger: String
    public var imageId: Int64?
    public var size: UInt64
    public var sha256: String
    public var listRoot: String
    public var chunks: Int
    public var zeroChunks: Int
    public var bytesRead: UInt64 = 0
    public var bytesWritten: UInt64 = 0
    public var retransmissions: Int = 0
    public var zeroFrames: Int = 0
    public var io: String?
    /// Bytes recorded unreadable at this end (nil: none).
    public var unreadableBytes: UInt64?
    /// The receiving end on ZFS: the snapshot it took, or why it took none.
    public var snapshot: String?
    public var snapshotError: String?
    public init(host: String, ledger: String, imageId: Int64?, size: UInt64, sha256: String, listRoot: String,
                chunks: Int, zeroChunks: Int) {
        (self.host, self.ledger, self.imageId, self.size, self.sha256) = (host, ledger, imageId, size, sha256)
        (self.listRoot, self.chunks, self.zeroChunks) = (listRoot, chunks, zeroChunks)
    }
}

/// An error that crossed the wire, with the far side's error code kept.
public struct WireError: Codable, Sendable {
    public var code: String
    public var message: String
    public var hint: String?

    public init(_ e: FerryError) { (code, message, hint) = (e.code.rawValue, e.message, e.hint) }

    /// The far side's error as this side reports it: its status kept, marked as the peer's.
    public var ferryError: FerryError {
        var e = FerryError(FerryError.Code(rawValue: code) ?? .remote, "remote: " + message, hint: hint)
        e.fromPeer = true
        return e
    }
}

public enum JSONBody {
    public static func encode<T: Encodable>(_ v: T) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array((try? e.encode(v)) ?? Data("{}".utf8))
    }

    /// Deeper than any message ferry sends (a resend plan's chunks sit at 4), far below Foundation's
    /// 512, whose refusal of a 513th array opened on a body's last byte traps instead of throwing.
    public static let maxDepth = 32

    public static func decode<T: Decodable>(_ t: T.Type, _ b: [UInt8], what: String) throws -> T {
        guard depth(b) <= maxDepth else {
            throw FerryError(.wire, "malformed \(what) frame from the peer: JSON nested deeper than \(maxDepth) levels")
        }
        do {
            return try JSONDecoder().decode(t, from: Data(b))
        } catch {
            throw FerryError(.wire, "malformed \(what) frame from the peer: \(error)")
        }
    }

    /// The deepest nesting of arrays and objects in a JSON text, brackets in strings not counted: never
    /// less than the nesting the decoder reaches before a syntax error stops it.
    static func depth(_ b: [UInt8]) -> Int {
        var depth = 0, deepest = 0, inString = false, escaped = false
        for c in b {
            if inString {
                if escaped { escaped = false } else if c == UInt8(ascii: "\\") { escaped = true } else if c == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch c {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                deepest = max(deepest, depth)
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                depth -= 1
                if depth < 0 { return deepest }
            default: break
            }
        }
        return deepest
    }
}
