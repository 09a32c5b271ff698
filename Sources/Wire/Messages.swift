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

/// What the client asks of `ferry serve`: everything the far side needs travels here, not on the
/// remote command line, so serve also works behind an authorized_keys forced command.
public struct Request: Codable, Sendable {
    public enum Operation: String, Codable, Sendable {
        case receive        // write the image at `path` from chunk frames (push)
        case send           // read the image at `path` and send chunk frames (pull)
        case verify         // verify the image at `path` against the far ledger
        case resendReceive = "resend-receive"   // repair the image at `path`
        case resendSend = "resend-send"         // supply chunks of the source at `path`
    }
    public var operation: Operation
    public var path: String
    /// The far side's ledger; nil means its default.
    public var ledger: String?
    public var chunkSize: Int
    public var size: UInt64?
    public var transferId: String
    /// The other end as the far side should record it: `host:path`.
    public var peer: String
    public var asIs = false
    public var writeZeros = false
    public var compressLevel: Int?
    public var checkpointEvery: Int
    public var resume = false
    /// Resume: the checkpoints the client's ledger holds for this transfer.
    public var checkpoints: [Int] = []
    public var imageId: Int64?
    /// Resend: chunk indices to repair, and the sub-block size.
    public var chunks: [Int] = []
    public var subBlockSize: Int = 0
    public var force = false
    /// Resend: verify the destination before planning the repair.
    public var verifyFirst = false
    /// Resend from a far source: the destination's repair plan.
    public var plan: ResendPlan?

    public init(operation: Operation, path: String, ledger: String?, chunkSize: Int, size: UInt64?, transferId: String,
                peer: String, checkpointEvery: Int) {
        (self.operation, self.path, self.ledger, self.chunkSize, self.size) = (operation, path, ledger, chunkSize, size)
        (self.transferId, self.peer, self.checkpointEvery) = (transferId, peer, checkpointEvery)
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
    /// Resume: the chunk index both ends continue from (0 = from the start).
    public var resumeFrom: Int = 0
    public var transferId: String?
    public var chunkSize: Int?
    public init(host: String, ledger: String) { (self.host, self.ledger) = (host, ledger) }
}

/// The sender's last word: how much was sent and what it hashed.
public struct End: Codable, Sendable {
    public var size: UInt64
    public var chunks: Int
    public var sha256: String
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

    public var ferryError: FerryError {
        FerryError(FerryError.Code(rawValue: code) ?? .remote, "remote: " + message, hint: hint)
    }
}

public enum JSONBody {
    public static func encode<T: Encodable>(_ v: T) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array((try? e.encode(v)) ?? Data("{}".utf8))
    }

    public static func decode<T: Decodable>(_ t: T.Type, _ b: [UInt8], what: String) throws -> T {
        do {
            return try JSONDecoder().decode(t, from: Data(b))
        } catch {
            throw FerryError(.wire, "malformed \(what) frame from the peer: \(error)")
        }
    }
}
