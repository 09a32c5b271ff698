import Chunks
import Foundation
import Glibc

/// Writing the guest disk into a qcow2 file: ferry creates the file with `qemu-img create` (or
/// opens one of the right size), serves it with its own writable qemu-nbd, and writes, zeroes,
/// flushes and reads back through that one connection. qemu's own image lock is the claim: a
/// second writer (another ferry, a running VM) cannot start its server while this one runs.
extension NBDImage: WritableMedium {
    /// The container formats ferry writes a destination in.
    public static let destinationFormats = ["qcow2"]

    /// Opens the qcow2 at `path` for writing the disk into: creates it with `size` bytes of
    /// virtual disk when `create` (it must not exist), else checks that the file is a whole
    /// qcow2 (one file, no backing file).
    public static func openForWriting(_ path: String, format: String, create size: UInt64?) throws -> NBDImage {
        guard destinationFormats.contains(format) else {
            throw FerryError(.usage, "ferry writes a destination as raw or qcow2, not \(format)", hint: "use --dest-format raw or --dest-format qcow2")
        }
        var made: stat?
        if let size {
            made = try createImage(path, format: format, size: size)
        } else {
            let probe = try ImageFile.openForReading(path, direct: false)
            defer { probe.close() }
            guard try DiskImageFormat.detect(in: probe)?.qemuName == format else {
                throw FerryError(.refused, "\(path) exists and is not a \(format) image; ferry does not turn it into one",
                                 hint: "remove it (ferry then creates the \(format) image), name a new file, or pass --dest-format raw to write the raw disk into it; nothing was written")
            }
        }
        do {
            let image = try openContainer(path, format: format, writable: true, inspect: size == nil)
            image.fresh = size != nil
            return image
        } catch let e as FerryError {
            // An image made just now that no server would open is removed, unless another
            // program holds it (its lock refused ours): then it is that program's now.
            if let made, !QemuNBD.isInUse(e) { removeIfStill(path, made) }
            throw e
        }
    }

    /// Removes `path` only while it is still the file ferry created (the same inode).
    static func removeIfStill(_ path: String, _ made: stat) {
        var now = stat()
        if lstat(path, &now) == 0 && now.st_dev == made.st_dev && now.st_ino == made.st_ino { unlink(path) }
    }

    /// `qemu-img create -f FORMAT PATH SIZE`: an image with no data allocated, so zero chunks
    /// need no write at all.
    /// The file is created here first, exclusively: two copies starting onto one new name cannot
    /// both create it (the second is refused, and never removes the first one's image).
    static func createImage(_ path: String, format: String, size: UInt64) throws -> stat {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            if errno == EEXIST {
                throw FerryError(.refused, "\(path) appeared while ferry was about to create it: another program is making it",
                                 hint: "check what else writes there (another ferry copy?) and run ferry again; nothing was written")
            }
            throw FerryError.syscall("cannot create", path: path)
        }
        var made = stat()
        fstat(fd, &made)
        Glibc.close(fd)
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        do {
            _ = try ContainerLayout.qemuImg(["create", "-q", "-f", format, absolute, String(size)], path: path, format: format,
                                            failing: "cannot create the \(format) image \(path)")
        } catch var e as FerryError {
            removeIfStill(path, made)   // a half-made image is not left behind looking like a destination
            if !QemuNBD.isInUse(e) { e.hint = "check the folder is writable and has room; nothing was written" }
            throw e
        }
        return made
    }

    public func write(from buffer: UnsafeRawPointer, count: Int, at offset: UInt64) throws {
        known.removeAll()
        do { try connection.write(from: buffer, count: count, at: offset) } catch { throw described(error, "writing", offset) }
    }

    public func writeZeros(at offset: UInt64, count: Int, alreadyHole: Bool, zeros: AlignedBuffer) throws {
        if alreadyHole { return }
        known.removeAll()
        do { try connection.zero(count: count, at: offset, zeros: zeros.pointer, zerosLength: zeros.capacity) } catch { throw described(error, "zeroing", offset) }
    }

    /// A qcow2's virtual size is fixed when ferry opens it: the same length is nothing to do, any
    /// other is refused (`qemu-img resize` is the user's decision, not ferry's).
    public func setLength(_ length: UInt64) throws {
        guard length != connection.size else { return }
        throw FerryError(.refused, "\(path) holds a \(connection.size)-byte disk, not \(length) bytes; ferry does not resize a \(format) image",
                         hint: "resize it yourself (`qemu-img resize -f \(format) \(path) \(length)`) and run ferry again")
    }

    /// Flushes through qemu-nbd (its metadata and data written out, then fdatasync of the file);
    /// where the file could not take O_DIRECT, its pages are dropped behind the flush.
    public func sync() throws {
        do { try connection.flush() } catch { throw described(error, "flushing", nil) }
        if let container, container.mode != .direct { container.dropCache() }
    }

    /// qemu's image lock, taken when ferry's qemu-nbd opened the file, is the claim.
    public func claimForWriting() throws {}

    private func described(_ error: any Error, _ doing: String, _ offset: UInt64?) -> FerryError {
        var e = (error as? FerryError) ?? FerryError(.io, "\(error)")
        let said = e.message.hasPrefix(path + ": ") ? String(e.message.dropFirst(path.count + 2)) : e.message
        e.message = "\(doing) the guest disk in \(path)" + (offset.map { " at offset \($0)" } ?? "") + ": " + said
        if let note = server?.failureNote(connectionLost: connection.isDead) { e.message += " (" + note + ")" }
        e.hint = e.hint ?? "nothing was marked complete; check the file system holding it (`qemu-img check -f \(format) \(path)`)"
        return e
    }
}
