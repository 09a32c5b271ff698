// Image data (seeded, non-repeating) and the independent checks that judge ferry (sha256sum, cmp, hashlib).
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Data

/// SplitMix64: a fast, seeded, non-repeating byte source.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        let words = buffer.count / 8
        let p = buffer.baseAddress!
        for i in 0..<words { p.storeBytes(of: next(), toByteOffset: i * 8, as: UInt64.self) }
        var tail = next()
        for i in (words * 8)..<buffer.count { buffer[i] = UInt8(truncatingIfNeeded: tail); tail >>= 8 }
    }
}

/// What one region of a generated image holds.
enum Region {
    case random(Int)
    case zeros(Int)
    /// Text-like data: numbered log lines, repeating in shape but not in content.
    case text(Int)
    /// One byte value repeated (not zero).
    case fill(UInt8, Int)

    var length: Int {
        switch self {
        case .random(let n), .zeros(let n), .text(let n), .fill(_, let n): return n
        }
    }
}

/// Writes `regions` one after another to `path` (zero regions are written as zeros, so the
/// source is not sparse: ferry must find them by content).
func writeImage(_ path: String, _ regions: [Region], seed: UInt64 = 1) throws {
    _ = FileManager.default.createFile(atPath: path, contents: nil)
    let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    defer { try? fh.close() }
    var rng = SplitMix64(seed: seed)
    let block = 1 << 20
    var lineNo = 0
    var pendingText = Data()
    for region in regions {
        var left = region.length
        while left > 0 {
            let n = min(block, left)
            var data = Data(count: n)
            switch region {
            case .random:
                data.withUnsafeMutableBytes { rng.fill($0) }
            case .zeros:
                break
            case .fill(let b, _):
                data = Data(repeating: b, count: n)
            case .text:
                while pendingText.count < n {
                    lineNo += 1
                    pendingText.append(contentsOf: "\(lineNo) ferry test log: disk image block \(lineNo &* 7919 % 100003) copied ok\n".utf8)
                }
                data = pendingText.prefix(n)
                pendingText = Data(pendingText.dropFirst(n))
            }
            try fh.write(contentsOf: data)
            left -= n
        }
    }
}

/// `size` bytes from a seeded PRNG.
func writeRandom(_ path: String, size: Int, seed: UInt64) throws { try writeImage(path, [.random(size)], seed: seed) }

/// A mixed image of `mib` MiB less 12345 bytes (so its last chunk is short): 8 MiB blocks of
/// random, text-like and constant data with zero runs (3 MiB chunk-aligned, 0.5 MiB not), and a
/// 7 MiB zero run before the random tail.
func mixedRegions(mib: Int) -> [Region] {
    precondition(mib % 8 == 0 && mib >= 16)
    let M = 1 << 20
    var regions: [Region] = []
    for _ in 0..<(mib / 8 - 1) {
        regions += [.random(2 * M), .zeros(3 * M), .text(3 * M / 2), .fill(0xFF, M / 4), .zeros(M / 2), .random(3 * M / 4)]
    }
    regions += [.zeros(7 * M), .random(M - 12345)]
    return regions
}

func fileSize(_ path: String) -> UInt64 {
    var st = stat()
    return stat(path, &st) == 0 ? UInt64(st.st_size) : 0
}

/// Bytes the filesystem allocated for `path` (st_blocks * 512).
func allocatedBytes(_ path: String) -> UInt64 {
    var st = stat()
    return stat(path, &st) == 0 ? UInt64(st.st_blocks) * 512 : 0
}

func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

func readAll(_ path: String) -> Data { (try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data() }

/// Inverts the byte at `offset` in place (without truncating or growing the file).
func flipByte(_ path: String, at offset: UInt64) throws {
    let fd = open(path, O_RDWR)
    guard fd >= 0 else { throw NSError(domain: "flipByte", code: Int(errno)) }
    defer { close(fd) }
    var b: UInt8 = 0
    guard pread(fd, &b, 1, off_t(offset)) == 1 else { throw NSError(domain: "flipByte read", code: Int(errno)) }
    b ^= 0xFF
    guard pwrite(fd, &b, 1, off_t(offset)) == 1 else { throw NSError(domain: "flipByte write", code: Int(errno)) }
    fsync(fd)
}

// MARK: - Independent checks

/// `sha256sum PATH`, the reference for whole-image digests.
func sha256sum(_ path: String, in scratch: Scratch) throws -> String {
    let r = try runProcess(["/usr/bin/env", "sha256sum", path], in: scratch)
    precondition(r.status == 0, r.summary)
    return String(r.out.prefix(64))
}

/// The chunk list of a file computed by Python's hashlib: "OFFSET LENGTH SHA256" lines.
func chunkList(_ path: String, chunkSize: Int, in scratch: Scratch) throws -> [String] {
    let r = try runProcess(["/usr/bin/env", "python3", TestPaths.fixture("chunksums.py"), path, String(chunkSize)], in: scratch)
    precondition(r.status == 0, r.summary)
    return r.out.split(separator: "\n").map(String.init)
}

/// True when the two files hold the same bytes (`cmp`).
func sameBytes(_ a: String, _ b: String, in scratch: Scratch) throws -> Bool {
    try runProcess(["/usr/bin/env", "cmp", "-s", a, b], in: scratch).status == 0
}
