import ArgumentParser
import Chunks
import Foundation
import Ledger

private func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}

struct LedgerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger",
        abstract: "Show what the ledger knows: images, chunk hashes, runs and findings.",
        discussion: """
            The ledger is one SQLite file per host (see ferry(1)). Each copy records the source \
            and the destination image (path as given, canonical path, stable device names, size, \
            chunk size, whole-image SHA-256, hash-list root, role, completion), every chunk's \
            SHA-256, and every copy, verify and resend run with its findings.

            EXAMPLES:
              ferry ledger list
              ferry ledger show 2 --json
              ferry ledger export 2 > vm-100.sha256list
              ferry ledger release 2 --yes     # destroy the ZFS snapshot the copy took
              ferry ledger forget 2 --yes
            """,
        subcommands: [List.self, Show.self, Export.self, Release.self, Forget.self]
    )

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the recorded images.")
        @Flag(name: .long, help: "Print JSON.") var json = false
        @OptionGroup var ledgerOptions: LedgerOptions

        func run() throws {
            try reporting {
                let images = try ledgerOptions.open(create: false).images()
                if json { Output.stdout(Output.json(images)); return .ok }
                Output.stdout("ID  ROLE         STATE       SIZE          CHUNK   SHA256            PATH")
                for i in images {
                    let state = i.complete ? "complete" : "incomplete"
                    let size = i.size.map { Output.bytes($0) } ?? "?"
                    let sha = i.sha256.map { String($0.prefix(16)) } ?? "-"
                    let chunk = Output.bytes(UInt64(i.chunkSize)).replacingOccurrences(of: ".00 ", with: "")
                    Output.stdout(pad("\(i.id)", 4) + pad(i.role.rawValue, 13) + pad(state, 12) + pad(size, 14)
                                  + pad(chunk, 8) + pad(sha, 18) + Output.printable(i.host + ":" + i.path))
                }
                return .ok
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one image: its record, runs and latest findings.")
        @Argument(help: ArgumentHelp("Image id (from `ferry ledger list`).", valueName: "id")) var id: Int64
        @Flag(name: .long, help: "Print JSON.") var json = false
        @OptionGroup var ledgerOptions: LedgerOptions

        struct Shown: Encodable {
            var image: ImageRecord
            var peer: ImageRecord?
            var runs: [RunWithFindings]
            /// Ranges the source could not read at copy time and no resend has filled.
            var unreadable: [ByteRange]
        }
        struct RunWithFindings: Encodable {
            var run: RunRecord
            var findings: [Finding]
        }

        func run() throws {
            try reporting {
                let ledger = try ledgerOptions.open(create: false)
                let image = try ledger.requireImage(id)
                let runs = try ledger.runs(image: id).map { RunWithFindings(run: $0, findings: try ledger.findings(run: $0.id)) }
                let peer = try image.peerImageId.flatMap { try ledger.image($0) }
                let unreadable = try ledger.unreadable(image: id)
                if json {
                    Output.stdout(Output.json(Shown(image: image, peer: peer, runs: runs, unreadable: unreadable)))
                    return .ok
                }
                var lines = [
                    "image \(image.id) (\(image.role.rawValue), \(image.complete ? "complete" : "incomplete"))",
                    "  path        \(Output.printable(image.path))",
                    "  canonical   \(Output.printable(image.canonical))",
                    "  host        \(image.host)",
                    "  kind        \(image.kind.rawValue)",
                    "  size        \(image.size.map { "\($0) bytes (\(Output.bytes($0)))" } ?? "unknown")",
                    "  chunk size  \(image.chunkSize) (\(image.chunkCount.map(String.init) ?? "?") chunks, \(image.zeroChunks) zero)",
                    "  sha256      \(image.sha256 ?? (unreadable.isEmpty ? "-" : "- (some source bytes were unreadable)"))",
                    "  list root   \(image.listRoot ?? "-")",
                    "  transfer    \(image.transferId)",
                    "  created     \(image.createdAt)" + (image.completedAt.map { ", completed \($0)" } ?? ""),
                ]
                if let c = image.container {
                    lines.append(c.format == "nbd" ? "  format      an NBD export, read through its server"
                                 : "  format      the disk inside a \(c.format) container"
                                   + (c.fileSize.map { " (the file: \(Output.bytes($0))" } ?? " (")
                                   + (c.allocatedBytes.map { ", \(Output.bytes($0)) allocated)" } ?? ")"))
                }
                if !image.complete { lines.append("  checkpoint  \(image.checkpointChunks) chunks durable") }
                if let snap = image.snapshot {
                    if let name = snap.name {
                        lines.append("  snapshot    \(name) (guid \(snap.guid ?? "?"), taken \(snap.takenAt ?? "?"))"
                                     + (snap.releasedAt.map { ", released \($0)" } ?? ""))
                    } else {
                        lines.append("  snapshot    none on \(snap.dataset): \(Output.printable(snap.error ?? "?"))")
                    }
                }
                if let peer { lines.append("  other end   image \(peer.id): \(Output.printable(peer.path))") }
                else if let p = image.peer { lines.append("  other end   \(Output.printable(p))") }
                if image.names.count > 1 { lines.append("  names       " + image.names.map(Output.printable).joined(separator: "\n              ")) }
                if !unreadable.isEmpty {
                    let g = ChunkGeometry(size: image.size ?? 0, chunkSize: image.chunkSize)
                    lines.append("  unreadable  \(unreadable.count) range(s), \(Output.bytes(ByteRange.total(unreadable))): the source could not read them at copy time; zeros stand there, and the hashes of the chunks holding them cover those zeros (incomplete chunks)")
                    for r in unreadable {
                        let first = Int(r.offset / UInt64(image.chunkSize)), last = Int((r.end - 1) / UInt64(image.chunkSize))
                        lines.append("              \(r) (\(Output.bytes(r.length))), " + (first == last ? "chunk \(first)" : "chunks \(first)-\(last)")
                            + (last >= g.count ? " (past the end)" : ""))
                    }
                }
                for r in runs {
                    var parts: [String] = []
                    if r.run.bytesRead > 0 || r.run.kind == .verify {
                        parts.append("read \(Output.bytes(r.run.bytesRead))" + (r.run.readMode.map { " (\($0))" } ?? ""))
                    }
                    if r.run.bytesWritten > 0 { parts.append("wrote \(Output.bytes(r.run.bytesWritten))") }
                    if r.run.bytesSent > 0 { parts.append("sent \(Output.bytes(r.run.bytesSent))") }
                    // A verify names what it read: the snapshot (with its guid) or the live image.
                    struct Read: Decodable { struct From: Decodable { var kind: String; var snapshot: String? }; var readFrom: From?; var snapshotGuid: String? }
                    if r.run.kind == .verify, let d = r.run.detail, let read = try? JSONDecoder().decode(Read.self, from: Data(d.utf8)),
                       let from = read.readFrom {
                        parts.append(from.snapshot.map { "of \($0)" + (read.snapshotGuid.map { " (guid \($0))" } ?? "") } ?? "of the \(from.kind) image")
                    }
                    lines.append("run \(r.run.id): \(r.run.kind.rawValue) \(r.run.result.rawValue), \(r.run.startedAt) - \(r.run.endedAt ?? "(unfinished)")"
                        + (parts.isEmpty ? "" : ", " + parts.joined(separator: ", ")))
                    if let error = r.run.error { lines.append("  error: \(Output.printable(error))") }
                    for f in r.findings {
                        lines.append("  \(f.kind.rawValue): bytes \(f.offset)+\(f.length), chunks \(f.firstChunk)-\(f.lastChunk)"
                            + (f.repairedBy.map { ", repaired by run \($0)" } ?? "") + (f.detail.map { " (\($0))" } ?? ""))
                    }
                }
                Output.stdout(lines.joined(separator: "\n"))
                return .ok
            }
        }
    }

    /// The image fields of `ledger export --json`, before its chunks.
    struct ExportHead: Encodable {
        var image: Int64
        var path: String
        var host: String
        var role: String
        var complete: Bool
        var size: UInt64?
        var chunkSize: Int
        var sha256: String?
        var listRoot: String?
        var unreadable: [ByteRange]
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print an image's hash list: OFFSET LENGTH SHA256, one chunk a line (--json: one object).")
        @Argument(help: ArgumentHelp("Image id.", valueName: "id")) var id: Int64
        @Flag(name: .long, help: "Print one JSON object: the image's size, chunk size, digests and every chunk (index, offset, length, sha256, zero).") var json = false
        @OptionGroup var ledgerOptions: LedgerOptions

        func run() throws {
            try reporting(json: json) {
                let ledger = try ledgerOptions.open(create: false)
                let image = try ledger.requireImage(id)
                let geometry = ChunkGeometry(size: image.size ?? 0, chunkSize: image.chunkSize)
                var out = ""
                out.reserveCapacity(1 << 16)
                if json {
                    // Streamed, not built whole: a 2 TB image at 64K chunks has 32 million rows.
                    let head = ExportHead(image: image.id, path: image.path, host: image.host, role: image.role.rawValue,
                                          complete: image.complete, size: image.size, chunkSize: image.chunkSize,
                                          sha256: image.sha256, listRoot: image.listRoot,
                                          unreadable: try ledger.unreadable(image: id))
                    out = String(Output.json(head).dropLast()) + ",\"chunks\":["
                }
                var first = true
                for row in try ledger.chunks(image: id) {
                    let offset = geometry.offset(of: row.index), length = geometry.length(of: row.index)
                    if json {
                        out += (first ? "" : ",") + "{\"index\":\(row.index),\"length\":\(length),\"offset\":\(offset),\"sha256\":\"\(row.digest.hex)\",\"zero\":\(row.zero)}"
                        first = false
                    } else {
                        out += "\(offset) \(length) \(row.digest.hex)\n"
                    }
                    if out.utf8.count > 1 << 16 { Console.out(out); out = "" }
                }
                Console.out(out + (json ? "]}\n" : ""))
                return .ok
            }
        }
    }
}
