import Foundation
import XCTest

/// The ledger checks itself before verify trusts it. A chunk row edited to the hash of damaged
/// data once made verify say OK; now the recomputed hash-list root, the size and count, and the
/// other end of the copy must all agree, or verify stops with a ledger error (exit 6) naming what.
final class LedgerTruthTests: FerryTestCase {
    /// Runs a Python snippet against the ledger with `db` (sqlite3) and `hashlib` at hand.
    private func editLedger(_ code: String, path: String? = nil) throws {
        let script = "import sqlite3, hashlib\ndb = sqlite3.connect(\(pyString(path ?? ledger)))\n" + code + "\ndb.commit()\n"
        let r = try runProcess(["/usr/bin/python3", "-c", script], in: scratch)
        XCTAssertEqual(r.status, 0, r.summary)
    }

    private func pyString(_ s: String) -> String { "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'" }

    /// A 1 MiB copy in 64K chunks with chunk 3 of the destination damaged; the destination's id.
    private func damagedCopy() throws -> (dst: String, id: Int64, chunkHash: String) {
        let src = scratch.file("src.raw"), dst = scratch.file("dst.raw")
        try writeRandom(src, size: 1 << 20, seed: 71)
        let report = try copy(src, dst, ["--chunk-size", "64K"])
        try flipByte(dst, at: 3 * 65536 + 100)
        let data = readAll(dst).subdata(in: (3 * 65536)..<(4 * 65536))
        let tmp = scratch.file("chunk3")
        try data.write(to: URL(fileURLWithPath: tmp))
        let hash = try sha256sum(tmp, in: scratch)
        return (dst, try XCTUnwrap(report.destination.imageId), hash)
    }

    func testAnEditedChunkRowIsALedgerErrorNotOK() throws {
        let (dst, id, hash) = try damagedCopy()
        XCTAssertEqual(try verify(dst).0.status, 1, "the damage is found before any edit")
        try editLedger("db.execute('UPDATE chunks SET sha256 = ? WHERE image_id = ? AND idx = 3', (bytes.fromhex('\(hash)'), \(id)))")
        let r = try ferry(["verify", dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 6, mentions: ["list root", "a chunk row was changed"])
    }

    /// Rows and root edited together still disagree with the source end of the same copy.
    func testAConsistentlyEditedRecordDisagreesWithTheOtherEnd() throws {
        let (dst, id, hash) = try damagedCopy()
        try editLedger("""
            db.execute('UPDATE chunks SET sha256 = ? WHERE image_id = ? AND idx = 3', (bytes.fromhex('\(hash)'), \(id)))
            rows = db.execute('SELECT sha256 FROM chunks WHERE image_id = ? ORDER BY idx', (\(id),)).fetchall()
            root = hashlib.sha256(b''.join(r[0] for r in rows)).hexdigest()
            db.execute('UPDATE images SET list_root = ? WHERE id = ?', (root, \(id)))
            """)
        let r = try ferry(["verify", dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 6, mentions: ["disagrees with the other end of its copy", "list root"])
    }

    /// A size that does not fit the chunk count once gave ranges like "bytes 34603008-34603007".
    func testASizeThatDoesNotFitTheChunkCountIsALedgerError() throws {
        let (dst, id, _) = try damagedCopy()
        try editLedger("db.execute('UPDATE images SET size = size + 65536 WHERE id = ?', (\(id),))")
        let r = try ferry(["verify", dst, "--progress", "none", "--ledger", ledger])
        assertRefusal(r, status: 6, mentions: ["16 chunks recorded, but 1114112 bytes in chunks of 65536 make 17"])
    }

    /// The far ledger holds only the destination's record, so it cannot catch a consistent edit
    /// by itself; this host's record of the same copy (the source's) can, and a remote verify
    /// checks the far record against it.
    func testAFarLedgerEditedToMatchDamageDisagreesWithThisHostsRecord() throws {
        let src = scratch.file("src.raw"), far = scratch.file("far.raw")
        try writeRandom(src, size: 1 << 20, seed: 72)
        let report = try copy(src, "localhost:" + far, ["--chunk-size", "64K"] + remoteOptions())
        let id = try XCTUnwrap(report.destination.imageId)
        let clean = try ferry(["verify", "localhost:" + far, "--progress", "none", "--ledger", ledger] + remoteOptions())
        XCTAssertEqual(clean.status, 0, clean.summary)
        XCTAssertTrue(clean.out.contains("the far record agrees with this host's record of the same copy"), clean.out)

        try flipByte(far, at: 3 * 65536 + 100)
        let data = readAll(far).subdata(in: (3 * 65536)..<(4 * 65536))
        let tmp = scratch.file("chunk3")
        try data.write(to: URL(fileURLWithPath: tmp))
        let hash = try sha256sum(tmp, in: scratch)
        try editLedger("""
            db.execute('UPDATE chunks SET sha256 = ? WHERE image_id = ? AND idx = 3', (bytes.fromhex('\(hash)'), \(id)))
            rows = db.execute('SELECT sha256 FROM chunks WHERE image_id = ? ORDER BY idx', (\(id),)).fetchall()
            root = hashlib.sha256(b''.join(r[0] for r in rows)).hexdigest()
            db.execute('UPDATE images SET list_root = ? WHERE id = ?', (root, \(id)))
            """, path: farLedger)
        let r = try ferry(["verify", "localhost:" + far, "--progress", "none", "--ledger", ledger] + remoteOptions())
        assertRefusal(r, status: 6, mentions: ["disagrees with this host's record of the same copy", "list root"])
    }
}
