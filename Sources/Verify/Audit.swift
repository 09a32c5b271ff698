import Chunks
import Foundation
import Glibc
import Ledger

/// `ferry verify --all`: every complete destination image in this host's ledger, one verify
/// after another, each with its own verdict; an image that cannot be verified (its file gone,
/// its snapshot destroyed) is reported with its error and does not stop the others.
public enum Audit {
    /// One image's outcome: its report, or the error that stopped its verify.
    public struct Entry: Encodable, Sendable {
        public var imageId: Int64
        public var path: String
        public var report: VerifyReport?
        public var error: String?
        public var errorKind: String?
        /// A resumed audit: the verdict the interrupted audit reached for this image (its run).
        public var carried: RunRecord?

        public init(imageId: Int64, path: String, report: VerifyReport? = nil, error: String? = nil, errorKind: String? = nil,
                    carried: RunRecord? = nil) {
            (self.imageId, self.path, self.report, self.error, self.errorKind) = (imageId, path, report, error, errorKind)
            self.carried = carried
        }

        /// Whether the image was found intact (this run, or the interrupted audit's run).
        public var intact: Bool { report.map { $0.status == .ok } ?? (carried?.result == .ok) }
        /// Whether it could not be verified at all.
        public var failed: Bool { report == nil && (carried.map { ![.ok, .corrupt, .unstable, .unverified, .incomplete].contains($0.result) } ?? true) }

        public func encode(to encoder: any Encoder) throws {
            if let report { try report.encode(to: encoder); return }
            var c = encoder.container(keyedBy: Keys.self)
            try c.encode(imageId, forKey: .imageId)
            try c.encode(path, forKey: .target)
            if let carried, !failed {
                try c.encode(carried.result.rawValue, forKey: .status)
                try c.encode(carried.id, forKey: .fromRun)
                try c.encodeIfPresent(carried.endedAt, forKey: .endedAt)
                return
            }
            try c.encode("error", forKey: .status)
            try c.encodeIfPresent(error, forKey: .error)
            try c.encodeIfPresent(errorKind, forKey: .kind)
        }
        enum Keys: String, CodingKey { case imageId, target, status, error, kind, fromRun, endedAt }
    }

    /// What `--all --json` prints.
    public struct Report: Encodable, Sendable {
        /// ok: every image verified OK; corrupt: some verdict was not OK; error: none was bad,
        /// but some image could not be verified.
        public var status: String
        public var images: [Entry]
        public init(status: String, images: [Entry]) { (self.status, self.images) = (status, images) }
    }

    /// The images an audit covers: this host's complete destinations, each at a stable name (a
    /// zvol's /dev/zvol/... or a disk's /dev/disk/by-id/... link, not /dev/zdN, which a reboot
    /// renumbers), the newest record per name.
    public static func images(in ledger: Ledger) throws -> [(record: ImageRecord, target: String)] {
        var seen = Set<String>()
        var out: [(ImageRecord, String)] = []
        for i in try ledger.images().reversed() where i.role == .destination && i.complete && i.kind != .stream && i.host == ledger.host {
            let stable = i.kind == .blockDevice
                ? i.names.first { $0.hasPrefix("/dev/zvol/") || $0.hasPrefix("/dev/disk/by-id/") } : nil
            let target = stable ?? i.canonical
            if seen.insert(target).inserted { out.append((i, target)) }
        }
        return out.reversed()
    }

    public static func status(of entries: [Entry]) -> String {
        if entries.contains(where: { !$0.intact && !$0.failed }) { return "corrupt" }
        return entries.contains { $0.failed } ? "error" : "ok"
    }
}

/// The Prometheus text format for node_exporter's textfile collector: one series per image and
/// metric, written to a temporary file and renamed over the target, so a scrape never sees half.
public enum AuditMetrics {
    public static func text(_ entries: [Entry], now: Date = Date()) -> String {
        var out = ""
        func metric(_ name: String, _ help: String, _ value: (Audit.Entry) -> Double?) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n"
            for e in entries {
                guard let v = value(e) else { continue }
                out += "\(name){image=\"\(e.imageId)\",path=\"\(escape(e.path))\"} \(format(v))\n"
            }
        }
        let t = now.timeIntervalSince1970.rounded()
        metric("ferry_audit_last_run_timestamp_seconds", "When ferry last audited the image.", { _ in t })
        metric("ferry_audit_ok", "1 when the last audit found every chunk intact, else 0.", { e in e.intact ? 1 : 0 })
        metric("ferry_audit_error", "1 when the last audit could not read the image at all.", { e in e.failed ? 1 : 0 })
        metric("ferry_audit_bad_chunks", "Chunks that did not match the ledger.", { e in e.report.map { Double($0.badChunks) } })
        metric("ferry_audit_unstable_chunks", "Chunks that read back differently on different reads.", { e in e.report.map { Double($0.transientChunks.count) } })
        metric("ferry_audit_unreadable_at_copy_bytes", "Bytes the source could not read at copy time.",
               { e in e.report.map { Double(ByteRange.total($0.unreadableAtCopy ?? [])) } })
        metric("ferry_audit_bytes_read", "Bytes the last audit read.", { e in e.report.map { Double($0.bytesRead) } })
        metric("ferry_audit_seconds", "How long the last audit of the image took.", { e in e.report.map { ($0.seconds * 1000).rounded() / 1000 } })
        return out
    }

    public typealias Entry = Audit.Entry

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    static func format(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
    }

    /// Writes `text` to `path` atomically (a temporary file in the same folder, synced, renamed).
    public static func write(_ text: String, to path: String) throws {
        // A new file of a name nobody can guess, never through a link someone placed there.
        let tmp = path + ".tmp.\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FerryError.syscall("cannot create", path: tmp) }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard n == bytes.count, synced, rename(tmp, path) == 0 else {
            let e = FerryError.syscall("cannot write the metrics file", path: path)
            unlink(tmp)
            throw e
        }
    }
}
