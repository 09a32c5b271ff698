import Glibc

/// How an image is found again after a reboot, when /dev/zdN, /dev/loopN and /dev/sdX numbers
/// have moved: the path the user gave, its canonical path, and for block devices every stable
/// name (/dev/zvol/..., /dev/disk/by-id/..., ...) that points at the same device node.
public struct DeviceIdentity: Sendable, Equatable {
    public var given: String
    public var canonical: String
    /// The given path (made absolute), the canonical path, and the stable names.
    public var names: [String]

    static let stableRoots = ["/dev/zvol", "/dev/disk/by-id", "/dev/disk/by-uuid", "/dev/disk/by-partuuid",
                              "/dev/disk/by-label", "/dev/disk/by-path", "/dev/mapper"]

    public static func of(_ path: String) -> DeviceIdentity {
        guard path != "-" else { return DeviceIdentity(given: "-", canonical: "-", names: []) }
        if isURI(path) { return named(path) }
        let absolute = makeAbsolute(path)
        let canonical = realPath(absolute) ?? absolute
        var names = [absolute]
        if canonical != absolute { names.append(canonical) }
        var st = stat()
        if stat(canonical, &st) == 0 && (st.st_mode & S_IFMT) == S_IFBLK {
            for root in stableRoots {
                walkLinks(root, depth: 0) { link in
                    if realPath(link) == canonical && !names.contains(link) { names.append(link) }
                }
            }
        }
        return DeviceIdentity(given: path, canonical: canonical, names: names)
    }

    /// Whether `name` is a URI (`nbd://...`, `nbd+unix:///...`), not a path.
    public static func isURI(_ name: String) -> Bool {
        guard let scheme = name.range(of: "://"), scheme.lowerBound > name.startIndex else { return false }
        return name[..<scheme.lowerBound].allSatisfy { $0.isLetter || $0 == "+" }
    }

    /// A name that is not a path (an NBD URI): itself, nothing more.
    public static func named(_ name: String) -> DeviceIdentity {
        DeviceIdentity(given: name, canonical: name, names: [name])
    }

    /// Names that keep pointing at the same device across reboots (unlike /dev/zdN or /dev/sdX).
    public static func isStable(_ name: String) -> Bool {
        stableRoots.contains { name.hasPrefix($0 + "/") }
    }

    /// Whether a record made under `recorded` names can describe the device known now as `self`:
    /// when both sides have stable names, they must share one. A /dev/zd0 that was vm-100's zvol
    /// before a reboot and is vm-200's now does not match vm-100's record.
    public func canBe(_ recorded: [String]) -> Bool {
        let mine = Set(names.filter(Self.isStable))
        let theirs = Set(recorded.filter(Self.isStable))
        if mine.isEmpty || theirs.isEmpty { return !Set(names).isDisjoint(with: recorded) }
        return !mine.isDisjoint(with: theirs)
    }

    public static func makeAbsolute(_ path: String) -> String {
        if path.hasPrefix("/") { return normalize(path) }
        guard let cwd = getcwd(nil, 0) else { return path }
        defer { free(cwd) }
        return normalize(String(cString: cwd) + "/" + path)
    }

    /// Removes `.` and empty components and resolves `..` lexically (symlinks are kept).
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { _ = parts.popLast(); continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    public static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    private static func walkLinks(_ dir: String, depth: Int, _ visit: (String) -> Void) {
        guard depth < 6 else { return }
        for name in Footprint.entries(dir) {
            let full = dir + "/" + name
            var st = stat()
            guard lstat(full, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFLNK, S_IFBLK: visit(full)
            case S_IFDIR: walkLinks(full, depth: depth + 1, visit)
            default: break
            }
        }
    }
}
