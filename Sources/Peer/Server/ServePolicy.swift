import Chunks
import Glibc
import Ledger
import Wire

/// What `ferry serve` may touch, from its own command line, so that an authorized_keys forced
/// command limits not only what runs but which images and ledgers it reaches:
/// `--restrict-to DIR` (repeatable) and `--read-only`.
///
/// The rule for a path the request names (the image, and the ledger when the request names one):
/// - it must not contain `..` or a NUL byte;
/// - resolved with every symlink followed (for a path that does not exist yet: its deepest
///   existing ancestor resolved, plus the rest), it must lie inside one of the folders, also
///   resolved, component by component (/tank2 is not inside /tank);
/// - one exception, for zvols and the links in /dev/disk: a symlink owned by root whose target
///   is a block device is allowed when the folder holding the link lies inside one of the
///   folders. /dev/zvol/tank/vm-1 points to /dev/zd0, outside /dev/zvol/tank, and is allowed
///   under `--restrict-to /dev/zvol/tank`; a link to a file or folder elsewhere never is.
/// A ledger the request does not name is serve's own (its environment picks it, the client
/// cannot), and is used wherever it lies. `--read-only` refuses every operation that writes an
/// image (push, resend to this host); the ledger is still written (verify runs, a pull's source
/// record).
///
/// Every check runs before anything is opened or created. A local user who can write inside an
/// allowed folder could still swap a checked path for a symlink before serve opens it; the
/// client itself cannot create symlinks.
public struct ServePolicy: Sendable, Equatable {
    /// The allowed folders, resolved; empty: anywhere.
    public let folders: [String]
    public let readOnly: Bool
    /// The uid a link must belong to for the block-device exception: root, as udev's links are.
    static let trustedLinkOwner: UInt32 = 0

    /// Resolves `--restrict-to`'s folders; one that is missing or not a folder is a usage error.
    public init(restrictTo: [String], readOnly: Bool, paths: some PathLookup = LivePaths()) throws {
        var resolved: [String] = []
        for dir in restrictTo {
            guard !dir.isEmpty, let real = paths.realPath(dir), paths.entry(real) == .directory else {
                throw FerryError(.usage, "--restrict-to \(dir): not an existing folder on \(Ledger.hostname())",
                                 hint: "fix the forced command in authorized_keys: name folders that exist")
            }
            if !resolved.contains(real) { resolved.append(real) }
        }
        (folders, self.readOnly) = (resolved, readOnly)
    }

    /// Refuses the request unless this serve may carry it out. `defaultLedger` is the ledger
    /// serve uses when the request names none.
    public func check(_ request: Request, defaultLedger: String, paths: some PathLookup = LivePaths()) throws {
        if readOnly {
            switch request {
            case .receive(let r): throw readOnlyRefusal("write the image \(r.path) (a copy to this host)")
            case .resendReceive(let r): throw readOnlyRefusal("repair the image \(r.path) (a resend to this host)")
            case .send, .verify, .resendSend: break
            }
        }
        guard !folders.isEmpty else { return }
        try checkPath(request.path, what: "image", paths: paths)
        if let ledger = request.ledger, !sameFile(ledger, defaultLedger, paths: paths) {
            try checkPath(ledger, what: "ledger", paths: paths)
        }
    }

    private func readOnlyRefusal(_ action: String) -> FerryError {
        FerryError(.refused, "this ferry serve is read-only (--read-only in its command line): it does not \(action)",
                   hint: "copy from this host, verify or resend from it; writing here needs a key whose forced command has no --read-only")
    }

    private func sameFile(_ a: String, _ b: String, paths: some PathLookup) -> Bool {
        guard let ra = resolve(a, paths: paths), let rb = resolve(b, paths: paths) else { return false }
        return ra == rb
    }

    /// Refuses `path` unless the rule above allows it.
    func checkPath(_ path: String, what: String, paths: some PathLookup) throws {
        func refuse(_ why: String) -> FerryError {
            FerryError(.refused, "\(what) \(path) \(why); this ferry serve may use only \(folders.joined(separator: ", "))",
                       hint: "name a path inside one of them; the far host's forced command sets them with --restrict-to")
        }
        if path.contains("\0") { throw refuse("contains a NUL byte") }
        if DeviceIdentity.isURI(path) { throw refuse("is a URI (an NBD export), not a file or device in them") }
        if path.split(separator: "/").contains("..") { throw refuse("names '..'") }
        guard let real = resolve(path, paths: paths) else {
            throw refuse("cannot be resolved (a dangling symlink, or a folder serve cannot search)")
        }
        if inside(real) { return }
        // The block-device exception: a root-owned link in an allowed folder (a zvol, /dev/disk/by-id/...).
        let absolute = Self.absolute(path, paths: paths)
        if case .symlink(let owner, let toBlockDevice) = paths.entry(absolute), owner == Self.trustedLinkOwner, toBlockDevice,
           let parent = Self.parent(absolute), let realParent = paths.realPath(parent), inside(realParent) {
            return
        }
        throw refuse(real == absolute ? "lies outside" : "resolves to \(real), outside")
    }

    /// True when `real` (resolved) lies inside one of the folders, component by component.
    func inside(_ real: String) -> Bool {
        folders.contains { Self.isInside(real, $0) }
    }

    /// `path` equals `folder` or lies below it; both resolved (absolute, no trailing slash).
    public static func isInside(_ path: String, _ folder: String) -> Bool {
        folder == "/" || path == folder || path.hasPrefix(folder + "/")
    }

    /// Every symlink followed: the path itself when it exists, else its deepest existing ancestor
    /// plus the components below it (which do not exist, so hold no symlinks). Nil when an
    /// existing part cannot be resolved: a dangling symlink (which a create would follow out of
    /// the tree) or a folder serve cannot search.
    func resolve(_ path: String, paths: some PathLookup) -> String? {
        var head = Self.absolute(path, paths: paths)
        var rest: [Substring] = []
        while true {
            switch paths.entry(head) {
            case .missing:
                guard let up = Self.parent(head), let last = head.split(separator: "/").last else { return nil }
                rest.insert(last, at: 0)
                head = up
            case .unknown:
                return nil
            default:
                guard let real = paths.realPath(head) else { return nil }
                return rest.isEmpty ? real : (real == "/" ? "" : real) + "/" + rest.joined(separator: "/")
            }
        }
    }

    /// `path` made absolute against the working directory, with empty and `.` components dropped.
    static func absolute(_ path: String, paths: some PathLookup) -> String {
        let full = path.hasPrefix("/") ? path : paths.workingDirectory + "/" + path
        return "/" + full.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
    }

    /// The folder holding `path` (absolute, normalized); nil for "/".
    static func parent(_ path: String) -> String? {
        guard path != "/", let slash = path.lastIndex(of: "/") else { return nil }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}

/// What an entry is, as lstat(2) sees it.
public enum PathEntry: Equatable, Sendable {
    case missing
    /// lstat failed otherwise (EACCES, ELOOP, ...).
    case unknown(errno: Int32)
    case directory
    case blockDevice
    case other
    /// A symlink: its owner, and whether what it finally points to is a block device.
    case symlink(owner: UInt32, toBlockDevice: Bool)
}

/// The questions the policy asks of the file system; tests answer them from a table.
public protocol PathLookup {
    func entry(_ path: String) -> PathEntry
    /// realpath(3): absolute, every symlink followed; nil when that fails.
    func realPath(_ path: String) -> String?
    var workingDirectory: String { get }
}

/// The file system itself.
public struct LivePaths: PathLookup {
    public init() {}

    public func entry(_ path: String) -> PathEntry {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            let e = errno
            return e == ENOENT || e == ENOTDIR ? .missing : .unknown(errno: e)
        }
        switch st.st_mode & S_IFMT {
        case S_IFDIR: return .directory
        case S_IFBLK: return .blockDevice
        case S_IFLNK:
            var target = stat()
            let block = stat(path, &target) == 0 && (target.st_mode & S_IFMT) == S_IFBLK
            return .symlink(owner: st.st_uid, toBlockDevice: block)
        default: return .other
        }
    }

    public func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    public var workingDirectory: String {
        guard let p = getcwd(nil, 0) else { return "/" }
        defer { free(p) }
        return String(cString: p)
    }
}
