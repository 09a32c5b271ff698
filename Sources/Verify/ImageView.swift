import Chunks
import Foundation
import Glibc
import Ledger
import ZFS

/// Where a verify read the image from.
public struct ReadFrom: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// The ZFS snapshot the copy took, read in place (a zvol's snapshot device, a dataset's
        /// .zfs/snapshot directory).
        case snapshot
        /// The image as it is now (no snapshot, or `--live`).
        case live
        /// A temporary read-only clone of the snapshot, destroyed after the read.
        case clone
    }
    public var kind: Kind
    public var path: String
    public var snapshot: String?
    public init(kind: Kind, path: String, snapshot: String? = nil) { (self.kind, self.path, self.snapshot) = (kind, path, snapshot) }
}

/// The image a record describes, made readable: the live path, or the ZFS snapshot the copy
/// took. A snapshot is the exact image the ledger describes while the guest writes to the live
/// one, so a verify reads it unless told `--live`. What was changed to read it (a zvol's
/// `snapdev`, a clone) is put back by `close()`.
final class ImageView {
    let readFrom: ReadFrom
    /// The snapshot's guid, checked against the record, when one is read.
    let guid: String?
    private var undo: [() -> Void] = []

    private init(readFrom: ReadFrom, guid: String?) { (self.readFrom, self.guid) = (readFrom, guid) }

    deinit { close() }

    func close() {
        while let step = undo.popLast() { step() }
    }

    static func open(target: String, record: ImageRecord, live: Bool) throws -> ImageView {
        guard !live, let snap = record.snapshot, snap.held, let name = snap.name else {
            return ImageView(readFrom: ReadFrom(kind: .live, path: target), guid: nil)
        }
        let found: ZFS.Snapshot?
        do {
            found = try ZFS.describe(name)
        } catch {
            throw FerryError(.io, "cannot look up the snapshot \(name) that image \(record.id) was copied into: \(error)",
                             hint: "run as root where the zfs command works, or verify the live image on purpose with --live")
        }
        guard let found else {
            throw FerryError(.notFound, "the snapshot \(name) of image \(record.id) is gone: the image as copied can no longer be read",
                             hint: "verify the live image on purpose with --live (differences may then be the guest's writes, not damage), or copy again")
        }
        guard found.guid == snap.guid else {
            throw FerryError(.refused, "\(name) is not the snapshot the copy took: its guid is \(found.guid), the ledger recorded \(snap.guid ?? "?") (it was destroyed and taken again)",
                             hint: "verify the live image on purpose with --live, or copy again; nothing was read")
        }
        let view: ImageView
        if record.kind == .blockDevice {
            view = try zvolSnapshot(name, dataset: snap.dataset, guid: found.guid)
        } else {
            view = try fileSnapshot(name, dataset: snap.dataset, relative: snap.relative, canonical: record.canonical, guid: found.guid)
        }
        return view
    }

    /// A zvol's snapshot device, made visible for the run when the volume hides them.
    private static func zvolSnapshot(_ name: String, dataset: String, guid: String) throws -> ImageView {
        let device = ZFS.snapshotDevice(name)
        let view = ImageView(readFrom: ReadFrom(kind: .snapshot, path: device, snapshot: name), guid: guid)
        let snapdev = (try? ZFS.propertyWithSource("snapdev", of: dataset)) ?? (value: "hidden", source: "default")
        if snapdev.value != "visible" {
            do { try ZFS.setProperty("snapdev", "visible", on: dataset) } catch {
                throw FerryError(.io, "cannot make the snapshot devices of \(dataset) visible: \(error)",
                                 hint: "run as root, or verify the live volume on purpose with --live")
            }
            // Put back as it was: set locally, or inherited again.
            view.undo.append { try? ZFS.restoreProperty("snapdev", value: snapdev.value, source: snapdev.source, on: dataset) }
        }
        for _ in 0..<200 where access(device, F_OK) != 0 { usleep(50_000) }
        guard access(device, F_OK) == 0 else {
            view.close()
            throw FerryError(.notFound, "the snapshot device \(device) did not appear within 10 s",
                             hint: "check udev, or verify the live volume on purpose with --live")
        }
        return view
    }

    /// The file inside the snapshot: through the dataset's .zfs/snapshot directory where there
    /// is one, else a temporary read-only clone mounted in a private directory.
    private static func fileSnapshot(_ name: String, dataset: String, relative recorded: String?, canonical: String,
                                     guid: String) throws -> ImageView {
        let mountinfo = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        // Where the file is inside the dataset: recorded at copy time (older records: from its path).
        let relative: String
        if let recorded {
            relative = recorded
        } else {
            guard let mountpoint = ZFS.mountpoint(of: dataset, mountinfo: mountinfo),
                  canonical.hasPrefix(mountpoint == "/" ? "/" : mountpoint + "/") else {
                throw FerryError(.refused, "\(canonical) is not inside \(dataset) as it is mounted now, where the snapshot was taken",
                                 hint: "verify the live image on purpose with --live")
            }
            relative = mountpoint == "/" ? String(canonical.dropFirst()) : String(canonical.dropFirst(mountpoint.count + 1))
        }
        let short = String(name.drop { $0 != "@" }.dropFirst())
        // The dataset's own .zfs directory, only where the dataset itself is mounted there.
        if let mountpoint = ZFS.mountpoint(of: dataset, mountinfo: mountinfo) {
            let inPlace = "\(mountpoint == "/" ? "" : mountpoint)/.zfs/snapshot/\(short)/\(relative)"
            if access(inPlace, R_OK) == 0 {
                return ImageView(readFrom: ReadFrom(kind: .snapshot, path: inPlace, snapshot: name), guid: guid)
            }
        }
        for stale in ZFS.sweepStaleClones(of: name) {
            Console.err("ferry: note: destroyed \(stale), a clone of \(name) that a verify killed earlier left behind\n")
        }
        var template = Array("/tmp/ferry-verify-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw FerryError.syscall("cannot create a folder for the clone of", path: name)
        }
        let dir = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let clone = ZFS.cloneName(of: name, pid: getpid())
        let view = ImageView(readFrom: ReadFrom(kind: .clone, path: dir + "/" + relative, snapshot: name), guid: guid)
        view.undo.append { rmdir(dir) }
        if (try? ZFS.describe(clone)) != nil {
            // Left by a killed verify of this process id: ferry's own clone of this snapshot is
            // destroyed; anything else by that name is not ferry's to touch.
            guard ZFS.isFerryClone(clone, of: name) else {
                view.close()
                throw FerryError(.refused, "\(clone) exists and is not a clone ferry made of \(name)",
                                 hint: "rename or destroy it, or verify the live image on purpose with --live")
            }
            try? ZFS.destroy(clone, force: true)
        }
        // Undone even when the clone command fails half way (created, then not mounted).
        view.undo.append {
            guard ZFS.isFerryClone(clone, of: name) else { return }
            // The file system lets go of a clone's mount a moment after its last file is closed.
            var last: (any Error)?
            for _ in 0..<40 {
                do { try ZFS.destroy(clone, force: true); return } catch { last = error }
                usleep(250_000)
            }
            Console.err("ferry: warning: the temporary clone \(clone) could not be destroyed (\(last.map { "\($0)" } ?? "?")); destroy it with `zfs destroy \(clone)`\n")
        }
        do { try ZFS.clone(name, as: clone, mountpoint: dir) } catch {
            view.close()
            throw FerryError(.io, "cannot clone \(name) to read it: \(error)",
                             hint: "run as root with room in the pool for a clone, or verify the live image on purpose with --live")
        }
        return view
    }
}
