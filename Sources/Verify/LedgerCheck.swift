import Chunks
import Ledger

/// The ledger checks itself before a verify trusts it: a chunk row edited to the hash of damaged
/// data, a size or count that does not fit the chunk size, or two ends of one copy that no longer
/// agree would otherwise turn a comparison into a false "OK" or nonsense ranges. Each failure is
/// a ledger error (exit 6) that names what disagrees.
enum LedgerCheck {
    static func check(_ record: ImageRecord, rows: [ChunkRow], in ledger: Ledger) throws {
        func damaged(_ what: String) -> FerryError {
            FerryError(.ledger, "ledger \(ledger.path), image \(record.id): \(what)",
                       hint: "the ledger was damaged or edited, so it cannot vouch for \(record.path); restore it from a backup, or copy the image again")
        }
        guard let size = record.size, let count = record.chunkCount else { throw damaged("no recorded size or chunk count") }
        do { try ChunkGeometry.validate(record.chunkSize) } catch { throw damaged("the chunk size \(record.chunkSize) is not one ferry writes") }
        let expected = ChunkGeometry(size: size, chunkSize: record.chunkSize).count
        guard count == expected else {
            throw damaged("\(count) chunks recorded, but \(size) bytes in chunks of \(record.chunkSize) make \(expected)")
        }
        var list = SHA256Hasher()
        for row in rows { list.update(row.digest) }
        let root = list.finalized().hex
        guard let stored = record.listRoot else { throw damaged("no recorded hash-list root") }
        guard root == stored else {
            throw damaged("the chunk rows hash to list root \(root), not the recorded \(stored): a chunk row was changed")
        }
        // The other end of the same copy, when this ledger holds it: both were recorded from one
        // stream, so they agree unless one was edited (a resend --force clears sha256 on purpose).
        if let peerId = record.peerImageId, let peer = try ledger.image(peerId), peer.complete,
           let mine = record.sha256, let theirs = peer.sha256 {
            guard mine == theirs, peer.listRoot == record.listRoot, peer.size == record.size else {
                throw damaged("it disagrees with the other end of its copy, image \(peer.id) (\(peer.path)): "
                              + (mine != theirs ? "sha256 \(mine) against \(theirs)" : peer.size != record.size
                                 ? "size \(size) against \(peer.size ?? 0)" : "list root \(stored) against \(peer.listRoot ?? "none")"))
            }
        }
    }
}
