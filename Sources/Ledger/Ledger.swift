import Chunks
import Foundation
import Glibc

/// The user's proof: one SQLite file per host recording images, their chunk hashes, and runs.
///
/// Write ordering (what survives a crash at any instant):
/// 1. An image row is created `complete = 0` before the first byte is written.
/// 2. Chunk rows are recorded as chunks are hashed, in batches, each batch its own transaction.
///    They describe bytes read or received; they do not claim the destination holds them.
/// 3. `checkpoint` records "chunks [0, n) are durable" only after the destination was fdatasync'ed
///    past chunk n-1 (and the chunk rows up to n are committed).
/// 4. `complete` sets the whole-image digest and `complete = 1` only after the final fdatasync.
/// WAL mode with synchronous=FULL: a committed transaction is on disk when commit returns.
public final class Ledger {
    public let path: String
    let db: SQLiteConnection
    public let host: String

    /// `/var/lib/ferry/ledger.db` for root, else `$XDG_STATE_HOME/ferry/ledger.db`
    /// (`~/.local/state/ferry/ledger.db`). `FERRY_LEDGER` overrides both.
    public static func defaultPath(environment: [String: String]) -> String {
        if let p = environment["FERRY_LEDGER"], !p.isEmpty { return p }
        if geteuid() == 0 { return "/var/lib/ferry/ledger.db" }
        if let x = environment["XDG_STATE_HOME"], !x.isEmpty { return x + "/ferry/ledger.db" }
        return (environment["HOME"] ?? "/tmp") + "/.local/state/ferry/ledger.db"
    }

    /// Opens (creating when missing, mode 0600) and migrates the ledger at `path`.
    public init(path: String, create: Bool = true) throws {
        self.path = path
        var st = stat()
        let exists = stat(path, &st) == 0
        if exists && (st.st_mode & S_IFMT) == S_IFDIR {
            throw FerryError(.ledger, "ledger \(path) is a directory", hint: "pass --ledger PATH naming a file")
        }
        if !exists {
            guard create else {
                throw FerryError(.notFound, "no ledger at \(path)",
                                 hint: "nothing has been recorded on this host yet; pass --ledger PATH if it lives elsewhere")
            }
            try Self.makeParent(of: path)
            // Created 0600 before SQLite sees it: the ledger names every disk image on the host.
            let fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw FerryError.syscall("cannot create ledger", path: path) }
            close(fd)
        }
        db = try SQLiteConnection(path: path)
        host = Self.hostname()
        try migrate()
    }

    static func makeParent(of path: String) throws {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let dir = String(path[..<slash])
        var st = stat()
        if stat(dir, &st) == 0 { return }
        try makeParent(of: dir)
        guard mkdir(dir, 0o700) == 0 || errno == EEXIST else {
            throw FerryError.syscall("cannot create ledger folder", path: dir)
        }
    }

    public static func hostname() -> String {
        var buf = [UInt8](repeating: 0, count: 256)
        gethostname(&buf, 255)
        return String(decoding: buf.prefix(while: { $0 != 0 }), as: UTF8.self)
    }

    private func scalar(_ sql: String) throws -> Int64 {
        let s = try db.prepare(sql)
        return try s.step() ? s.int(0) : 0
    }

    private func migrate() throws {
        // The three header reads must see one snapshot: another process may be creating the
        // ledger right now. A read transaction: opening a current ledger takes no write lock.
        let version = try db.readTransaction { () -> Int64 in
            try checkOwnership()
            return try scalar("PRAGMA user_version")
        }
        // Several ferry processes may open a new ledger at once: switching to WAL takes an
        // exclusive lock that SQLite's busy handler does not wait for, so wait here.
        try retryingBusy { try db.execute("PRAGMA journal_mode=WAL") }
        try db.execute("PRAGMA synchronous=FULL")
        try db.execute("PRAGMA foreign_keys=ON")
        guard version < Schema.version else { return }
        // One process migrates; the others find the work done when their turn comes.
        try db.transaction {
            try checkOwnership()
            var version = try scalar("PRAGMA user_version")
            while version < Schema.version {
                try db.execute(Schema.migrations[Int(version)])
                version += 1
                try db.execute("PRAGMA user_version=\(version)")
                try db.execute("PRAGMA application_id=\(Schema.applicationID)")
            }
        }
    }

    /// Refuses a database that is not a ferry ledger, or one newer than this ferry.
    private func checkOwnership() throws {
        let appID = try scalar("PRAGMA application_id")
        let version = try scalar("PRAGMA user_version")
        let tables = try scalar("SELECT count(*) FROM sqlite_master")
        if appID != Schema.applicationID && (appID != 0 || version != 0 || tables != 0) {
            throw FerryError(.ledger, "\(path) is an SQLite database but not a ferry ledger",
                             hint: "pass --ledger PATH to use another file")
        }
        if version > Schema.version {
            throw FerryError(.ledger, "ledger \(path) has schema version \(version), newer than this ferry knows (\(Schema.version))",
                             hint: "upgrade ferry on this host; the ledger was left unchanged")
        }
    }

    /// Takes one committed write, so a ledger that cannot record (read-only, immutable, on a
    /// full or read-only file system) is found before an image is touched.
    public func checkWritable() throws {
        do {
            try db.transaction { try db.execute("PRAGMA user_version=\(Schema.version)") }
        } catch let e as FerryError {
            throw FerryError(.ledger, "the ledger \(path) cannot be written: \(e.message)",
                             hint: "make it writable (chattr -i, a writable mount, free space) or pass --ledger PATH; nothing was written",
                             cause: e.cause)
        }
    }

    private func retryingBusy(_ body: () throws -> Void) throws {
        let deadline = monotonicSeconds() + 15
        while true {
            do {
                return try body()
            } catch let e as FerryError where e.isBusy {
                if monotonicSeconds() > deadline { throw e }
                usleep(20_000)
            }
        }
    }

    public static func json<T: Encodable>(_ value: T) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: (try? e.encode(value)) ?? Data("{}".utf8), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ json: String, what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(json.utf8))
        } catch {
            throw FerryError(.ledger, "the \(what) cannot be read: \(json.prefix(80))",
                             hint: "the ledger was damaged, edited, or written by a newer ferry")
        }
    }

    public static func now() -> String {
        var t = time(nil)
        var tm = tm()
        gmtime_r(&t, &tm)
        var buf = [UInt8](repeating: 0, count: 32)
        let n = buf.withUnsafeMutableBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: 32) { strftime($0, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) }
        }
        return String(decoding: buf.prefix(n), as: UTF8.self)
    }

    // MARK: Images

    public func createImage(_ new: NewImage) throws -> Int64 {
        try db.transaction {
            let id = try db.prepare("""
                INSERT INTO images(role, path, canonical, kind, host, size, chunk_size, transfer_id, peer, created_at, options, stamp, medium, container)
                VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id
                """).insert([.text(new.role.rawValue), .text(new.identity.given), .text(new.identity.canonical),
                          .text(new.kind.rawValue), .text(host), new.size.map { .int(Int64($0)) } ?? .null,
                          .int(Int64(new.chunkSize)), .text(new.transferId), new.peer.map { .text($0) } ?? .null,
                          .text(Self.now()), new.options.map { .text($0) } ?? .null,
                          new.stamp.map { .text(Self.json($0)) } ?? .null, new.medium.map { .text(Self.json($0)) } ?? .null,
                          new.container.map { .text(Self.json($0)) } ?? .null])
            let names = try db.prepare("INSERT OR IGNORE INTO image_names(name, image_id) VALUES (?, ?)")
            for name in Set(new.identity.names) {
                try names.run([.text(name), .int(id)])
            }
            return id
        }
    }

    public func link(_ a: Int64, _ b: Int64) throws {
        try db.transaction {
            let s = try db.prepare("UPDATE images SET peer_image_id = ? WHERE id = ?")
            try s.run([.int(b), .int(a)])
            try s.run([.int(a), .int(b)])
        }
    }

    /// Records a batch of chunk hashes in one transaction (rows may be replaced by a resumed copy).
    /// Unreadable ranges of those chunks go in the same transaction, so a chunk row is never
    /// recorded without the ranges its hash covered with zeros.
    public func recordChunks(image: Int64, _ rows: [ChunkRow], unreadable: [ByteRange] = []) throws {
        guard !rows.isEmpty || !unreadable.isEmpty else { return }
        try db.transaction {
            let s = try db.prepare("INSERT OR REPLACE INTO chunks(image_id, idx, sha256, zero) VALUES (?,?,?,?)")
            for r in rows {
                try s.run([.int(image), .int(Int64(r.index)), .blob(r.digest.bytes), .int(r.zero ? 1 : 0)])
            }
            try insertUnreadable(image: image, unreadable)
        }
    }

    private func insertUnreadable(image: Int64, _ ranges: [ByteRange]) throws {
        guard !ranges.isEmpty else { return }
        let u = try db.prepare("INSERT OR REPLACE INTO unreadable(image_id, offset, length) VALUES (?,?,?)")
        for r in ranges { try u.run([.int(image), .int(Int64(r.offset)), .int(Int64(r.length))]) }
    }

    /// The byte ranges the source could not read when this image was copied (and no resend has
    /// filled since), in order, with ranges that touch merged (rows are kept per chunk).
    public func unreadable(image: Int64) throws -> [ByteRange] {
        ByteRange.merged(try db.prepare("SELECT offset, length FROM unreadable WHERE image_id = ? ORDER BY offset")
            .rows([.int(image)]) { ByteRange(offset: UInt64($0.int(0)), length: UInt64($0.int(1))) })
    }

    /// Forgets unreadable ranges at or past `offset` (a resumed copy reads them again).
    public func dropUnreadable(image: Int64, from offset: UInt64) throws {
        try db.prepare("DELETE FROM unreadable WHERE image_id = ? AND offset >= ?").run([.int(image), .int(Int64(offset))])
    }

    /// A resend filled (some of) the unreadable bytes of chunk `index`: the chunk row takes the
    /// hash of what the chunk holds now, the ranges inside `window` become `remaining`, and the
    /// list root is recomputed from the rows, in one transaction. The whole-image SHA-256 stays
    /// unknown: no pass read all the real bytes in order.
    public func fillChunk(image: Int64, index: Int, window: ByteRange, digest: Digest, zero: Bool, remaining: [ByteRange]) throws {
        try db.transaction {
            try db.prepare("UPDATE chunks SET sha256 = ?, zero = ? WHERE image_id = ? AND idx = ?")
                .run([.blob(digest.bytes), .int(zero ? 1 : 0), .int(image), .int(Int64(index))])
            try db.prepare("DELETE FROM unreadable WHERE image_id = ? AND offset >= ? AND offset < ?")
                .run([.int(image), .int(Int64(window.offset)), .int(Int64(window.end))])
            try insertUnreadable(image: image, remaining)
            var list = SHA256Hasher()
            for row in try chunks(image: image) { list.update(row.digest) }
            try db.prepare("UPDATE images SET sha256 = NULL, list_root = ?, digest_pending = 1 WHERE id = ?")
                .run([.text(list.finalized().hex), .int(image)])
        }
    }

    /// Records the whole-image SHA-256 of a complete image that had none (its unreadable ranges
    /// were all filled): a full read whose every chunk matched computed it.
    public func recordDigest(image: Int64, sha256: Digest) throws {
        try db.prepare("UPDATE images SET sha256 = ?, digest_pending = 0 WHERE id = ? AND sha256 IS NULL AND complete = 1 AND digest_pending = 1")
            .run([.text(sha256.hex), .int(image)])
    }

    /// Chunks [0, chunks) are durable at the destination; `state` resumes the whole-image hash
    /// there. Call only after fdatasync of the data (and, at the sending end, after the receiver
    /// said so). The newest three checkpoints are kept.
    public func checkpoint(image: Int64, chunks: Int, state: [UInt8]?) throws {
        try db.transaction {
            try db.prepare("INSERT OR REPLACE INTO checkpoints(image_id, chunks, state) VALUES (?,?,?)")
                .run([.int(image), .int(Int64(chunks)), state.map { .blob($0) } ?? .null])
            try db.prepare("""
                DELETE FROM checkpoints WHERE image_id = ? AND chunks NOT IN
                  (SELECT chunks FROM checkpoints WHERE image_id = ? ORDER BY chunks DESC LIMIT 3)
                """).run([.int(image), .int(image)])
            try db.prepare("UPDATE images SET checkpoint_chunks = ? WHERE id = ?").run([.int(Int64(chunks)), .int(image)])
        }
    }

    /// Checkpoint chunk counts recorded for an image, newest first.
    public func checkpointCounts(image: Int64) throws -> [Int] { try checkpoints(image: image).map(\.chunks) }

    /// The recorded checkpoints of an image, newest first: (chunks, saved hash state).
    public func checkpoints(image: Int64) throws -> [(chunks: Int, state: [UInt8]?)] {
        try db.prepare("SELECT chunks, state FROM checkpoints WHERE image_id = ? ORDER BY chunks DESC")
            .rows([.int(image)]) { (Int($0.int(0)), $0.blob(1)) }
    }

    /// Marks an image complete with its whole digest. For a destination: only after the final
    /// fdatasync. Chunk rows past the final count (from an earlier, longer attempt) are removed.
    /// `sha256` is nil when some bytes could not be read: no digest of the real image exists.
    public func complete(image: Int64, size: UInt64, sha256: Digest?, listRoot: Digest, chunkCount: Int,
                         zeroChunks: Int, snapshot: SnapshotRecord? = nil) throws {
        try db.transaction {
            try db.prepare("DELETE FROM chunks WHERE image_id = ? AND idx >= ?").run([.int(image), .int(Int64(chunkCount))])
            try db.prepare("DELETE FROM unreadable WHERE image_id = ? AND offset >= ?").run([.int(image), .int(Int64(size))])
            try db.prepare("""
                UPDATE images SET size = ?, sha256 = ?, list_root = ?, chunk_count = ?, zero_chunks = ?,
                  complete = 1, completed_at = ?, checkpoint_chunks = ? WHERE id = ?
                """).run([.int(Int64(size)), sha256.map { .text($0.hex) } ?? .null, .text(listRoot.hex), .int(Int64(chunkCount)),
                          .int(Int64(zeroChunks)), .text(Self.now()), .int(Int64(chunkCount)), .int(image)])
            try db.prepare("DELETE FROM checkpoints WHERE image_id = ?").run([.int(image)])
            if let snapshot {
                try db.prepare("UPDATE images SET snapshot = ? WHERE id = ?").run([.text(Self.json(snapshot)), .int(image)])
            }
        }
    }

    /// Replaces what the record says of its snapshot (`ferry ledger release` destroyed it).
    public func setSnapshot(image: Int64, _ snapshot: SnapshotRecord) throws {
        try db.prepare("UPDATE images SET snapshot = ? WHERE id = ?").run([.text(Self.json(snapshot)), .int(image)])
    }

    /// Removes an image's records: its rows, runs, findings, checkpoints and ranges
    /// (`ferry ledger forget`). The other end's record, if any, stops naming it.
    public func forget(image: Int64) throws {
        try db.transaction {
            for sql in ["DELETE FROM chunks WHERE image_id = ?", "DELETE FROM unreadable WHERE image_id = ?",
                        "DELETE FROM findings WHERE image_id = ?", "DELETE FROM checkpoints WHERE image_id = ?",
                        "DELETE FROM findings WHERE run_id IN (SELECT id FROM runs WHERE image_id = ?)",
                        "DELETE FROM runs WHERE image_id = ?", "DELETE FROM image_names WHERE image_id = ?",
                        "UPDATE images SET peer_image_id = NULL WHERE peer_image_id = ?", "DELETE FROM images WHERE id = ?"] {
                try db.prepare(sql).run([.int(image)])
            }
        }
    }

    private static let imageColumns = """
        id, role, path, canonical, kind, host, size, chunk_size, sha256, list_root, chunk_count, zero_chunks,
        complete, transfer_id, peer_image_id, peer, created_at, completed_at, checkpoint_chunks, stamp, medium, snapshot, digest_pending,
        container
        """

    private func imageRows(_ whereClause: String, _ args: [Statement.Value]) throws -> [ImageRecord] {
        let s = try db.prepare("SELECT \(Self.imageColumns) FROM images \(whereClause)")
        let names = try db.prepare("SELECT name FROM image_names WHERE image_id = ? ORDER BY name")
        return try s.rows(args) { r in
            let id = r.int(0)
            return ImageRecord(
                id: id, role: try column(r.text(1), "role of image \(id)"), path: r.text(2) ?? "",
                canonical: r.text(3) ?? "", kind: try column(r.text(4), "kind of image \(id)"), host: r.text(5) ?? "",
                size: r.optionalInt(6).map { UInt64($0) }, chunkSize: Int(r.int(7)), sha256: r.text(8),
                listRoot: r.text(9), chunkCount: r.optionalInt(10).map { Int($0) }, zeroChunks: Int(r.int(11)),
                complete: r.int(12) != 0, transferId: r.text(13) ?? "", peerImageId: r.optionalInt(14),
                peer: r.text(15), createdAt: r.text(16) ?? "", completedAt: r.text(17),
                checkpointChunks: Int(r.int(18)),
                names: try names.rows([.int(id)]) { $0.text(0) ?? "" },
                stamp: try r.text(19).map { try Self.decode(FileStamp.self, $0, what: "stamp of image \(id) in ledger \(path)") },
                medium: try r.text(20).map { try Self.decode(Medium.self, $0, what: "medium of image \(id) in ledger \(path)") },
                snapshot: try r.text(21).map { try Self.decode(SnapshotRecord.self, $0, what: "snapshot of image \(id) in ledger \(path)") },
                digestPending: r.int(22) != 0,
                container: try r.text(23).map { try Self.decode(ContainerRecord.self, $0, what: "container of image \(id) in ledger \(path)") })
        }
    }

    public func image(_ id: Int64) throws -> ImageRecord? {
        try imageRows("WHERE id = ?", [.int(id)]).first
    }

    /// Image `id`, or a not-found error that says where to look.
    public func requireImage(_ id: Int64) throws -> ImageRecord {
        guard let r = try image(id) else {
            throw FerryError(.notFound, "no image \(id) in ledger \(path)", hint: "`ferry ledger list` shows the recorded images")
        }
        return r
    }

    public func images() throws -> [ImageRecord] {
        try imageRows("ORDER BY id", [])
    }

    /// Images known under any of `names` (newest first).
    public func images(named names: [String]) throws -> [ImageRecord] {
        guard !names.isEmpty else { return [] }
        let marks = names.map { _ in "?" }.joined(separator: ",")
        return try imageRows("WHERE id IN (SELECT image_id FROM image_names WHERE name IN (\(marks))) ORDER BY id DESC",
                             names.map { .text($0) })
    }

    public func images(transfer: String) throws -> [ImageRecord] {
        try imageRows("WHERE transfer_id = ? ORDER BY id", [.text(transfer)])
    }

    /// All chunk hashes of an image, in order.
    public func chunks(image: Int64) throws -> [ChunkRow] {
        try db.prepare("SELECT idx, sha256, zero FROM chunks WHERE image_id = ? ORDER BY idx").rows([.int(image)]) {
            try chunkRow($0, image: image)
        }
    }

    /// A chunk row whose hash is not 32 bytes is damage, not a hash of zero.
    func chunkRow(_ r: Statement, image: Int64) throws -> ChunkRow {
        let index = Int(r.int(0))
        guard let digest = r.digest(1) else {
            throw FerryError(.ledger, "ledger \(path): chunk \(index) of image \(image) has no valid SHA-256",
                             hint: "the ledger was damaged or edited; it cannot vouch for this image")
        }
        return ChunkRow(index: index, digest: digest, zero: r.int(2) != 0)
    }

    /// A text column that must hold one of an enum's values: anything else is a damaged ledger,
    /// never a silent default.
    func column<T: RawRepresentable>(_ raw: String?, _ what: String) throws -> T where T.RawValue == String {
        guard let raw, let value = T(rawValue: raw) else {
            throw FerryError(.ledger, "ledger \(path): the \(what) is '\(raw ?? "NULL")', which this ferry does not know",
                             hint: "the ledger was damaged, edited, or written by a newer ferry")
        }
        return value
    }

    // MARK: Runs and findings

    public func startRun(image: Int64, kind: RunKind) throws -> Int64 {
        try db.prepare("INSERT INTO runs(image_id, kind, started_at, pid) VALUES (?,?,?,?) RETURNING id")
            .insert([.int(image), .text(kind.rawValue), .text(Self.now()), .int(Int64(getpid()))])
    }

    public struct RunEnd: Sendable {
        public var result: RunResult
        public var bytesRead: UInt64 = 0
        public var bytesWritten: UInt64 = 0
        public var bytesSent: UInt64 = 0
        public var readMode: String?
        public var detail: String?
        public init(result: RunResult, bytesRead: UInt64 = 0, bytesWritten: UInt64 = 0, bytesSent: UInt64 = 0,
                    readMode: String? = nil, detail: String? = nil) {
            (self.result, self.bytesRead, self.bytesWritten, self.bytesSent) = (result, bytesRead, bytesWritten, bytesSent)
            (self.readMode, self.detail) = (readMode, detail)
        }
    }

    /// Ends a run and records its findings in one transaction.
    public func finishRun(_ run: Int64, image: Int64, _ end: RunEnd, findings: [Finding] = []) throws {
        try db.transaction {
            try db.prepare("""
                UPDATE runs SET ended_at = ?, result = ?, bytes_read = ?, bytes_written = ?, bytes_sent = ?,
                  read_mode = ?, detail = ? WHERE id = ?
                """).run([.text(Self.now()), .text(end.result.rawValue), .int(Int64(end.bytesRead)), .int(Int64(end.bytesWritten)),
                          .int(Int64(end.bytesSent)), end.readMode.map { .text($0) } ?? .null,
                          end.detail.map { .text($0) } ?? .null, .int(run)])
            let s = try db.prepare("""
                INSERT INTO findings(run_id, image_id, kind, first_chunk, last_chunk, offset, length, detail)
                VALUES (?,?,?,?,?,?,?,?)
                """)
            for f in findings {
                try s.run([.int(run), .int(image), .text(f.kind.rawValue), .int(Int64(f.firstChunk)),
                           .int(Int64(f.lastChunk)), .int(Int64(f.offset)), .int(Int64(f.length)),
                           f.detail.map { .text($0) } ?? .null])
            }
        }
    }

    public func runs(image: Int64) throws -> [RunRecord] {
        try db.prepare("""
            SELECT id, image_id, kind, started_at, ended_at, result, bytes_read, bytes_written, bytes_sent, read_mode, detail, error, pid
            FROM runs WHERE image_id = ? ORDER BY id
            """).rows([.int(image)]) { r in
            RunRecord(id: r.int(0), imageId: r.int(1), kind: try column(r.text(2), "kind of run \(r.int(0))"),
                      startedAt: r.text(3) ?? "",
                      endedAt: r.text(4), result: try column(r.text(5), "result of run \(r.int(0))"), bytesRead: UInt64(r.int(6)),
                      bytesWritten: UInt64(r.int(7)), bytesSent: UInt64(r.int(8)), readMode: r.text(9), detail: r.text(10),
                      error: r.text(11), pid: r.optionalInt(12).map { Int32(truncatingIfNeeded: $0) })
        }
    }

    /// Ends a run that an error or a signal stopped, as `interrupted` (a signal) or `failed`,
    /// saying why. A run already ended keeps its result.
    public func failRun(_ run: Int64, error: any Error, bytesRead: UInt64 = 0, bytesWritten: UInt64 = 0,
                        bytesSent: UInt64 = 0) throws {
        let result: RunResult = (error as? FerryError)?.code == .interrupted ? .interrupted : .failed
        try db.prepare("""
            UPDATE runs SET ended_at = ?, result = ?, error = ?, bytes_read = ?, bytes_written = ?, bytes_sent = ?
            WHERE id = ? AND result = 'running'
            """).run([.text(Self.now()), .text(result.rawValue), .text("\(error)"), .int(Int64(bytesRead)),
                      .int(Int64(bytesWritten)), .int(Int64(bytesSent)), .int(run)])
    }

    /// Stores a run's detail before it ends (an interrupted verify's resume point).
    public func setRunDetail(_ run: Int64, _ detail: String) throws {
        try db.prepare("UPDATE runs SET detail = ? WHERE id = ?").run([.text(detail), .int(run)])
    }

    /// Runs `body` for an open run: an error ends the run as failed (interrupted, for a signal)
    /// with that error, so no run stays "running" after its process reported a failure.
    public func recording<T>(_ run: Int64, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            try? failRun(run, error: error)
            throw error
        }
    }

    /// Marks the runs of an image that never recorded an end as abandoned: a new run on it means
    /// they are no longer going on (called by a resume, which holds the image's claim).
    public func abandonRuns(image: Int64, kind: RunKind) throws {
        try db.prepare("""
            UPDATE runs SET result = 'abandoned', error = 'the process ended without recording a result (killed, or the host went down)'
            WHERE image_id = ? AND kind = ? AND result = 'running'
            """).run([.int(image), .text(kind.rawValue)])
    }

    public func findings(run: Int64) throws -> [Finding] {
        try db.prepare("""
            SELECT id, kind, first_chunk, last_chunk, offset, length, detail, repaired_by FROM findings
            WHERE run_id = ? ORDER BY first_chunk
            """).rows([.int(run)]) { r in
            var f = Finding(kind: try column(r.text(1), "kind of finding \(r.int(0))"), firstChunk: Int(r.int(2)),
                            lastChunk: Int(r.int(3)), offset: UInt64(r.int(4)), length: UInt64(r.int(5)), detail: r.text(6))
            f.id = r.int(0)
            f.repairedBy = r.optionalInt(7)
            return f
        }
    }

    /// The latest finished verify run of an image, with its findings.
    public func latestVerify(image: Int64) throws -> (run: RunRecord, findings: [Finding])? {
        guard let run = try runs(image: image).last(where: { $0.kind == .verify && $0.endedAt != nil }) else { return nil }
        return (run, try findings(run: run.id))
    }

    public func markRepaired(findings ids: [Int64], by run: Int64) throws {
        try db.transaction {
            let s = try db.prepare("UPDATE findings SET repaired_by = ? WHERE id = ?")
            for id in ids { try s.run([.int(run), .int(id)]) }
        }
    }
}

extension Ledger {
    /// One chunk's recorded hash.
    public func chunk(image: Int64, index: Int) throws -> ChunkRow? {
        let s = try db.prepare("SELECT idx, sha256, zero FROM chunks WHERE image_id = ? AND idx = ?")
        return try s.rows([.int(image), .int(Int64(index))]) { try chunkRow($0, image: image) }.first
    }
}

extension Ledger {
    /// Records a chunk that was deliberately rewritten with different data (resend --force): the
    /// chunk row takes the new hash, the list root is recomputed from the rows, and the recorded
    /// whole-image SHA-256 is cleared, as it no longer describes the image.
    public func replaceChunk(image: Int64, index: Int, digest: Digest, zero: Bool) throws {
        try db.transaction {
            try db.prepare("UPDATE chunks SET sha256 = ?, zero = ? WHERE image_id = ? AND idx = ?")
                .run([.blob(digest.bytes), .int(zero ? 1 : 0), .int(image), .int(Int64(index))])
            var list = SHA256Hasher()
            for row in try chunks(image: image) { list.update(row.digest) }
            try db.prepare("UPDATE images SET sha256 = NULL, list_root = ?, digest_pending = 0 WHERE id = ?")
                .run([.text(list.finalized().hex), .int(image)])
        }
    }
}
