import CZstd
import Chunks

/// zstd compression of chunk payloads, one context per codec (one codec per thread).
public final class ZstdCodec {
    private let cctx: OpaquePointer
    private let dctx: OpaquePointer
    public let level: Int32

    public init(level: Int) {
        cctx = ZSTD_createCCtx()
        dctx = ZSTD_createDCtx()
        self.level = Int32(level)
    }

    deinit {
        ZSTD_freeCCtx(cctx)
        ZSTD_freeDCtx(dctx)
    }

    public static func bound(_ n: Int) -> Int { ZSTD_compressBound(n) }

    /// Compresses `src` into `dst`; nil when the result would not be smaller (send it raw).
    public func compress(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawPointer, capacity: Int) -> Int? {
        let n = ZSTD_compressCCtx(cctx, dst, capacity, src.baseAddress, src.count, level)
        if ZSTD_isError(n) != 0 || n >= src.count { return nil }
        return n
    }

    /// Decompresses exactly `expected` bytes into `dst`, or throws.
    public func decompress(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawPointer, expected: Int) throws {
        let n = ZSTD_decompressDCtx(dctx, dst, expected, src.baseAddress, src.count)
        if ZSTD_isError(n) != 0 || n != expected {
            let why = ZSTD_isError(n) != 0 ? String(cString: ZSTD_getErrorName(n)) : "\(n) bytes instead of \(expected)"
            throw FerryError(.wire, "a zstd chunk payload did not decompress: \(why)")
        }
    }
}
