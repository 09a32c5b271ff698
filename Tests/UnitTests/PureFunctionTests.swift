import Chunks
import Copy
import NBD
import Glibc
import Peer
import Verify
import Wire
import XCTest

/// Table tests for the pure parts: argument parsing, the remote command line, frame codecs,
/// sizes, range coalescing, container detection, and the saved SHA-256 state.
final class PureFunctionTests: XCTestCase {
    func testLocationParsing() {
        XCTAssertEqual(Location.parse("/dev/nbd0"), .local("/dev/nbd0"))
        XCTAssertEqual(Location.parse("disk.raw"), .local("disk.raw"))
        XCTAssertEqual(Location.parse("-"), .local("-"))
        XCTAssertEqual(Location.parse("./a:b"), .local("./a:b"))
        XCTAssertEqual(Location.parse("dir/a:b"), .local("dir/a:b"))
        XCTAssertEqual(Location.parse("root@pve:/dev/zvol/rpool/data/vm-100-disk-0"),
                       .remote(host: "root@pve", path: "/dev/zvol/rpool/data/vm-100-disk-0"))
        XCTAssertEqual(Location.parse("old:srv/disk.raw"), .remote(host: "old", path: "srv/disk.raw"))
        XCTAssertEqual(Location.parse("host:"), .remote(host: "host", path: "."))
    }

    func testRemoteCommandQuotesEverythingItPasses() throws {
        XCTAssertEqual(try RemoteSettings().command(host: "root@pve"),
                       ["ssh", "-o", "Compression=no", "root@pve", "ferry serve"])
        XCTAssertEqual(try RemoteSettings(remoteFerry: "/opt/my ferry/bin/ferry").command(host: "h"),
                       ["ssh", "-o", "Compression=no", "h", "'/opt/my ferry/bin/ferry' serve"])
        XCTAssertEqual(try RemoteSettings(remoteFerry: "/x/it's;rm -rf $HOME").command(host: "h").last,
                       "'/x/it'\\''s;rm -rf $HOME' serve")
        XCTAssertEqual(try RemoteSettings(rsh: ["ssh", "-p", "2222"]).command(host: "h", extraSSHOptions: ["-o", "X=1"]),
                       ["ssh", "-p", "2222", "h", "ferry serve"], "a user's --rsh is used as given")
        XCTAssertEqual(try RemoteSettings().command(host: "h", extraSSHOptions: ["-o", "X=1"]),
                       ["ssh", "-o", "Compression=no", "-o", "X=1", "h", "ferry serve"])
        XCTAssertThrowsError(try RemoteSettings().command(host: "-oProxyCommand=evil"))
        XCTAssertEqual(RemoteSettings.splitWords("ssh -p 2222 -i '/my keys/id' -o \"A=b c\""),
                       ["ssh", "-p", "2222", "-i", "/my keys/id", "-o", "A=b c"])
    }

    func testChunkHeaderRoundTrip() throws {
        let d = Digest.sha256(Array("chunk".utf8))
        let h = ChunkHeader(index: 123_456_789, flags: [.zero, .resent], digest: d, rawLength: 1 << 20, offset: 9_999_999_999)
        var bytes = [UInt8]()
        h.encode(into: &bytes)
        XCTAssertEqual(bytes.count, ChunkHeader.size)
        XCTAssertEqual(try bytes.withUnsafeBytes { try ChunkHeader.decode($0) }, h)
        XCTAssertThrowsError(try bytes.dropLast().withUnsafeBytes { try ChunkHeader.decode(UnsafeRawBufferPointer($0)) })
    }

    func testUnreadableRangesRoundTripAndStayInsideTheirChunk() throws {
        let window: (UInt64) throws -> Range<UInt64> = { c in (c * 65536)..<(c * 65536 + 65536) }
        let good = UnreadableRanges(chunk: 3, ranges: [ByteRange(offset: 3 * 65536, length: 512), ByteRange(offset: 3 * 65536 + 4096, length: 61440)])
        XCTAssertEqual(try UnreadableRanges.decode(good.encode(), window: window), good)
        let bad: [(UnreadableRanges, String)] = [
            (UnreadableRanges(chunk: 3, ranges: [ByteRange(offset: 2 * 65536, length: 512)]), "before its chunk"),
            (UnreadableRanges(chunk: 3, ranges: [ByteRange(offset: 3 * 65536 + 65024, length: 1024)]), "past its chunk"),
            (UnreadableRanges(chunk: 3, ranges: [ByteRange(offset: 3 * 65536, length: 0)]), "empty"),
            (UnreadableRanges(chunk: 3, ranges: [ByteRange(offset: 3 * 65536 + 512, length: 512), ByteRange(offset: 3 * 65536, length: 512)]), "out of order"),
            (UnreadableRanges(chunk: 3, ranges: [ByteRange(offset: 3 * 65536, length: 1024), ByteRange(offset: 3 * 65536 + 512, length: 512)]), "overlapping"),
            (UnreadableRanges(chunk: 3, ranges: [ByteRange(offset: UInt64.max - 10, length: 20)]), "wrapping"),
        ]
        for (frame, what) in bad {
            XCTAssertThrowsError(try UnreadableRanges.decode(frame.encode(), window: window), what)
        }
        XCTAssertThrowsError(try UnreadableRanges.decode(Array(good.encode().dropLast()), window: window), "cut short")
        XCTAssertThrowsError(try UnreadableRanges.decode(Array(good.encode().prefix(8)), window: window), "no range")
        XCTAssertEqual(ByteRange.merged([ByteRange(offset: 10, length: 5), ByteRange(offset: 0, length: 10), ByteRange(offset: 20, length: 1)]),
                       [ByteRange(offset: 0, length: 15), ByteRange(offset: 20, length: 1)])
        XCTAssertEqual(ByteRange.clipped([ByteRange(offset: 0, length: 100)], to: 50..<60), [ByteRange(offset: 50, length: 10)])
    }

    func testSubBlockDigestsRoundTripAndRejectsGarbage() throws {
        let s = SubBlockDigests(chunk: 7, blockSize: 65536, digests: [Digest.sha256([1]), .zero, Digest.sha256([2])])
        XCTAssertEqual(try SubBlockDigests.decode(s.encode()), s)
        XCTAssertThrowsError(try SubBlockDigests.decode(Array(s.encode().dropLast())))
        XCTAssertThrowsError(try SubBlockDigests.decode([1, 2, 3]))
    }

    /// Random and truncated byte streams must produce an error, never a crash or a hang.
    func testFrameParserFuzz() throws {
        var rng = SystemRandomNumberGenerator()
        for round in 0..<300 {
            var fds: [Int32] = [0, 0]
            XCTAssertEqual(pipe(&fds), 0)
            let n = Int.random(in: 0..<600, using: &rng)
            var junk = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if round % 3 == 0 && junk.count > 5 { junk[0] = 0; junk[1] = 0; junk[2] = 0 }   // small lengths
            if round % 5 == 0 && junk.count > 5 { junk[4] = FrameType.chunk.rawValue }
            _ = junk.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
            close(fds[1])
            let c = Connection(input: fds[0], output: -1, peerName: "fuzz")
            let buffer = AlignedBuffer(capacity: 1 << 20)
            do {
                for _ in 0..<50 {
                    switch try c.receive() {
                    case .chunk(_, let len):
                        guard len <= buffer.capacity else { throw FerryError(.wire, "too big") }
                        try c.readPayload(into: buffer.pointer, count: len)
                    case .control: continue
                    }
                }
            } catch {}
            close(fds[0])
        }
    }

    func testSizesAndGeometry() throws {
        XCTAssertEqual(ChunkGeometry.parseSize("4M"), 4 << 20)
        XCTAssertEqual(ChunkGeometry.parseSize("64K"), 64 << 10)
        XCTAssertEqual(ChunkGeometry.parseSize("1GiB"), 1 << 30)
        XCTAssertEqual(ChunkGeometry.parseSize("512"), 512)
        XCTAssertNil(ChunkGeometry.parseSize("x"))
        XCTAssertThrowsError(try ChunkGeometry.validate(3 << 20))
        XCTAssertThrowsError(try ChunkGeometry.validate(32 << 10))
        XCTAssertNoThrow(try ChunkGeometry.validate(256 << 20))
        let g = ChunkGeometry(size: 2 * 65536 + 1, chunkSize: 65536)
        XCTAssertEqual(g.count, 3)
        XCTAssertEqual(g.length(of: 2), 1)
        XCTAssertEqual(ChunkGeometry(size: 0, chunkSize: 65536).count, 0)
    }

    func testCoalescingBadChunks() {
        let g = ChunkGeometry(size: 10 * 100 + 50, chunkSize: 100)
        XCTAssertEqual(BadRange.coalesce([10, 0, 4, 3, 5], geometry: g), [
            BadRange(offset: 0, length: 100, firstChunk: 0, lastChunk: 0),
            BadRange(offset: 300, length: 300, firstChunk: 3, lastChunk: 5),
            BadRange(offset: 1000, length: 50, firstChunk: 10, lastChunk: 10),
        ])
        XCTAssertEqual(BadRange.coalesce([], geometry: g), [])
    }

    func testContainerDetection() {
        func detect(_ head: [UInt8]) -> DiskImageFormat? {
            var h = head + [UInt8](repeating: 0, count: 512)
            return h.withUnsafeMutableBytes { DiskImageFormat.detect(UnsafeRawBufferPointer($0)) }
        }
        XCTAssertEqual(detect([0x51, 0x46, 0x49, 0xFB]), .qcow2)
        XCTAssertEqual(detect(Array("<<< Oracle VM VirtualBox Disk Image >>>\n".utf8)), .vdi)
        var vdi = [UInt8](repeating: 0, count: 0x40) + [0x7F, 0x10, 0xDA, 0xBE]
        XCTAssertEqual(detect(vdi), .vdi)
        vdi[0x40] = 0
        XCTAssertNil(detect(vdi))
        XCTAssertEqual(detect(Array("KDMV".utf8)), .vmdk)
        XCTAssertEqual(detect(Array("# Disk DescriptorFile".utf8)), .vmdk)
        XCTAssertEqual(detect(Array("vhdxfile".utf8)), .vhdx)
        XCTAssertEqual(detect(Array("conectix".utf8)), .vhd)
        XCTAssertNil(detect(Array("an ordinary raw disk with a boot sector".utf8)))
    }

    func testSavedHashStateContinuesExactly() {
        let data = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        var whole = SHA256Hasher()
        data.withUnsafeBytes { whole.update($0.baseAddress!, $0.count) }
        var first = SHA256Hasher()
        data.withUnsafeBytes { first.update($0.baseAddress!, 123_457) }
        guard var resumed = SHA256Hasher(savedState: first.savedState) else { return XCTFail("state did not restore") }
        data.withUnsafeBytes { resumed.update($0.baseAddress! + 123_457, $0.count - 123_457) }
        XCTAssertEqual(resumed.finalized(), whole.finalized())
        XCTAssertEqual(whole.finalized(), Digest.sha256(data))
        var damaged = first.savedState
        damaged[damaged.count - 10] ^= 0xFF
        damaged[30] ^= 1
        XCTAssertNil(SHA256Hasher(savedState: damaged), "a state from another layout is refused")
        XCTAssertNil(SHA256Hasher(savedState: Array(first.savedState.dropLast())))
    }

    func testVersionNegotiation() {
        var ours = Hello(ferryVersion: "1", binary: "/usr/bin/ferry", host: "a")
        var theirs = Hello(ferryVersion: "9", binary: "/opt/ferry", host: "b")
        XCTAssertNoThrow(try Handshake.check(ours: ours, theirs: theirs))
        theirs.protocolVersion = 7
        theirs.oldestProtocol = 5
        XCTAssertThrowsError(try Handshake.check(ours: ours, theirs: theirs)) { e in
            let m = "\(e)"
            XCTAssertTrue(m.contains("/usr/bin/ferry") && m.contains("/opt/ferry") && m.contains("protocol 7"), m)
        }
        ours.protocolVersion = 7
        ours.oldestProtocol = 1
        XCTAssertNoThrow(try Handshake.check(ours: ours, theirs: theirs))
    }
}
