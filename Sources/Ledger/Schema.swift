/// The ledger's schema and its migrations. `PRAGMA user_version` holds the version;
/// `PRAGMA application_id` marks the file as a ferry ledger.
enum Schema {
    static let applicationID: Int64 = 0x4652_5259  // "FRRY"
    static let version: Int64 = 5

    /// migrations[n] takes a ledger from version n to n+1.
    static let migrations: [String] = [
        """
        CREATE TABLE images(
            id INTEGER PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('source', 'destination')),
            path TEXT NOT NULL,            -- as the user gave it
            canonical TEXT NOT NULL,       -- realpath at the time of the copy
            kind TEXT NOT NULL,            -- file, block, stream
            host TEXT NOT NULL,
            size INTEGER,                  -- bytes of the image; NULL until known (stdin)
            chunk_size INTEGER NOT NULL,
            sha256 TEXT,                   -- whole-image SHA-256 (hex), set at completion
            list_root TEXT,                -- SHA-256 over the concatenated chunk digests
            chunk_count INTEGER,
            zero_chunks INTEGER NOT NULL DEFAULT 0,
            complete INTEGER NOT NULL DEFAULT 0,
            transfer_id TEXT NOT NULL,     -- shared by both ends of one copy, in both ledgers
            peer_image_id INTEGER,         -- the other end of a local copy, in this ledger
            peer TEXT,                     -- the other end as the user named it
            created_at TEXT NOT NULL,
            completed_at TEXT,
            checkpoint_chunks INTEGER NOT NULL DEFAULT 0,  -- latest checkpoint: chunks [0, n) durable
            options TEXT                   -- JSON: settings a resume must repeat
        );
        CREATE INDEX images_transfer ON images(transfer_id);
        CREATE TABLE image_names(
            name TEXT NOT NULL,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            PRIMARY KEY (name, image_id)
        ) WITHOUT ROWID;
        CREATE TABLE chunks(
            image_id INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            sha256 BLOB NOT NULL,
            zero INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (image_id, idx)
        ) WITHOUT ROWID;
        -- Resume points: chunks [0, chunks) durable at the destination, and the whole-image
        -- SHA-256 state after them. The last few are kept, so both ends of a remote copy share one.
        CREATE TABLE checkpoints(
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            chunks INTEGER NOT NULL,
            state BLOB,
            PRIMARY KEY (image_id, chunks)
        ) WITHOUT ROWID;
        CREATE TABLE runs(
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,            -- copy, verify, resend
            started_at TEXT NOT NULL,
            ended_at TEXT,
            result TEXT NOT NULL DEFAULT 'running',
            bytes_read INTEGER NOT NULL DEFAULT 0,
            bytes_written INTEGER NOT NULL DEFAULT 0,
            bytes_sent INTEGER NOT NULL DEFAULT 0,
            read_mode TEXT,
            detail TEXT                    -- JSON
        );
        CREATE INDEX runs_image ON runs(image_id);
        CREATE TABLE findings(
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            image_id INTEGER NOT NULL,
            kind TEXT NOT NULL,            -- corrupt, transient (read differently on re-reads), size, unreadable
            first_chunk INTEGER,
            last_chunk INTEGER,
            offset INTEGER,
            length INTEGER,
            detail TEXT,
            repaired_by INTEGER            -- the resend run that repaired it
        );
        CREATE INDEX findings_run ON findings(run_id);
        """,
        // 2: what a resume compares (the file's identity and times when its record was made), and
        // why a run that did not finish ended.
        """
        ALTER TABLE images ADD COLUMN stamp TEXT;  -- JSON FileStamp: device, inode, size, mtime, ctime
        ALTER TABLE runs ADD COLUMN error TEXT;    -- the error that ended a failed or interrupted run
        ALTER TABLE runs ADD COLUMN pid INTEGER;   -- the process running it, to name who holds a claim
        ALTER TABLE images ADD COLUMN medium TEXT; -- JSON Medium: what is behind a block device (loop file, disk serial)
        """,
        // 3: byte ranges the source could not read at copy time (`--on-read-error=record`); the
        // chunks holding them were recorded with zeros in their place.
        """
        CREATE TABLE unreadable(
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            offset INTEGER NOT NULL,
            length INTEGER NOT NULL,
            PRIMARY KEY (image_id, offset)
        ) WITHOUT ROWID;
        """,
        // 4: the ZFS snapshot a copy took of its destination (or why it took none), and what
        // became of it.
        """
        ALTER TABLE images ADD COLUMN snapshot TEXT;  -- JSON SnapshotRecord
        -- 1 once a resend filled unreadable ranges: the next full read whose every chunk matches
        -- computes the whole-image SHA-256 (never over zeros, never after resend --force).
        ALTER TABLE images ADD COLUMN digest_pending INTEGER NOT NULL DEFAULT 0;
        """,
        // 5: a source read through a container format (VDI, qcow2, ...) or an NBD server.
        """
        ALTER TABLE images ADD COLUMN container TEXT;  -- JSON ContainerRecord
        """,
    ]
}
