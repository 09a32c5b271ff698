import Glibc

/// How an image of `size` bytes splits into chunks of `chunkSize` (the last one may be short).
public struct ChunkGeometry: Sendable, Equatable {
    public let size: UInt64
    public let chunkSize: Int

    public static let defaultChunkSize = 1 << 20
    public static let minChunkSize = 64 << 10
    public static let maxChunkSize = 256 << 20

    public init(size: UInt64, chunkSize: Int) {
        self.size = size
        self.chunkSize = chunkSize
    }

    public var count: Int { Int((size + UInt64(chunkSize) - 1) / UInt64(chunkSize)) }

    public func offset(of index: Int) -> UInt64 { UInt64(index) * UInt64(chunkSize) }

    public func length(of index: Int) -> Int {
        let start = offset(of: index)
        return start >= size ? 0 : Int(min(UInt64(chunkSize), size - start))
    }

    /// Validates a user's `--chunk-size`: a power of two from 64 KiB to 256 MiB.
    public static func validate(_ size: Int) throws {
        guard size >= minChunkSize, size <= maxChunkSize, size & (size - 1) == 0 else {
            throw FerryError(.usage, "chunk size \(size) is not a power of two between 64K and 256M",
                             hint: "use e.g. --chunk-size 1M")
        }
    }

    /// Parses sizes such as `4M`, `64K`, `1G`, `512` (bytes). Binary units.
    public static func parseSize(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: " ").uppercased()
        var digits = t
        var mult = 1
        for (suffix, m) in [("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("K", 1 << 10), ("M", 1 << 20),
                            ("G", 1 << 30), ("B", 1)] where t.hasSuffix(suffix) {
            digits = String(t.dropLast(suffix.count))
            mult = m
            break
        }
        guard let n = Int(digits), n >= 0 else { return nil }
        let (r, o) = n.multipliedReportingOverflow(by: mult)
        return o ? nil : r
    }
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return String(s)
    }
}

/// Seconds on the monotonic clock, for durations and rates.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// A fresh random id for a transfer (shared by both ends' ledger records).
public func newTransferID() -> String {
    var g = SystemRandomNumberGenerator()
    let n = g.next() as UInt64
    let hex = String(n, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}
