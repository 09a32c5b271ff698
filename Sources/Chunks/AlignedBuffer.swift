import Glibc

/// A page-aligned heap buffer, as O_DIRECT requires. Owned by its creator; freed in deinit.
public final class AlignedBuffer: @unchecked Sendable {
    public static let alignment = 4096
    public let pointer: UnsafeMutableRawPointer
    public let capacity: Int

    public init(capacity: Int) {
        var p: UnsafeMutableRawPointer?
        let rounded = (capacity + Self.alignment - 1) / Self.alignment * Self.alignment
        guard posix_memalign(&p, Self.alignment, max(rounded, Self.alignment)) == 0, let p else {
            fatalError("out of memory allocating a \(capacity)-byte I/O buffer")
        }
        pointer = p
        self.capacity = rounded
    }

    deinit { free(pointer) }

    public func bytes(_ count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: pointer, count: count)
    }
}
