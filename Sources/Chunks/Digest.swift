import CCrypto
import Glibc

/// A SHA-256 digest: 32 bytes, compared and stored by value.
public struct Digest: Hashable, Sendable, CustomStringConvertible {
    public var a: UInt64, b: UInt64, c: UInt64, d: UInt64

    public static let byteCount = 32
    public static let zero = Digest(a: 0, b: 0, c: 0, d: 0)

    public init(a: UInt64, b: UInt64, c: UInt64, d: UInt64) { (self.a, self.b, self.c, self.d) = (a, b, c, d) }

    public init(bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == 32)
        a = bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
        b = bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        c = bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        d = bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
    }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self = bytes.withUnsafeBytes { Digest(bytes: $0) }
    }

    public init?(hex: String) {
        var out = [UInt8]()
        out.reserveCapacity(32)
        var chars = hex.utf8.makeIterator()
        func nib(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        while let hi = chars.next() {
            guard let lo = chars.next(), let h = nib(hi), let l = nib(lo) else { return nil }
            out.append(h << 4 | l)
        }
        self.init(bytes: out)
    }

    public var bytes: [UInt8] {
        var copy = self
        return withUnsafeBytes(of: &copy) { Array($0) }
    }

    public var hex: String {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public var description: String { hex }

    /// One-shot SHA-256 of a buffer.
    public static func sha256(_ p: UnsafeRawPointer, _ count: Int) -> Digest {
        var ctx = SHA256_CTX()
        precondition(SHA256_Init(&ctx) == 1)
        precondition(SHA256_Update(&ctx, p, count) == 1)
        return withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { out in
            precondition(SHA256_Final(out.baseAddress!.assumingMemoryBound(to: UInt8.self), &ctx) == 1)
            return Digest(bytes: UnsafeRawBufferPointer(out))
        }
    }

    public static func sha256(_ bytes: [UInt8]) -> Digest {
        bytes.withUnsafeBytes { sha256($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, $0.count) }
    }
}

/// Incremental SHA-256 over libcrypto's SHA256_CTX, whose state can be saved and restored.
public struct SHA256Hasher: Sendable {
    private var ctx = SHA256_CTX()
    public private(set) var byteCount: UInt64 = 0

    public init() { precondition(SHA256_Init(&ctx) == 1) }

    public mutating func update(_ p: UnsafeRawPointer, _ count: Int) {
        guard count > 0 else { return }
        precondition(SHA256_Update(&ctx, p, count) == 1)
        byteCount += UInt64(count)
    }

    public mutating func update(_ digest: Digest) {
        var d = digest
        withUnsafeBytes(of: &d) { update($0.baseAddress!, 32) }
    }

    /// The digest of everything fed so far; the hasher itself stays usable.
    public func finalized() -> Digest {
        var copy = ctx
        return withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { out in
            precondition(SHA256_Final(out.baseAddress!.assumingMemoryBound(to: UInt8.self), &copy) == 1)
            return Digest(bytes: UnsafeRawBufferPointer(out))
        }
    }

    /// The saved state: a tag naming the layout, the byte count, and the raw SHA256_CTX.
    /// A state saved by a build with another layout is refused by `init(savedState:)`.
    public var savedState: [UInt8] {
        var c = ctx
        var out = Array(Self.stateTag.utf8)
        withUnsafeBytes(of: byteCount.littleEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: &c) { out.append(contentsOf: $0) }
        return out
    }

    public init?(savedState: [UInt8]) {
        let tag = Array(Self.stateTag.utf8)
        guard savedState.count == tag.count + 8 + MemoryLayout<SHA256_CTX>.size,
              Array(savedState.prefix(tag.count)) == tag else { return nil }
        let count = savedState.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: tag.count, as: UInt64.self) }
        var c = SHA256_CTX()
        withUnsafeMutableBytes(of: &c) { dst in
            savedState.withUnsafeBytes { src in
                dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(tag.count + 8)...]))
            }
        }
        // The context's own bit counter must agree with the byte count we recorded.
        let bits = (UInt64(c.Nh) << 32) | UInt64(c.Nl)
        guard bits == UInt64(littleEndian: count) &* 8, Int(c.md_len) == 32 else { return nil }
        ctx = c
        byteCount = UInt64(littleEndian: count)
    }

    static let stateTag = "ferry-sha256-ctx-v1:\(MemoryLayout<SHA256_CTX>.size):"
}
