import Chunks
import Foundation
import Glibc

/// A thin wrapper over the `zfs` command: where an image lives in ZFS, and the snapshots and
/// clones ferry takes of it. Everything that parses what the system says is a pure function of
/// that text, so it is table-tested without a pool.
public enum ZFS {
    /// Where a destination lives in ZFS.
    public struct Place: Equatable, Sendable {
        public enum Kind: Equatable, Sendable {
            /// A file on a mounted dataset: its mount point and the file's path inside it.
            case file(mountpoint: String, relative: String)
            /// A zvol (the whole volume; a partition of one is not snapshotted on its own).
            case zvol
        }
        public var dataset: String
        public var kind: Kind
        public init(dataset: String, kind: Kind) { (self.dataset, self.kind) = (dataset, kind) }
    }

    /// A snapshot as ZFS describes it.
    public struct Snapshot: Equatable, Sendable {
        public var name: String       // dataset@snap
        public var guid: String
        public var createtxg: UInt64
        public init(name: String, guid: String, createtxg: UInt64) { (self.name, self.guid, self.createtxg) = (name, guid, createtxg) }
        public var dataset: String { String(name.prefix { $0 != "@" }) }
        public var shortName: String { String(name.drop { $0 != "@" }.dropFirst()) }
    }

    /// Why something ZFS was asked for did not happen, in ZFS's words.
    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    // MARK: Finding the dataset

    /// Where `path` (a file or a block device, as opened) lives in ZFS, or nil when it does not.
    public static func place(of path: String, isBlockDevice: Bool) -> Place? {
        guard let real = DeviceIdentity.realPath(path) else { return nil }
        if isBlockDevice {
            return zvolDataset(path: path, real: real, links: zvolLinks())
                .flatMap { (try? checkName($0)) != nil ? Place(dataset: $0, kind: .zvol) : nil }
        }
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8),
              let (dataset, mountpoint, root) = mountedDataset(containing: real, mountinfo: text) else { return nil }
        guard (try? checkName(dataset)) != nil else { return nil }
        // A bind mount of a folder inside the dataset (an LXC mount point) mounts `root`, not the top.
        let below = mountpoint == "/" ? String(real.dropFirst()) : String(real.dropFirst(mountpoint.count + 1))
        let top = root.split(separator: "/").joined(separator: "/")
        return Place(dataset: dataset, kind: .file(mountpoint: mountpoint, relative: top.isEmpty ? below : top + "/" + below))
    }

    /// The ZFS dataset mounted at the longest mount point that contains `path`, from the text of
    /// /proc/self/mountinfo (file system type `zfs`, or `fuse.zfs` for zfs-fuse).
    public static func mountedDataset(containing path: String, mountinfo: String) -> (dataset: String, mountpoint: String, root: String)? {
        var best: (dataset: String, mountpoint: String, root: String, isZFS: Bool)?
        for line in mountinfo.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count >= 2 else { continue }
            let left = halves[0].split(separator: " ")
            let right = halves[1].split(separator: " ")
            guard left.count >= 5, right.count >= 2 else { continue }
            let mountpoint = unescape(String(left[4]))
            let inside = mountpoint == "/" || path == mountpoint || path.hasPrefix(mountpoint + "/")
            guard inside, mountpoint.count >= (best?.mountpoint.count ?? -1) else { continue }
            let type = String(right[0])
            best = (unescape(String(right[1])), mountpoint, unescape(String(left[3])), type == "zfs" || type == "fuse.zfs")
        }
        guard let best, best.isZFS else { return nil }
        return (best.dataset, best.mountpoint, best.root)
    }

    /// mountinfo escapes space, tab, newline and backslash as \ooo.
    static func unescape(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var out = [UInt8]()
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == 0x5C, i + 3 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The zvol dataset behind a block device: from its /dev/zvol/POOL/VOL name, or, for
    /// /dev/zdN, from the /dev/zvol link (`links`: link path to resolved target) that points at
    /// it. A partition of a zvol (`-partN`, or `zdNpM`) is not a whole zvol: nil.
    public static func zvolDataset(path: String, real: String, links: [String: String]) -> String? {
        func fromLink(_ link: String) -> String? {
            guard link.hasPrefix("/dev/zvol/") else { return nil }
            let name = String(link.dropFirst("/dev/zvol/".count))
            guard !name.isEmpty, name.contains("/"), !name.contains("@"),
                  name.range(of: #"-part[0-9]+$"#, options: .regularExpression) == nil else { return nil }
            return name
        }
        if let d = fromLink(path) { return d }
        guard real.range(of: #"^/dev/zd[0-9]+$"#, options: .regularExpression) != nil else { return nil }
        return links.filter { $0.value == real }.keys.sorted().compactMap(fromLink).first
    }

    /// Every link under /dev/zvol with the device it resolves to.
    static func zvolLinks() -> [String: String] {
        var out: [String: String] = [:]
        guard let walker = FileManager.default.enumerator(atPath: "/dev/zvol") else { return out }
        for case let rel as String in walker {
            let link = "/dev/zvol/" + rel
            if let real = DeviceIdentity.realPath(link), real.hasPrefix("/dev/zd") { out[link] = real }
        }
        return out
    }

    /// The block device of a zvol snapshot (present while the volume's `snapdev` is visible).
    public static func snapshotDevice(_ snapshot: String) -> String { "/dev/zvol/" + snapshot }

    /// The name ferry gives the snapshot of a transfer.
    public static func snapshotName(dataset: String, transferId: String) -> String { "\(dataset)@ferry-\(transferId)" }

    /// A temporary clone's name: next to the dataset, so it lives in the same pool, and named
    /// after the process reading it (a clone left by a killed verify is found by that name).
    public static func cloneName(of snapshot: String, pid: Int32) -> String {
        let dataset = String(snapshot.prefix { $0 != "@" })
        let parent = dataset.contains("/") ? String(dataset[..<dataset.lastIndex(of: "/")!]) : dataset
        return "\(parent)/ferry-verify-\(pid)"
    }

    // MARK: Asking zfs

    /// The zfs command, or nil where it is not installed.
    public static var command: String? {
        if let forced = ProcessInfo.processInfo.environment["FERRY_ZFS"] { return forced.isEmpty ? nil : forced }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"] {
            let candidate = dir + "/zfs"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Runs `zfs ARGS`; its standard output, or a Failure with what it said.
    @discardableResult
    public static func run(_ args: [String]) throws -> String {
        guard let zfs = command else { throw Failure(message: "the zfs command is not installed") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: zfs)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { throw Failure(message: "cannot run \(zfs): \(error)") }
        let text = out.fileHandleForReading.readDataToEndOfFile()
        let errText = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            let said = String(decoding: errText, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw Failure(message: "zfs \(args.joined(separator: " ")): " + (said.isEmpty ? "exit \(p.terminationStatus)" : said))
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Takes snapshot `name` (dataset@snap) and returns it as ZFS describes it.
    public static func takeSnapshot(_ name: String) throws -> Snapshot {
        try checkName(name)
        try run(["snapshot", name])
        guard let s = try describe(name) else { throw Failure(message: "snapshot \(name) was taken but cannot be found") }
        return s
    }

    /// A snapshot's guid and createtxg, or nil when there is no such snapshot.
    public static func describe(_ name: String) throws -> Snapshot? {
        let text: String
        do {
            try checkName(name)
            text = try run(["get", "-Hp", "-o", "property,value", "guid,createtxg", name])
        } catch let f as Failure where f.message.contains("does not exist") || f.message.contains("dataset does not exist") {
            return nil
        }
        return parseSnapshotProperties(name: name, text)
    }

    /// Parses `zfs get -Hp -o property,value guid,createtxg` output.
    public static func parseSnapshotProperties(name: String, _ text: String) -> Snapshot? {
        var guid: String?, txg: UInt64?
        for line in text.split(separator: "\n") {
            let f = line.split(separator: "\t")
            guard f.count == 2 else { continue }
            if f[0] == "guid", UInt64(f[1]) != nil { guid = String(f[1]) }
            if f[0] == "createtxg" { txg = UInt64(f[1]) }
        }
        guard let guid, let txg else { return nil }
        return Snapshot(name: name, guid: guid, createtxg: txg)
    }

    /// Destroys a snapshot or dataset; `force` also unmounts a busy one (ferry's own clones only).
    public static func destroy(_ name: String, force: Bool = false) throws {
        try checkName(name)
        try run(["destroy"] + (force ? ["-f"] : []) + [name])
    }

    /// The user property that marks a clone as ferry's, naming the snapshot it was made from.
    public static let cloneTag = "org.ferry:clone-of"

    /// A read-only clone of `snapshot` mounted at `mountpoint`, tagged as ferry's.
    public static func clone(_ snapshot: String, as clone: String, mountpoint: String) throws {
        try checkName(snapshot)
        try checkName(clone)
        try run(["clone", "-o", "readonly=on", "-o", "mountpoint=" + mountpoint, "-o", "\(cloneTag)=\(snapshot)", snapshot, clone])
    }

    /// Destroys the clones of `snapshot` that a verify killed outright left behind: ferry's own
    /// (tagged, and with the snapshot as origin), named after a process that no longer runs. They
    /// hold space, keep a mount in /tmp, and keep the snapshot from being destroyed. Returns the
    /// clones destroyed; a clone whose process id runs again (reused) is left for a later sweep.
    @discardableResult
    public static func sweepStaleClones(of snapshot: String) -> [String] {
        let prefix = cloneName(of: snapshot, pid: 0).dropLast(1)   // PARENT/ferry-verify-
        let parent = String(prefix[..<prefix.lastIndex(of: "/")!])
        // Ferry's clones sit beside the dataset: children of its parent whose origin is the
        // snapshot (older ZFS, zfs-fuse among them, has no `clones` property to ask instead).
        guard (try? checkName(parent)) != nil,
              let listing = try? run(["list", "-H", "-o", "name,origin", "-t", "filesystem,volume", "-r", "-d", "1", parent]) else { return [] }
        let clones = listing.split(separator: "\n").compactMap { line -> String? in
            let f = line.split(separator: "\t").map(String.init)
            return f.count == 2 && f[1] == snapshot ? f[0] : nil
        }
        var swept: [String] = []
        for clone in clones where clone.hasPrefix(prefix) {
            guard let pid = Int32(clone.dropFirst(prefix.count)), pid > 0, pid != getpid(),
                  kill(pid, 0) != 0 && errno == ESRCH, isFerryClone(clone, of: snapshot) else { continue }
            let mountpoint = try? property("mountpoint", of: clone)
            // A clone mounted a moment ago may still be busy: a few tries, as for ferry's own.
            var destroyed = false
            for attempt in 0..<20 where !destroyed {
                if attempt > 0 { usleep(250_000) }
                destroyed = (try? destroy(clone, force: true)) != nil
            }
            guard destroyed else { continue }
            if let mountpoint, mountpoint.hasPrefix("/tmp/ferry-verify-") { rmdir(mountpoint) }
            swept.append(clone)
        }
        return swept
    }

    /// Whether `clone` is a clone ferry made of `snapshot` (its origin and its tag say so).
    public static func isFerryClone(_ clone: String, of snapshot: String) -> Bool {
        (try? property("origin", of: clone)) == snapshot && (try? property(cloneTag, of: clone)) == snapshot
    }

    /// ZFS names begin with a letter or digit and hold no spaces: anything else (a name that
    /// would read as an option, say) is refused before it reaches the zfs command.
    public static func checkName(_ name: String) throws {
        guard let first = name.unicodeScalars.first, CharacterSet.alphanumerics.contains(first),
              !name.contains(" "), !name.contains("\n"), name.count < 1024 else {
            throw Failure(message: "'\(name)' is not a ZFS dataset or snapshot name")
        }
    }

    /// Bytes written to the snapshot's dataset since the snapshot (`written@SNAP`): 0 when the
    /// live data is still what the snapshot holds.
    public static func written(since snapshot: Snapshot) throws -> UInt64 {
        let text = try run(["get", "-Hp", "-o", "value", "written@" + snapshot.shortName, snapshot.dataset])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard let n = UInt64(text) else { throw Failure(message: "zfs reports written@\(snapshot.shortName) of \(snapshot.dataset) as '\(text)'") }
        return n
    }

    /// Where `dataset` is mounted now, from mountinfo (nil: not mounted).
    public static func mountpoint(of dataset: String, mountinfo: String) -> String? {
        for line in mountinfo.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count >= 2 else { continue }
            let left = halves[0].split(separator: " "), right = halves[1].split(separator: " ")
            guard left.count >= 5, right.count >= 2, right[0] == "zfs" || right[0] == "fuse.zfs",
                  unescape(String(right[1])) == dataset, left[3] == "/" else { continue }
            return unescape(String(left[4]))
        }
        return nil
    }

    /// Puts a property back as it was: `zfs inherit` when it was not set on the dataset itself.
    public static func restoreProperty(_ name: String, value: String, source: String, on dataset: String) throws {
        if source == "local" { try setProperty(name, value, on: dataset) } else { try run(["inherit", name, dataset]) }
    }

    /// A property's value and where it comes from (local, default, inherited from ...).
    public static func propertyWithSource(_ name: String, of dataset: String) throws -> (value: String, source: String) {
        let f = try run(["get", "-H", "-o", "value,source", name, dataset]).trimmingCharacters(in: .whitespacesAndNewlines)
            .split(separator: "\t", maxSplits: 1).map(String.init)
        return (f.first ?? "", f.count > 1 ? f[1] : "default")
    }

    public static func property(_ name: String, of dataset: String) throws -> String {
        try run(["get", "-H", "-o", "value", name, dataset]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public static func setProperty(_ name: String, _ value: String, on dataset: String) throws {
        try run(["set", "\(name)=\(value)", dataset])
    }
}
