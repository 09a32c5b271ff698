import Foundation
import Glibc

/// What identifies a regular file and its contents' age: the device and inode (the same file,
/// not one put in its place), its size, and its modification and change times in nanoseconds.
/// A resume compares the source's stamp with the one recorded when the copy began: any write to
/// the file since moves mtime or ctime, whatever the writer did afterwards.
public struct FileStamp: Codable, Sendable, Equatable {
    public var device: UInt64
    public var inode: UInt64
    public var size: UInt64
    public var mtimeNs: Int64
    public var ctimeNs: Int64

    public init(device: UInt64, inode: UInt64, size: UInt64, mtimeNs: Int64, ctimeNs: Int64) {
        (self.device, self.inode, self.size, self.mtimeNs, self.ctimeNs) = (device, inode, size, mtimeNs, ctimeNs)
    }

    /// The stamp of an open regular file (nil for block devices and streams).
    public static func of(fd: Int32) -> FileStamp? {
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return FileStamp(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: UInt64(st.st_size),
                         mtimeNs: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                         ctimeNs: Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec))
    }

    /// What differs from `recorded`, in words (empty when nothing does).
    public func changes(since recorded: FileStamp) -> [String] {
        var out: [String] = []
        if device != recorded.device || inode != recorded.inode {
            out.append("it is another file now (device \(recorded.device) inode \(recorded.inode), now device \(device) inode \(inode))")
        }
        if size != recorded.size { out.append("its size was \(recorded.size) bytes, now \(size)") }
        if mtimeNs != recorded.mtimeNs { out.append("it was modified at \(Self.time(mtimeNs)) (recorded: \(Self.time(recorded.mtimeNs)))") }
        if ctimeNs != recorded.ctimeNs && mtimeNs == recorded.mtimeNs {
            out.append("its inode changed at \(Self.time(ctimeNs)) (recorded: \(Self.time(recorded.ctimeNs))); its times may have been reset")
        }
        return out
    }

    static func time(_ ns: Int64) -> String {
        var t = time_t(ns / 1_000_000_000)
        var tm = tm()
        gmtime_r(&t, &tm)
        var buf = [CChar](repeating: 0, count: 32)
        strftime(&buf, 32, "%Y-%m-%dT%H:%M:%S", &tm)
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } + String(format: ".%09lldZ", ns % 1_000_000_000)
    }
}
