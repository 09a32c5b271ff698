import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A disk with unreadable sectors, served by a small FUSE file system (Tests/Fixtures/badsectors.py)
/// over an image file: reads of chosen byte ranges fail with a real kernel EIO until the range is
/// written again or `setBad` changes them (a disk that reads after cooling, or fails elsewhere).
/// Mounted under the test's scratch folder; `unmount` (or the test's tearDown) takes it away.
final class BadSectorDisk {
    let image: String
    let mountPoint: String
    private let fuse: Background
    private let scratch: Scratch
    private var mounted = true

    /// The file the rest of the test reads and writes.
    var path: String { mountPoint + "/disk.raw" }

    /// Mounts `image` at `scratch/name` with reads of `bad` failing and each byte at `flips`
    /// read back inverted every other time; skips the test (or fails it under
    /// FERRY_REQUIRE_ALL=1) where FUSE is not available.
    init(image: String, bad: [Range<Int>], flips: [Int] = [], in scratch: Scratch, name: String = "mnt") throws {
        let probe = try runProcess(["/usr/bin/python3", "-c", "import fusepy"], in: scratch)
        guard probe.status == 0, exists("/dev/fuse") else {
            try skipUnlessRequired("FUSE is not available (Debian's python3-fusepy for /usr/bin/python3, libfuse2, /dev/fuse; `make test-deps`): \(probe.summary)")
        }
        self.image = image
        self.scratch = scratch
        mountPoint = scratch.file(name)
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        fuse = try start(["/usr/bin/python3", TestPaths.fixture("badsectors.py"), image, mountPoint]
                         + bad.map { "\($0.lowerBound):\($0.upperBound)" } + flips.map { "flip:\($0)" }, in: scratch)
        for _ in 0..<200 where !exists(mountPoint + "/disk.raw") { usleep(25_000) }
        guard exists(mountPoint + "/disk.raw") else {
            let why = fuse.wait(timeout: 5).summary
            try skipUnlessRequired("the FUSE file system did not come up: \(why)")
        }
    }

    /// From the next read on, exactly `bad` fails (empty: the whole disk reads again).
    func setBad(_ bad: [Range<Int>]) throws {
        try bad.map { "\($0.lowerBound):\($0.upperBound)" }.joined(separator: " ")
            .write(toFile: image + ".bad", atomically: true, encoding: .utf8)
    }

    /// Reads that failed so far: (offset, size) of each, as the file system saw them.
    var failedReads: [(offset: Int, size: Int)] {
        guard let text = try? String(contentsOfFile: image + ".failed-reads", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ").compactMap { Int($0) }
            return f.count == 2 ? (f[0], f[1]) : nil
        }
    }

    func unmount() {
        guard mounted else { return }
        mounted = false
        _ = try? runProcess(["/usr/bin/env", "umount", mountPoint], in: scratch)
        fuse.signal(SIGTERM)
        _ = fuse.wait(timeout: 10)
    }

    deinit { unmount() }
}
