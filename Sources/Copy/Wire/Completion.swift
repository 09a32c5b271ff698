import Chunks
import Foundation
import Ledger
import Wire

/// The last steps of a remote copy, one path per end, shared by the client and `ferry serve`.
public enum Completion {
    public struct Received {
        public var result: TransferResult
        public var match: Bool
    }

    /// Checks the sender's End against what arrived; only when the sender's whole-image digest
    /// equals the one computed over the written bytes is the image made durable and marked
    /// complete. A mismatch leaves it incomplete: the ledger never vouches for it.
    public static func receiving(receiver: WireReceiver, destination: DestinationWriter, ledger: Ledger, result: PumpResult,
                                 start: Int, transferId: String) throws -> Received {
        guard let end = receiver.end else { throw FerryError(.wire, "the copy ended without the sender's End frame") }
        let size = UInt64(start) * UInt64(destination.chunkSize) + result.bytes
        guard end.size == size else {
            throw FerryError(.remote, "the sender says it sent \(end.size) bytes but \(size) arrived",
                             hint: "the destination was not marked complete; run the copy again with --resume")
        }
        let digest = result.wholeDigest!
        let unreadable = ByteRange.total(destination.unreadable)
        guard (end.unreadableBytes ?? 0) == unreadable else {
            throw FerryError(.wire, "the sender says \(end.unreadableBytes ?? 0) bytes were unreadable but \(unreadable) arrived marked so",
                             hint: "the destination was not marked complete; run the copy again with --resume")
        }
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
        r.unreadableBytes = unreadable > 0 ? unreadable : nil
        r.snapshot = destination.snapshot?.name
        r.snapshotError = destination.snapshot?.error
        r.bytesWritten = destination.bytesWritten
        r.retransmissions = receiver.retransmissions
        r.zeroFrames = receiver.zeroFrames
        r.io = destination.file?.mode.rawValue
        if let run, let id = destination.imageId {
            try ledger.finishRun(run, image: id, Ledger.RunEnd(
                result: match ? (unreadable > 0 ? .incomplete : .ok) : .mismatch, bytesWritten: destination.bytesWritten,
                readMode: destination.file?.mode.rawValue,
                detail: CopyRunDetail(transferId: transferId, resumedFrom: start, retransmissions: receiver.retransmissions,
                                      zeroFrames: receiver.zeroFrames, farSha256: end.sha256).json))
        }
        return Received(result: r, match: match)
    }

    public struct Sent {
        public var size: UInt64
        public var digest: Digest
        public var listRoot: Digest
        /// The receiver computed the same size, whole-image SHA-256 and list root.
        public var match: Bool
    }

    /// The sending end's last step, after the receiver's result: the source record is complete
    /// (it was read to the end), and its run says whether the far end agrees.
    public static func sending(sender: WireSender, source: SourceReader, ledger: Ledger, result: PumpResult, start: Int,
                               far: TransferResult, transferId: String, bytesSent: UInt64) throws -> Sent {
        let size = UInt64(start) * UInt64(source.chunkSize) + result.bytes
        let digest = result.wholeDigest!
        let root = try source.complete(ledger: ledger, size: size, digest: digest)
        let unreadable = ByteRange.total(source.unreadable)
        let match = far.sha256 == digest.hex && far.listRoot == root.hex && far.size == size && (far.unreadableBytes ?? 0) == unreadable
        if let run = source.copyRun, let id = source.imageId {
            try ledger.finishRun(run, image: id, Ledger.RunEnd(
                result: match ? (unreadable > 0 ? .incomplete : .ok) : .mismatch, bytesRead: source.bytesRead, bytesSent: bytesSent,
                readMode: source.file.mode.rawValue,
                detail: CopyRunDetail(transferId: transferId, resumedFrom: start, retransmissions: sender.retransmissions,
                                      zeroFrames: sender.zeroFrames, farSha256: far.sha256).json))
        }
        return Sent(size: size, digest: digest, listRoot: root, match: match)
    }
}
