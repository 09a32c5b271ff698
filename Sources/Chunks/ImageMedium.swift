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
