/// Where a source's bytes are read from: a file, block device or stream (`ImageFile`), or the
/// guest disk inside a container or an NBD export (`NBDImage`). Copy, verify and resend read
/// through this one seam.
public protocol ImageMedium: AnyObject {
    /// What the user named: a path or an NBD URI.
    var path: String { get }
    var kind: ImageKind { get }
    /// The image's size in bytes (a container's virtual size; nil for a stream).
    var size: UInt64? { get }
    var mode: IOMode { get }
    /// How reads reach the medium, as a report says it.
    var readMode: String { get }
    /// The device holding the image (st_dev), or its own number for a block device (st_rdev).
    var device: UInt64 { get }
    var isCharacterDevice: Bool { get }
    /// The file's identity and times now (nil where there is no file).
    var stamp: FileStamp? { get }
    /// The format the bytes are read through: `raw`, or a container format, or `nbd`.
    var format: String { get }
    /// Bytes fetched from the medium so far, where that differs from the bytes returned (extents
    /// known to be zeros are not fetched); nil where every byte returned was read.
    var fetchedBytes: UInt64? { get }

    /// Reads up to `count` bytes at `offset`; fewer only at the end.
    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws -> Int
    /// Reads exactly `count` bytes at `offset`, the medium's error as a value.
    func readExact(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) -> Result<Int, FerryError>
    /// Whether those bytes can only have come from memory (see `ImageFile.onlyInMemory`).
    func onlyInMemory(at offset: UInt64, count: Int) -> Bool
    /// Drops what the page cache holds, so the next reads come from the medium.
    func dropCache()
    func close()
}

extension ImageFile: ImageMedium {
    public var format: String { "raw" }
    public var fetchedBytes: UInt64? { nil }
}

/// Where a destination's bytes are written: a file, block device or stream (`ImageFile`), or the
/// guest disk inside a qcow2 file that ferry writes through its own qemu-nbd (`NBDImage`).
public protocol WritableMedium: AnyObject {
    var path: String { get }
    var kind: ImageKind { get }
    /// The image's size in bytes (a container's virtual size; nil for a stream).
    var size: UInt64? { get }
    var mode: IOMode { get }
    var device: UInt64 { get }
    var stamp: FileStamp? { get }
    /// `raw`, or the container format the disk is written into.
    var format: String { get }
    /// Writes `count` bytes at `offset` (a stream: appends).
    func write(from buffer: UnsafeRawPointer, count: Int, at offset: UInt64) throws
    /// Makes `count` bytes at `offset` read as zeros, with no I/O where they already do.
    func writeZeros(at offset: UInt64, count: Int, alreadyHole: Bool, zeros: AlignedBuffer) throws
    /// Sets a file's length (a container's virtual size cannot change: a different one throws).
    func setLength(_ length: UInt64) throws
    /// Makes every write so far durable on the medium.
    func sync() throws
    /// Claims the destination for this run, so a second writer is refused.
    func claimForWriting() throws
    func close()
}

extension ImageFile: WritableMedium {}
