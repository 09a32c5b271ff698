import CSQLite
import Chunks
import Glibc
import Synchronization

/// A SQLite connection. Owns the handle; extended result codes and a busy timeout are on from
/// the start. Nothing outside this file sees an `OpaquePointer`.
final class SQLiteConnection {
    private var handle: OpaquePointer?
    let path: String
    /// Transactions from several threads (a sender's acknowledgement reader and its sink) take
    /// turns on the one connection. Not recursive: a nested transaction is a bug, caught below.
    private let txLock = Mutex(())
    private let txOwner = Atomic<UInt>(0)

    init(path: String) throws {
        self.path = path
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "code \(rc)"
            sqlite3_close(handle)
            throw FerryError(.ledger, "cannot open ledger \(path): \(msg)",
                             hint: "check the path and its permissions, or pass --ledger PATH", cause: .sqlite(rc))
        }
        sqlite3_extended_result_codes(handle, 1)
        sqlite3_busy_timeout(handle, 15_000)
    }

    deinit { sqlite3_close_v2(handle) }

    func error(_ rc: Int32, _ what: String) -> FerryError {
        let msg = String(cString: sqlite3_errmsg(handle))
        if rc & 0xff == SQLITE_NOTADB {
            return FerryError(.ledger, "\(path) is not a ferry ledger (not an SQLite database)",
                              hint: "move it aside or pass --ledger PATH to use another ledger", cause: .sqlite(rc))
        }
        if rc & 0xff == SQLITE_READONLY || rc & 0xff == SQLITE_CANTOPEN {
            return FerryError(.ledger, "ledger \(path): \(msg)",
                              hint: "check the permissions of the ledger and its folder", cause: .sqlite(rc))
        }
        return FerryError(.ledger, "ledger \(path): \(what): \(msg)", cause: .sqlite(rc))
    }

    func execute(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            sqlite3_free(err)
            // Name the statement by its first line only: a migration is many lines long.
            throw error(rc, String(sql.split(separator: "\n").first ?? ""))
        }
    }

    func prepare(_ sql: String) throws -> Statement {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, "prepare") }
        return Statement(stmt, connection: self)
    }

    /// Runs `body` in one IMMEDIATE transaction: all of it lands, or none of it. Transactions from
    /// several threads (a sender's acknowledgement reader and its sink) take turns.
    func transaction<T>(_ body: () throws -> T) throws -> T { try transaction("BEGIN IMMEDIATE", body) }

    /// Runs `body` in one read transaction: one snapshot, and no write lock, so a reader never
    /// waits for a writer (a copy stopped in the middle of a batch, say).
    func readTransaction<T>(_ body: () throws -> T) throws -> T { try transaction("BEGIN DEFERRED", body) }

    private func transaction<T>(_ begin: String, _ body: () throws -> T) throws -> T {
        let me = UInt(pthread_self())
        precondition(txOwner.load(ordering: .relaxed) != me, "nested ledger transaction")
        var outcome: Result<T, any Error>!
        txLock.withLock { _ in
            txOwner.store(me, ordering: .relaxed)
            defer { txOwner.store(0, ordering: .relaxed) }
            outcome = Result {
                try execute(begin)
                do {
                    let r = try body()
                    try execute("COMMIT")
                    return r
                } catch {
                    try? execute("ROLLBACK")
                    throw error
                }
            }
        }
        return try outcome.get()
    }
}

/// A prepared statement; finalized in deinit.
final class Statement {
    private let stmt: OpaquePointer
    private let connection: SQLiteConnection

    init(_ stmt: OpaquePointer, connection: SQLiteConnection) {
        self.stmt = stmt
        self.connection = connection
    }

    deinit { sqlite3_finalize(stmt) }

    enum Value {
        case int(Int64), text(String), blob([UInt8]), null
    }

    /// An earlier step failed and was reported; reset then repeats that code, which says nothing new.
    private var stepFailed = false

    func bind(_ values: [Value]) throws {
        let reset = sqlite3_reset(stmt)
        if reset != SQLITE_OK && !stepFailed { throw connection.error(reset, "reset") }
        stepFailed = false
        sqlite3_clear_bindings(stmt)
        guard sqlite3_bind_parameter_count(stmt) == Int32(values.count) else {
            throw FerryError(.ledger, "ledger \(connection.path): a statement takes \(sqlite3_bind_parameter_count(stmt)) values, given \(values.count)")
        }
        for (i, v) in values.enumerated() {
            let at = Int32(i + 1)
            let rc: Int32
            switch v {
            case .int(let n): rc = sqlite3_bind_int64(stmt, at, n)
            case .text(let s): rc = sqlite3_bind_text(stmt, at, s, -1, csqlite_transient())
            case .blob(let b): rc = b.withUnsafeBytes { sqlite3_bind_blob(stmt, at, $0.baseAddress, Int32(b.count), csqlite_transient()) }
            case .null: rc = sqlite3_bind_null(stmt, at)
            }
            guard rc == SQLITE_OK else { throw connection.error(rc, "bind value \(at)") }
        }
    }

    /// Steps once; true when a row is available.
    func step() throws -> Bool {
        let rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        stepFailed = true
        throw connection.error(rc, "step")
    }

    func run(_ values: [Value] = []) throws {
        try bind(values)
        while try step() {}
    }

    /// Runs an `INSERT ... RETURNING id` and gives the new row's id: read in the same step, so
    /// no other insert on this connection can come between.
    func insert(_ values: [Value]) throws -> Int64 {
        try bind(values)
        guard try step() else { throw FerryError(.ledger, "ledger \(connection.path): an insert returned no row id") }
        let id = int(0)
        while try step() {}
        return id
    }

    func rows<T>(_ values: [Value] = [], _ map: (Statement) throws -> T) throws -> [T] {
        try bind(values)
        var out: [T] = []
        while try step() { out.append(try map(self)) }
        return out
    }

    func int(_ col: Int32) -> Int64 { sqlite3_column_int64(stmt, col) }
    func optionalInt(_ col: Int32) -> Int64? { isNull(col) ? nil : int(col) }
    func isNull(_ col: Int32) -> Bool { sqlite3_column_type(stmt, col) == SQLITE_NULL }
    func text(_ col: Int32) -> String? {
        guard let p = sqlite3_column_text(stmt, col) else { return nil }
        return String(cString: p)
    }
    func blob(_ col: Int32) -> [UInt8]? {
        guard let p = sqlite3_column_blob(stmt, col) else { return isNull(col) ? nil : [] }
        let n = Int(sqlite3_column_bytes(stmt, col))
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }
    /// A 32-byte digest column, read without copying into an array.
    func digest(_ col: Int32) -> Digest? {
        guard let p = sqlite3_column_blob(stmt, col), sqlite3_column_bytes(stmt, col) == 32 else { return nil }
        return Digest(bytes: UnsafeRawBufferPointer(start: p, count: 32))
    }
}

extension FerryError {
    /// The ledger was locked by another connection for longer than the busy timeout allowed.
    var isBusy: Bool {
        guard case .sqlite(let rc)? = cause else { return false }
        return rc & 0xff == SQLITE_BUSY || rc & 0xff == SQLITE_LOCKED
    }
}
