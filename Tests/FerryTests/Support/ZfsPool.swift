import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A real ZFS pool for the tests: zfs-fuse's daemon (started here when it is not running) and a
/// pool on a sparse file in the test's scratch folder, with a dataset `vms` (compression off,
/// so damage beneath it can be placed by searching the pool file for the image's bytes).
/// zfs-fuse has datasets, snapshots and clones, but no zvols and no .zfs directories.
final class ZfsPool {
    let name: String
    let file: String
    let mountpoint: String
    private let scratch: Scratch
    private var daemon: Background?
    private var created = false

    /// The dataset holding test images, and where it is mounted.
    var dataset: String { name + "/vms" }
    var folder: String { mountpoint + "/vms" }

    init(in scratch: Scratch) throws {
        self.scratch = scratch
        guard geteuid() == 0, exists("/dev/fuse"), FileManager.default.isExecutableFile(atPath: "/usr/sbin/zfs-fuse") else {
            try skipUnlessRequired("no ZFS here (needs root, /dev/fuse and Debian's zfs-fuse; `make test-deps`)")
        }
        name = "ferrytest\(getpid())x\(Int.random(in: 1000...9999))"
        file = scratch.file("pool.img")
        mountpoint = scratch.file("pool")
        if try runProcess(["/usr/sbin/zpool", "list", "-H"], in: scratch).status != 0 {
            // No daemon answering: start one for this test (it forks; -n keeps it in the foreground).
            daemon = try start(["/usr/sbin/zfs-fuse", "-n", "--no-kstat-mount", "-p", scratch.file("zfs-fuse.pid")], in: scratch)
            for _ in 0..<100 {
                if try runProcess(["/usr/sbin/zpool", "list", "-H"], in: scratch).status == 0 { break }
                usleep(100_000)
            }
        }
        _ = FileManager.default.createFile(atPath: file, contents: nil)
        try FileHandle(forWritingAtPath: file)!.truncate(atOffset: 512 << 20)
        try zpool(["create", "-f", "-m", mountpoint, name, file])
        created = true
        try zfs(["create", "-o", "compression=off", "-o", "recordsize=128K", dataset])
    }

    @discardableResult
    func zfs(_ args: [String]) throws -> String {
        let r = try runProcess(["/usr/sbin/zfs"] + args, in: scratch)
        guard r.status == 0 else { throw Failure("zfs \(args.joined(separator: " ")): \(r.summary)") }
        return r.out
    }

    @discardableResult
    func zpool(_ args: [String]) throws -> String {
        let r = try runProcess(["/usr/sbin/zpool"] + args, in: scratch)
        guard r.status == 0 else { throw Failure("zpool \(args.joined(separator: " ")): \(r.summary)") }
        return r.out
    }

    /// Every dataset, snapshot and clone of the pool.
    func names() throws -> [String] {
        try zfs(["list", "-H", "-t", "all", "-o", "name", "-r", name]).split(separator: "\n").map(String.init)
    }

    /// Exports and imports the pool: nothing of it stays cached in memory.
    func reimport() throws {
        try zpool(["export", name])
        try zpool(["import", "-d", (file as NSString).deletingLastPathComponent, name])
    }

    func destroy() {
        if created { _ = try? runProcess(["/usr/sbin/zpool", "destroy", "-f", name], in: scratch) }
        created = false
        if let daemon {
            daemon.signal(SIGTERM)
            _ = daemon.wait(timeout: 20)
        }
        daemon = nil
    }

    deinit { destroy() }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }
}
