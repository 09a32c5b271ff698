import Chunks
import Foundation
import Wire
import XCTest

/// The request frame: each operation's case survives the flat protocol-1 JSON, and serve refuses
/// the numbers and paths it must never act on, before it opens a ledger or an image.
final class RequestTests: XCTestCase {
    static let plan = ResendPlan(imageId: 4, transferId: "t1", chunkSize: 1 << 20, size: 3 << 20, subBlockSize: 65536,
                                 chunks: [.init(index: 1, sha256: String(repeating: "ab", count: 32))], host: "pve", ledger: "/l.db")

    func testEveryOperationRoundTrips() throws {
        var copy = CopyRequest(path: "/dev/zvol/rpool/vm-100", ledger: nil, chunkSize: 1 << 20, size: 5 << 30,
                               transferId: "abc", peer: "old:/dev/nbd0", checkpointEvery: 256)
        copy.writeZeros = true
        copy.compressLevel = 3
        var resumed = copy
        resumed.resumeCheckpoints = [256, 512]
        var qcow2 = copy
        qcow2.destFormat = "qcow2"
        var pull = copy
        pull.asIs = true
        pull.size = nil
        let requests: [Request] = [
            .receive(copy), .receive(resumed), .receive(qcow2), .send(pull),
            .verify(VerifyRequest(path: "/srv/disk.raw", ledger: "/var/lib/ferry/ledger.db", imageId: 7)),
            .resendReceive(RepairRequest(path: "/d", ledger: nil, imageId: nil, verifyFirst: true, subBlockSize: 65536, peer: "h:/s")),
            .resendSend(SupplyRequest(path: "/s", ledger: nil, plan: Self.plan, force: true, peer: "h:/d")),
        ]
        for r in requests {
            XCTAssertEqual(try Request.decode(r.encode()), r)
        }
    }

    /// A protocol-1 peer decodes every field, so the frame keeps them all, with these names;
    /// fields added since (`timeout`, `verifyPrefix`) are optional both ways: an older ferry
    /// ignores them, and a frame without them still decodes here.
    func testTheFrameIsProtocolOneShaped() throws {
        let body = Request.verify(VerifyRequest(path: "/x", ledger: nil, imageId: 2)).encode()
        var object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        XCTAssertEqual(Set(object.keys), ["operation", "path", "chunkSize", "transferId", "peer", "asIs", "writeZeros",
                                          "checkpointEvery", "resume", "checkpoints", "imageId", "chunks", "subBlockSize",
                                          "force", "verifyFirst", "timeout"])
        XCTAssertEqual(object["operation"] as? String, "verify")
        object.removeValue(forKey: "timeout")
        let old = try JSONSerialization.data(withJSONObject: object)
        XCTAssertEqual(try Request.decode(Array(old)), .verify(VerifyRequest(path: "/x", ledger: nil, imageId: 2)))
    }

    func testServeRefusesWhatItMustNotActOn() {
        func frame(_ fields: [String: Any]) -> [UInt8] {
            var f: [String: Any] = ["operation": "receive", "path": "/x", "chunkSize": 1 << 20, "transferId": "t", "peer": "p",
                                    "asIs": false, "writeZeros": false, "checkpointEvery": 4, "resume": false, "checkpoints": [Int](),
                                    "chunks": [Int](), "subBlockSize": 0, "force": false, "verifyFirst": false]
            for (k, v) in fields { f[k] = v }
            return Array(try! JSONSerialization.data(withJSONObject: f))
        }
        XCTAssertNoThrow(try Request.decode(frame([:])))
        let refused: [([String: Any], String)] = [
            (["path": "-"], "its stdin and stdout carry the session"),
            (["chunkSize": 3 << 20], "chunk size 3145728 is not a power of two"),
            (["checkpointEvery": 0], "checkpoint interval is 0"),
            (["compressLevel": 99], "zstd level is 99"),
            (["operation": "resend-receive", "subBlockSize": 1000], "sub-block size is 1000"),
            (["operation": "resend-send"], "resend request without a plan"),
            (["operation": "format-disk"], "malformed request frame"),
        ]
        for (fields, phrase) in refused {
            XCTAssertThrowsError(try Request.decode(frame(fields)), "\(fields)") { error in
                let message = (error as? FerryError)?.message ?? "\(error)"
                XCTAssertTrue(message.contains(phrase), "\(fields): '\(message)' lacks '\(phrase)'")
            }
        }
    }
}
