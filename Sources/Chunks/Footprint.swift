import Glibc

/// The storage an image path reaches, so that two paths that look unrelated are known to share
/// bytes: a loop device and the file behind it, an nbd device and the file qemu-nbd serves, a
/// partition and its disk, a device-mapper device and the devices under it, a file and the block
/// device its file system lives on.
///
/// `own` is what writing the path changes: the path itself and everything beneath it (a loop
/// device's backing file, a mapped device's slaves). `reach` adds what contains it: the disk of
/// a partition, the device holding a file's file system. Two paths overlap when what one writes
/// is reached by the other, so two partitions of one disk do not overlap, but a partition and
/// its disk do.
public struct Footprint: Sendable {
    public private(set) var own: Set<String> = []
    public private(set) var reach: Set<String> = []
    /// A readable name for each unit, for messages.
    private var names: [String: String] = [:]

    /// The footprint of `path`; empty when it does not exist or is not a file or block device.
    public static func of(_ path: String) -> Footprint {
        var f = Footprint()
        var st = stat()
        guard path != "-", stat(path, &st) == 0 else { return f }
        switch st.st_mode & S_IFMT {
        case S_IFREG, S_IFDIR:
            if (st.st_mode & S_IFMT) == S_IFREG {
                let unit = "file:\(st.st_dev):\(st.st_ino)"
                f.own.insert(unit)
                f.names[unit] = path
            }
            // The device holding the file's file system (none for tmpfs, FUSE and the like).
            let holder = f.device(major: major(UInt64(st.st_dev)), minor: minor(UInt64(st.st_dev)), depth: 0)
            f.reach.formUnion(holder.own)
            f.reach.formUnion(holder.reach)
            f.names.merge(holder.names) { a, _ in a }
        case S_IFBLK:
            let d = f.device(major: major(UInt64(st.st_rdev)), minor: minor(UInt64(st.st_rdev)), depth: 0, name: path)
            f = d
        default:
            break
        }
        f.reach.formUnion(f.own)
        return f
    }

    /// A unit both paths share, where one path writes what the other reaches; nil when none.
    public func overlap(with other: Footprint) -> String? {
        let shared = own.intersection(other.reach).union(reach.intersection(other.own))
        guard let unit = shared.sorted().first else { return nil }
        return names[unit] ?? other.names[unit] ?? unit
    }

    /// The file behind a loop device that reads it through that file's page cache (direct I/O
    /// off, `losetup`'s default): O_DIRECT on such a device stops at the file's cache. nil for
    /// anything else.
    public static func cachedLoopBacking(rdev: UInt64) -> String? {
        guard let sys = realPath("/sys/dev/block/\(major(rdev)):\(minor(rdev))"),
              let backing = readLine(sys + "/loop/backing_file"), !backing.hasSuffix(" (deleted)") else { return nil }
        return readLine(sys + "/loop/dio") == "1" ? nil : backing
    }

    /// What identifies the medium behind a block device, independent of its /dev name (which moves
    /// when loop devices are re-attached or disks renumbered): a loop device by its backing file's
    /// device, inode and offset; a disk by its serial or WWID (with the partition and its start).
    /// nil where nothing stable is known (a zvol: its stable /dev/zvol name is the record's).
    public static func medium(rdev: UInt64) -> Medium? {
        guard let sys = realPath("/sys/dev/block/\(major(rdev)):\(minor(rdev))") else { return nil }
        if let line = readLine(sys + "/loop/backing_file") {
            let backing = line.hasSuffix(" (deleted)") ? String(line.dropLast(10)) : line
            let offset = readLine(sys + "/loop/offset") ?? "0"
            var st = stat()
            guard stat(backing, &st) == 0 else { return Medium(id: "loop:missing:\(backing)", label: "a loop device over the missing file \(backing)") }
            return Medium(id: "loop:\(st.st_dev):\(st.st_ino):\(offset)", label: "a loop device over \(backing) (inode \(st.st_ino), offset \(offset))")
        }
        var base = sys
        var part = ""
        if let number = readLine(sys + "/partition") {
            base = parent(sys)
            part = ", partition \(number) from sector \(readLine(sys + "/start") ?? "?")"
        }
        for file in ["wwid", "device/wwid", "serial", "device/serial", "dm/uuid"] {
            if let value = readLine(base + "/" + file).map(trimmed), !value.isEmpty {
                return Medium(id: "\(file.split(separator: "/").last!):\(value)\(part)", label: "the disk with \(file.split(separator: "/").last!) \(value)\(part)")
            }
        }
        return nil
    }

    // MARK: Block devices, from /sys/dev/block

    private func device(major: UInt32, minor: UInt32, depth: Int, name: String? = nil) -> Footprint {
        var f = Footprint()
        guard depth < 8, let sys = Self.realPath("/sys/dev/block/\(major):\(minor)") else { return f }
        let unit = "block:\(major):\(minor)"
        f.own.insert(unit)
        f.names[unit] = name ?? "/dev/" + (sys.split(separator: "/").last.map(String.init) ?? unit)
        // A loop device's backing file.
        if let backing = Self.readLine(sys + "/loop/backing_file") {
            f.addFile(backing.hasSuffix(" (deleted)") ? String(backing.dropLast(10)) : backing)
        }
        // An nbd device's server: the regular files its process holds open (qemu-nbd serves one).
        if let pidText = Self.readLine(sys + "/pid"), let pid = Int32(pidText) {
            for file in Self.openFiles(of: pid) { f.addFile(file) }
        }
        // Device-mapper, md and the like: the devices under this one.
        for slave in Self.entries(sys + "/slaves") {
            if let dev = Self.readLine(sys + "/slaves/" + slave + "/dev"), let (ma, mi) = Self.parseDev(dev) {
                let under = device(major: ma, minor: mi, depth: depth + 1)
                f.own.formUnion(under.own)
                f.reach.formUnion(under.reach)
                f.names.merge(under.names) { a, _ in a }
            }
        }
        // A partition is reached through its disk (and whatever the disk stands on).
        if Self.readLine(sys + "/partition") != nil,
           let parentDev = Self.readLine(Self.parent(sys) + "/dev"), let (ma, mi) = Self.parseDev(parentDev) {
            let disk = device(major: ma, minor: mi, depth: depth + 1)
            f.reach.formUnion(disk.own)
            f.reach.formUnion(disk.reach)
            f.names.merge(disk.names) { a, _ in a }
        }
        return f
    }

    private mutating func addFile(_ path: String) {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return }
        let unit = "file:\(st.st_dev):\(st.st_ino)"
        own.insert(unit)
        names[unit] = path
    }

    static func parseDev(_ text: String) -> (UInt32, UInt32)? {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let a = UInt32(parts[0]), let b = UInt32(parts[1]) else { return nil }
        return (a, b)
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[..<slash])
    }

    static func realPath(_ path: String) -> String? { DeviceIdentity.realPath(path) }

    static func readLine(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 4097)
        guard fgets(&buf, 4096, f) != nil else { return nil }
        let line = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }.trimmingSuffix("\n")
        return line.isEmpty ? nil : line
    }

    /// The names in a folder, without `.` and `..`.
    static func entries(_ dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }

    static func openFiles(of pid: Int32) -> [String] {
        let dir = "/proc/\(pid)/fd"
        return entries(dir).compactMap { realPath(dir + "/" + $0) }.filter { $0.hasPrefix("/") }
    }

    /// Other processes that have `path` open (a VM holding its disk), as "pid N (name)". A
    /// block device is matched by its device number, a file by its real path. Processes this
    /// user cannot look into are not seen.
    public static func holders(of path: String, excluding: [pid_t] = []) -> [String] {
        guard let real = realPath(path) else { return [] }
        var st = stat()
        guard stat(real, &st) == 0 else { return [] }
        let isBlock = (st.st_mode & S_IFMT) == S_IFBLK
        let me = getpid()
        var out: [String] = []
        for name in entries("/proc") {
            guard let pid = Int32(name), pid != me, !excluding.contains(pid) else { continue }
            // stat of /proc/PID/fd/N is the open file itself, whatever its path in that
            // process's mount namespace: compare device and inode (a block device: its number).
            let dir = "/proc/\(pid)/fd"
            let held = entries(dir).contains { fd in
                var o = stat()
                guard stat(dir + "/" + fd, &o) == 0 else { return false }
                if isBlock { return (o.st_mode & S_IFMT) == S_IFBLK && o.st_rdev == st.st_rdev }
                return (o.st_mode & S_IFMT) == S_IFREG && o.st_dev == st.st_dev && o.st_ino == st.st_ino
            }
            if held { out.append("pid \(pid) (\(readLine("/proc/\(pid)/comm") ?? "?"))") }
        }
        return out
    }
}

/// The medium behind a block device: `id` is compared, `label` is for messages.
public struct Medium: Codable, Sendable, Equatable {
    public var id: String
    public var label: String
    public init(id: String, label: String) { (self.id, self.label) = (id, label) }
}

private func major(_ dev: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) }
private func minor(_ dev: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) }

private func trimmed(_ s: String) -> String {
    String(s.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
}

private extension String {
    func trimmingSuffix(_ s: String) -> String { hasSuffix(s) ? String(dropLast(s.count)) : self }
}
