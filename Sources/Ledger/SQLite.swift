import CSQLite
import Chunks
import Glibc

/// A SQLite connection. Owns the handle; extended result codes and a busy timeout are on from
/// the start. Nothing outside this file sees an `OpaquePointer`.
final class SQLiteConnection {
    private var handle: OpaquePointer?
    let path: String
    private var txLock = pthread_mutex_t()

    init(path: String) throws {
        self.path = path
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "code \(rc)"
            sqlite3_close(handle)
            throw FerryError(.ledger, "cannot open ledger \(path): \(msg)",
                             hint: "check the path and its permissions, or pass --ledger PATH")
        }
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_settype(&attr, Int32(PTHREAD_MUTEX_RECURSIVE))
        pthread_mutex_init(&txLock, &attr)
        sqlite3_extended_result_codes(handle, 1)
        sqlite3_busy_timeout(handle, 15_000)
    }

    deinit { sqlite3_close_v2(handle) }

    func error(_ rc: Int32, _ what: String) -> FerryError {
        let msg = String(cString: sqlite3_errmsg(handle))
        if rc & 0xff == SQLITE_NOTADB {
            return FerryError(.ledger, "\(path) is not a ferry ledger (not an SQLite database)",
                              hint: "move it aside or pass --ledger PATH to use another ledger")
        }
        if rc & 0xff == SQLITE_READONLY || rc & 0xff == SQLITE_CANTOPEN {
            return FerryError(.ledger, "ledger \(path): \(msg)",
                              hint: "check the permissions of the ledger and its folder")
        }
        return FerryError(.ledger, "ledger \(path): \(what): \(msg)")
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

    var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// Runs `body` in one IMMEDIATE transaction: all of it lands, or none of it. Transactions from
    /// several threads (a sender's acknowledgement reader and its sink) take turns.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        pthread_mutex_lock(&txLock)
        defer { pthread_mutex_unlock(&txLock) }
        try execute("BEGIN IMMEDIATE")
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

    @discardableResult
    func bind(_ values: [Value]) -> Statement {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
        for (i, v) in values.enumerated() {
            let at = Int32(i + 1)
            switch v {
            case .int(let n): sqlite3_bind_int64(stmt, at, n)
            case .text(let s): sqlite3_bind_text(stmt, at, s, -1, csqlite_transient())
            case .blob(let b): b.withUnsafeBytes { _ = sqlite3_bind_blob(stmt, at, $0.baseAddress, Int32(b.count), csqlite_transient()) }
            case .null: sqlite3_bind_null(stmt, at)
            }
        }
        return self
    }

    /// Steps once; true when a row is available.
    func step() throws -> Bool {
        let rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw connection.error(rc, "step")
    }

    func run(_ values: [Value] = []) throws {
        bind(values)
        while try step() {}
    }

    func rows<T>(_ values: [Value] = [], _ map: (Statement) throws -> T) throws -> [T] {
        bind(values)
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
