import Chunks
import Copy
import Foundation
import Ledger
import Wire

/// The receiving end's last steps, shared by the client (pull) and `ferry serve` (push).
enum Receiving {
    struct Outcome {
        var result: TransferResult
        var match: Bool
    }

    /// Checks the sender's End against what arrived; only when the sender's whole-image digest
    /// equals the one computed over the written bytes is the image made durable and marked
    /// complete. A mismatch leaves it incomplete: the ledger never vouches for it.
    static func finish(receiver: WireReceiver, destination: DestinationWriter, ledger: Ledger, result: PumpResult,
                       start: Int, transferId: String) throws -> Outcome {
        guard let end = receiver.end else { throw FerryError(.wire, "the copy ended without the sender's End frame") }
        let size = UInt64(start) * UInt64(destination.chunkSize) + result.bytes
        guard end.size == size else {
            throw FerryError(.remote, "the sender says it sent \(end.size) bytes but \(size) arrived",
                             hint: "the destination was not marked complete; run the copy again with --resume")
        }
        let digest = result.wholeDigest!
        let match = end.sha256 == digest.hex
        let run = destination.copyRun
        let root: Digest
        if match {
            root = try destination.complete(ledger: ledger, size: size, digest: digest)
        } else {
            try destination.sync()
            root = destination.listRoot ?? .zero
        }
        let chunks = ChunkGeometry(size: size, chunkSize: destination.chunkSize).count
        var r = TransferResult(host: ledger.host, ledger: ledger.path, imageId: destination.imageId, size: size,
                               sha256: digest.hex, listRoot: root.hex, chunks: chunks,
                               zeroChunks: destination.zeroChunks)
        r.bytesWritten = destination.bytesWritten
        r.retransmissions = receiver.retransmissions
        r.zeroFrames = receiver.zeroFrames
        r.io = destination.file?.mode.rawValue
        if let run, let id = destination.imageId {
            try ledger.finishRun(run, image: id, Ledger.RunEnd(
                result: match ? .ok : .mismatch, bytesWritten: destination.bytesWritten,
                readMode: destination.file?.mode.rawValue,
                detail: RemoteCopy.detail(transferId: transferId, resumedFrom: start, retransmissions: receiver.retransmissions,
                                          zeroFrames: receiver.zeroFrames, farDigest: end.sha256)))
        }
        return Outcome(result: r, match: match)
    }
}
