// ferry's JSON, decoded by the field names the documentation promises.
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

// MARK: - ferry's JSON (decoded by the field names the documentation promises)

struct CopyEndJSON: Decodable {
    var path: String
    var host: String?
    var size: UInt64
    var sha256: String
    var imageId: Int64?
    var ledger: String?
    var io: String?
    /// raw, a container format (vdi, qcow2, vmdk, vpc, vhdx, qed) or nbd.
    var format: String?
    /// The source end: bytes read from the medium or NBD server.
    var bytesRead: UInt64?
}

struct RemoteEndJSON: Decodable {
    var host: String
    var path: String
    var sha256: String
    var imageId: Int64?
    var ledger: String
}

struct CopyJSON: Decodable {
    var source: CopyEndJSON
    var destination: CopyEndJSON
    var chunkSize: Int
    var chunks: Int
    var zeroChunks: Int
    var listRoot: String
    var imageId: Int64?
    var transferId: String
    var digestsMatch: Bool
    var resumedFromChunk: Int?
    var bytesRead: UInt64
    var bytesWritten: UInt64
    var bytesSent: UInt64?
    var zeroFrames: Int?
    var retransmissions: Int?
    var remote: RemoteEndJSON?
    var resumeChecks: [String]?
    var seconds: Double
}

struct BadRangeJSON: Decodable, Equatable, CustomStringConvertible {
    var offset: UInt64
    var length: UInt64
    var firstChunk: Int
    var lastChunk: Int
    var description: String { "{offset \(offset), length \(length), chunks \(firstChunk)-\(lastChunk)}" }
}

struct VerifyJSON: Decodable {
    var target: String
    var host: String?
    var imageId: Int64
    var runId: Int64
    var status: String
    var chunks: Int
    var badChunks: Int
    var badRanges: [BadRangeJSON]
    var transientChunks: [Int]
    var unreadableChunks: [Int]
    var sizeChanged: Bool
    var expectedSize: UInt64
    var actualSize: UInt64?
    var bytesRead: UInt64
    var readMode: String
    var format: String?
    var seconds: Double
}

struct ImageJSON: Decodable {
    var id: Int64
    var role: String
    var path: String
    var host: String
    var size: UInt64?
    var chunkSize: Int
    var sha256: String?
    var listRoot: String?
    var chunkCount: Int?
    var zeroChunks: Int
    var complete: Bool
    var transferId: String
    var checkpointChunks: Int
}

struct RunJSON: Decodable {
    var id: Int64
    var imageId: Int64
    var kind: String
    var result: String
    var error: String?
}

struct FindingJSON: Decodable {
    var kind: String
    var firstChunk: Int
    var lastChunk: Int
    var offset: UInt64
    var length: UInt64
}

struct LedgerShowJSON: Decodable {
    struct RunWithFindings: Decodable {
        var run: RunJSON
        var findings: [FindingJSON]
    }
    var image: ImageJSON
    var runs: [RunWithFindings]
}

func decode<T: Decodable>(_ type: T.Type, _ data: Data, file: StaticString = #filePath, line: UInt = #line) throws -> T {
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch {
        XCTFail("cannot decode \(T.self) from \(String(decoding: data.prefix(2000), as: UTF8.self)): \(error)", file: file, line: line)
        throw error
    }
}

/// The last line of `text` that looks like a JSON object.
func lastJSONLine(_ text: String) -> Data {
    Data((text.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? "").utf8)
}
