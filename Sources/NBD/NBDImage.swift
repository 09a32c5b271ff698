import Chunks
import Foundation
import Glibc

/// The guest disk inside a container file (served by a private qemu-nbd) or an NBD export named
/// by a URI, read as an `ImageMedium`. Extents the server reports as zeros are never fetched:
/// their bytes are zeros in the buffer, so every hash still covers them.
public final class NBDImage: ImageMedium {
    public let path: String
    public let kind: ImageKind
    public let format: String
    let connection: NBDConnection
    let server: QemuNBD?
    /// The container file itself, open for its identity, times and page cache (nil for a URI).
    public let container: ImageFile?
    /// What `qemu-img map` says the container holds (nil for a URI).
    public let layout: ContainerLayout?
    private let fetched = ProgressCounter()
    /// Known extents, in order and contiguous (a window ahead of the reads; dropped by a write).
    var known: [Extent] = []
    /// A destination image ferry created in this run: what was never written reads as zeros.
    public internal(set) var fresh = false
    /// How far ahead one block-status request looks.
    static let mapWindow: UInt64 = 1 << 30

    private init(path: String, kind: ImageKind, format: String, connection: NBDConnection, server: QemuNBD?,
                 container: ImageFile?, layout: ContainerLayout?) {
        self.path = path
        self.kind = kind
        self.format = format
        self.connection = connection
        self.server = server
        self.container = container
        self.layout = layout
    }

    /// Opens the guest disk inside the container at `path`, read as `format` (a qemu driver name).
    /// `writable`: served for writing too (a destination); `inspect`: check the container first
    /// (`ContainerLayout`; not for an image ferry just created).
    public static func openContainer(_ path: String, format: String, writable: Bool = false, inspect: Bool = true) throws -> NBDImage {
        let file = try ImageFile.openForReading(path, direct: true)
        guard file.kind == .file || file.kind == .blockDevice, let fileSize = file.size else {
            file.close()
            throw FerryError(.usage, "\(path) is a stream: a \(format) container can only be read from a file or device",
                             hint: "save the stream to a file first, or copy it with --as-is")
        }
        let layout: ContainerLayout?
        let server: QemuNBD
        do {
            let options = try QemuNBD.imageOptions(path, format: format, blockDevice: file.kind == .blockDevice, direct: false)
            layout = inspect ? try ContainerLayout.inspect(path, format: format, options: options, fileSize: fileSize) : nil
            server = try QemuNBD.start(container: path, format: format, blockDevice: file.kind == .blockDevice,
                                       direct: file.mode == .direct, writable: writable)
        } catch {
            file.close()
            throw error
        }
        do {
            let connection = try NBDConnection.connect(socket: server.socket, name: path)
            let image = NBDImage(path: path, kind: file.kind, format: format, connection: connection, server: server,
                                 container: file, layout: layout)
            image.track()
            return image
        } catch {
            server.stop()
            file.close()
            throw error
        }
    }

    /// Opens the export an NBD URI names (`nbd://host[:port]/export`, `nbd+unix:///export?socket=PATH`).
    public static func openURI(_ uri: String) throws -> NBDImage {
        let connection = try NBDConnection.connect(uri: uri)
        return NBDImage(path: uri, kind: .nbd, format: "nbd", connection: connection, server: nil, container: nil, layout: nil)
    }

    /// Opens what a verify or resend reads for an image recorded with `recorded` (nil: raw):
    /// an NBD URI as an export; a file whose header names a container, when the record was read
    /// through one, as the disk inside it (the header's format, else the recorded one for the
    /// recorded file itself, since a fixed VHD has no header); anything else as it is.
    /// `recorded` "header": no record to go by, the file's header decides.
    public static func open(_ path: String, recorded: String?, isRecordedPath: Bool) throws -> any ImageMedium {
        if DeviceIdentity.isURI(path) { return try openURI(path) }
        let file = try ImageFile.openForReading(path, direct: true)
        guard let recorded, recorded != "nbd", file.size != nil else { return file }
        guard let format = try DiskImageFormat.detect(in: file)?.qemuName ?? (isRecordedPath && recorded != "header" ? recorded : nil) else { return file }
        file.close()
        return try openContainer(path, format: format)
    }

    public var size: UInt64? { connection.size }
    public var mode: IOMode { container?.mode ?? .server }
    public var readMode: String {
        if let container {
            return "the \(format) container through qemu-nbd, \(container.mode.rawValue)"
                + (layout.map { String(format: ", %.1f%% allocated", 100 * Double($0.allocatedBytes) / Double(max(connection.size, 1))) } ?? "")
        }
        return "through the NBD server (its own cache; ferry cannot bypass it)"
    }
    public var device: UInt64 { container?.device ?? 0 }
    /// The qemu-nbd ferry runs for a container (it holds the container open).
    public var serverPid: pid_t? { server.map { $0.pid } }
    public var isCharacterDevice: Bool { false }
    public var stamp: FileStamp? { container?.stamp }
    public var fetchedBytes: UInt64? { fetched.bytes }
    /// Whether the server tells data from zeros (without it every byte is fetched).
    public var knowsAllocation: Bool { connection.knowsAllocation }

    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws -> Int {
        guard offset < connection.size else { return 0 }
        let n = Int(min(UInt64(count), connection.size - offset))
        do {
            var pos = offset
            let end = offset + UInt64(n)
            while pos < end {
                let e = try extent(at: pos)
                // Adjacent data extents are one read.
                var runEnd = min(e.end, end)
                if !e.zero {
                    while runEnd < end, let next = try? extent(at: runEnd), !next.zero { runEnd = min(next.end, end) }
                }
                let at = buffer + Int(pos - offset)
                let length = Int(runEnd - pos)
                if e.zero {
                    memset(at, 0, length)
                } else {
                    try connection.read(into: at, count: length, at: pos)
                    fetched.add(length)
                }
                pos = runEnd
            }
        } catch var error as FerryError {
            error.message = "reading the guest disk in \(path) at offset \(offset): " + error.message
            if let note = server?.failureNote(connectionLost: connection.isDead) { error.message += " (" + note + ")" }
            error.hint = error.hint ?? (server != nil
                ? "nothing was marked complete; check the container (`qemu-img check -f \(format) \(path)`) and run the copy again with --resume once it reads"
                : "nothing was marked complete; check the NBD server, then run again with --resume")
            throw error
        }
        return n
    }

    public func readExact(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) -> Result<Int, FerryError> {
        do {
            let n = try read(into: buffer, count: count, at: offset)
            guard n == count else {
                return .failure(FerryError(.io, "\(path) ends at \(offset + UInt64(n)), before the \(count) bytes asked at offset \(offset)"))
            }
            return .success(n)
        } catch let e as FerryError {
            return .failure(e)
        } catch {
            return .failure(FerryError(.io, "\(path): \(error)"))
        }
    }

    /// The extent holding `pos`, from the window of known extents (asking the server for the
    /// next window when `pos` lies past it).
    private func extent(at pos: UInt64) throws -> Extent {
        if let e = Self.find(pos, in: known) { return e }
        known = try connection.extents(at: pos, count: Self.mapWindow)
        guard let e = Self.find(pos, in: known) else {
            throw FerryError(.io, "the server described no extent holding offset \(pos)")
        }
        return e
    }

    static func find(_ pos: UInt64, in extents: [Extent]) -> Extent? {
        var lo = 0, hi = extents.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if extents[mid].end <= pos { lo = mid + 1 } else { hi = mid }
        }
        guard lo < extents.count, extents[lo].offset <= pos else { return nil }
        return extents[lo]
    }

    /// Reads through qemu-nbd with O_DIRECT come from the medium. Where O_DIRECT is refused the
    /// container's cache is dropped before reads that vouch for bytes (`dropCache`); if any page
    /// of the container survives that drop (another process keeps it mapped), which guest bytes
    /// it holds cannot be told, so every read counts as possibly from memory.
    public func onlyInMemory(at offset: UInt64, count: Int) -> Bool { residentAfterDrop }

    private var residentAfterDrop = false

    public func dropCache() {
        guard let container else { return }
        container.dropCache()
        if container.mode != .direct, let size = container.size, size > 0 {
            residentAfterDrop = container.onlyInMemory(at: 0, count: Int(clamping: size))
        }
    }

    private var closed = false

    /// Closes the connection, stops ferry's qemu-nbd and closes the container.
    public func close() {
        let first = Self.lock.withLock { () -> Bool in
            defer { closed = true }
            Self.open[ObjectIdentifier(self)] = nil
            return !closed
        }
        guard first else { return }
        connection.close()
        server?.stop()
        container?.close()
    }

    deinit { close() }

    // MARK: Closing at exit

    /// Images with a server of ferry's own still running. A command that ends by calling exit()
    /// runs no deinit: an exit handler closes these, so no qemu-nbd or socket is left behind.
    private static let lock = NSLock()
    nonisolated(unsafe) private static var open: [ObjectIdentifier: Unmanaged<NBDImage>] = [:]
    private static let exitHook: Void = { atexit { NBDImage.closeAll() } }()

    private func track() {
        guard server != nil else { return }
        _ = Self.exitHook
        Self.lock.withLock { Self.open[ObjectIdentifier(self)] = Unmanaged.passUnretained(self) }
    }

    /// At exit: stop the servers and remove their directories, leaving the handles alone (another
    /// thread may be inside libnbd with one; the process is ending anyway).
    static func closeAll() {
        let servers = lock.withLock { () -> [QemuNBD] in
            let images = open.values.map { $0.takeUnretainedValue() }
            open.removeAll()
            for image in images { image.closed = true }
            return images.compactMap(\.server)
        }
        for server in servers { server.stop(waitForItFirst: false) }
    }
}

/// What `qemu-img map` says a container holds: how many guest bytes are allocated, and that every
/// allocated extent lies inside the file (a truncated container is refused before it is read).
public struct ContainerLayout: Sendable, Equatable {
    public var virtualSize: UInt64
    public var allocatedBytes: UInt64

    /// Runs `qemu-img ARGS`; its stdout, or a refusal quoting what it said.
    /// `failing`: what a refusal says went wrong (default: the file does not read as `format`).
    static func qemuImg(_ args: [String], path: String, format: String, failing: String? = nil) throws -> Data {
        let program = try QemuNBD.tool("qemu-img", override: "FERRY_QEMU_IMG", neededFor: "checks a container with it before reading it")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = args
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        do { try process.run() } catch {
            throw FerryError(.io, "cannot run \(program) to check \(path): \(error)", hint: "check that qemu-img (qemu-utils) runs")
        }
        // Read stderr on its own thread so neither pipe can fill and stall qemu-img.
        final class Sink: @unchecked Sendable { var data = Data() }
        let errSink = Sink()
        let errDone = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { errSink.data = err.fileHandleForReading.readDataToEndOfFile(); errDone.signal() }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        errDone.wait()
        guard process.terminationStatus == 0 else {
            let said = String(decoding: errSink.data, as: UTF8.self).split(separator: "\n").map { $0.replacingOccurrences(of: "qemu-img: ", with: "") }.joined(separator: "; ")
            if QemuNBD.isLockConflict(said) { throw QemuNBD.inUse(path, said) }
            throw FerryError(.refused, (failing ?? "\(path) does not read as a \(format) container") + (said.isEmpty ? "" : ": " + said),
                             hint: "check it with `qemu-img check -f \(format) \(path)`; name another format with --source-format, or copy the file itself with --as-is")
        }
        return data
    }

    /// Checks the container (`qemu-img info`, which opens no backing file) and reads its layout
    /// (`qemu-img map`). A container whose guest disk lives partly in other files (a backing
    /// file, an external data file, VMDK extents beside a descriptor) is refused: ferry could not
    /// tell that those files are whole, nor whose they are.
    public static func inspect(_ path: String, format: String, options: String, fileSize: UInt64) throws -> ContainerLayout {
        let info = try qemuImg(["info", "--output=json", "--image-opts", options], path: path, format: format)
        struct Extent: Decodable { var filename: String? }
        struct SpecificData: Decodable { var extents: [Extent]?; var dataFile: String?
            enum CodingKeys: String, CodingKey { case extents; case dataFile = "data-file" } }
        struct Specific: Decodable { var data: SpecificData? }
        struct Info: Decodable { var backingFilename: String?; var formatSpecific: Specific?
            enum CodingKeys: String, CodingKey { case backingFilename = "backing-filename"; case formatSpecific = "format-specific" } }
        let described: Info
        do { described = try JSONDecoder().decode(Info.self, from: info) } catch {
            throw FerryError(.io, "cannot read what `qemu-img info` says about \(path): \(error)")
        }
        let others = [described.backingFilename, described.formatSpecific?.data?.dataFile].compactMap { $0 }
            + (described.formatSpecific?.data?.extents ?? []).compactMap(\.filename).filter { !sameFile($0, path) }
        if !others.isEmpty {
            throw FerryError(.refused, "\(path) keeps part of its guest disk in other files (\(others.joined(separator: ", "))), which ferry does not read through a container",
                             hint: "flatten it into one file first (`qemu-img convert -O \(format) \(path) whole.\(format)`), or serve it yourself with qemu-nbd and copy nbd+unix:///?socket=PATH")
        }
        let data = try qemuImg(["map", "--output=json", "--image-opts", options], path: path, format: format)
        struct Entry: Decodable { var start: UInt64; var length: UInt64; var data: Bool; var offset: UInt64? }
        let entries: [Entry]
        do { entries = try JSONDecoder().decode([Entry].self, from: data) } catch {
            throw FerryError(.io, "cannot read what `qemu-img map` says about \(path): \(error)")
        }
        var allocated: UInt64 = 0
        var virtualSize: UInt64 = 0
        for e in entries {
            virtualSize = max(virtualSize, e.start + e.length)
            guard e.data else { continue }
            allocated += e.length
            // Offsets of data extents are in this file (no backing file or other extent file is
            // read, see above).
            if let at = e.offset, at + e.length > fileSize {
                throw FerryError(.refused, "\(path) is truncated: the guest's bytes at offset \(e.start) are stored at byte \(at) to \(at + e.length) of the file, which ends at \(fileSize)",
                                 hint: "the container was cut short (an interrupted copy or a full disk); copy it again from where it came from, or check it with `qemu-img check -f \(format) \(path)`")
            }
        }
        return ContainerLayout(virtualSize: virtualSize, allocatedBytes: allocated)
    }

    static func sameFile(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }
}
