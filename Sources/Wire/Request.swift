import Chunks

/// What the client asks of `ferry serve`, one case per operation with the fields that operation
/// needs. Everything the far side needs travels here, not on the remote command line, so serve
/// also works behind an authorized_keys forced command.
///
/// On the wire it is one flat JSON object (`RequestFrame`, protocol 1, unchanged); `decode`
/// turns it into a case only when every number in it is sane, so serve never divides or loops
/// by what a damaged or hostile client sent.
public enum Request: Sendable, Equatable {
    /// Push: write the image at `path` from the client's chunk frames.
    case receive(CopyRequest)
    /// Pull: read the image at `path` and send chunk frames.
    case send(CopyRequest)
    /// Verify the image at `path` against the far ledger.
    case verify(VerifyRequest)
    /// Resend, destination far: plan from the far ledger, then repair `path` with the client's source.
    case resendReceive(RepairRequest)
    /// Resend, source far: supply sub-blocks of `path` for the client's plan.
    case resendSend(SupplyRequest)

    /// The image the operation reads or writes on the far side.
    public var path: String {
        switch self {
        case .receive(let r), .send(let r): return r.path
        case .verify(let r): return r.path
        case .resendReceive(let r): return r.path
        case .resendSend(let r): return r.path
        }
    }

    /// The far side's ledger; nil means its default.
    public var ledger: String? {
        switch self {
        case .receive(let r), .send(let r): return r.ledger
        case .verify(let r): return r.ledger
        case .resendReceive(let r): return r.ledger
        case .resendSend(let r): return r.ledger
        }
    }
}

/// A copy's request, for either direction.
public struct CopyRequest: Sendable, Equatable {
    public var path: String
    public var ledger: String?
    public var chunkSize: Int
    /// Push: the source's size, when it has one (nil for a stream).
    public var size: UInt64?
    public var transferId: String
    /// The other end as the far side should record it: `host:path`.
    public var peer: String
    public var checkpointEvery: Int
    public var compressLevel: Int?
    /// Pull: copy a disk-image container's own bytes.
    public var asIs = false
    /// Pull: the source's container format (nil: from its header).
    public var sourceFormat: String?
    /// Push: the destination's format, `raw` or `qcow2` (nil: raw; an older client sends none).
    public var destFormat: String?
    /// Push: write zero chunks out instead of leaving holes.
    public var writeZeros = false
    /// Resume: the checkpoints the client's ledger holds for this transfer (nil: a fresh copy).
    public var resumeCheckpoints: [Int]?
    /// Resume: re-read every copied chunk before continuing, not a sample.
    public var verifyPrefix = false
    /// Seconds with no data moving after which the far side ends the session (nil: never).
    public var timeout: Double?
    /// Pull: record unreadable source bytes instead of ending the copy, and how many more times
    /// each is tried.
    public var recordReadErrors = false
    public var retries = 0
    /// Push: snapshot a destination on ZFS once it is durable.
    public var snapshot = true

    public init(path: String, ledger: String?, chunkSize: Int, size: UInt64?, transferId: String, peer: String,
                checkpointEvery: Int) {
        (self.path, self.ledger, self.chunkSize, self.size) = (path, ledger, chunkSize, size)
        (self.transferId, self.peer, self.checkpointEvery) = (transferId, peer, checkpointEvery)
    }
}

public struct VerifyRequest: Sendable, Equatable {
    public var path: String
    public var ledger: String?
    /// Which record to verify against (nil: the newest complete one under the path's names).
    public var imageId: Int64?
    /// Seconds with no data moving after which the far side ends the session (nil: never).
    public var timeout: Double?
    /// Read the live image even where the copy took a ZFS snapshot of it.
    public var live = false
    /// Read at most this many bytes a second.
    public var maxRate: UInt64?
    /// Continue the image's interrupted verify.
    public var resume = false
    public init(path: String, ledger: String?, imageId: Int64?, timeout: Double? = nil, live: Bool = false, maxRate: UInt64? = nil,
                resume: Bool = false) {
        (self.path, self.ledger, self.imageId, self.timeout, self.live, self.maxRate) = (path, ledger, imageId, timeout, live, maxRate)
        self.resume = resume
    }
}

/// Resend with the destination far.
public struct RepairRequest: Sendable, Equatable {
    public var path: String
    public var ledger: String?
    public var imageId: Int64?
    /// Verify the destination before planning.
    public var verifyFirst: Bool
    public var subBlockSize: Int
    /// The client's source, as the far side should record it.
    public var peer: String
    public init(path: String, ledger: String?, imageId: Int64?, verifyFirst: Bool, subBlockSize: Int, peer: String) {
        (self.path, self.ledger, self.imageId, self.verifyFirst, self.subBlockSize, self.peer) =
            (path, ledger, imageId, verifyFirst, subBlockSize, peer)
    }
}

/// Resend with the source far.
public struct SupplyRequest: Sendable, Equatable {
    public var path: String
    public var ledger: String?
    /// The destination's repair plan: which chunks, and the hash each must have again.
    public var plan: ResendPlan
    /// Send chunks whose source no longer matches the plan.
    public var force: Bool
    /// The client's destination, as the far side should record it.
    public var peer: String
    public init(path: String, ledger: String?, plan: ResendPlan, force: Bool, peer: String) {
        (self.path, self.ledger, self.plan, self.force, self.peer) = (path, ledger, plan, force, peer)
    }
}

extension Request {
    /// The request frame's body.
    public func encode() -> [UInt8] { JSONBody.encode(RequestFrame(self)) }

    private static func timeout(_ t: Double?) throws -> Double? {
        guard let t else { return nil }
        guard t.isFinite, t >= 0, t <= 1e7 else { throw FerryError(.wire, "the request's timeout is \(t)") }
        return t > 0 ? t : nil
    }

    /// Parses and checks a request frame's body.
    public static func decode(_ body: [UInt8]) throws -> Request {
        let f = try JSONBody.decode(RequestFrame.self, body, what: "request")
        // Serve's stdin and stdout carry the session: an image there would be mixed into frames.
        guard f.path != "-" else {
            throw FerryError(.usage, "the far end cannot read or write an image on '-': its stdin and stdout carry the session",
                             hint: "name a file or block device on the far host")
        }
        func subBlockOK(_ n: Int) -> Bool { n >= 4096 && n % 4096 == 0 && n <= ChunkGeometry.maxChunkSize }
        switch f.operation {
        case .receive, .send:
            try ChunkGeometry.validate(f.chunkSize)
            guard f.checkpointEvery >= 1 else { throw FerryError(.wire, "the request's checkpoint interval is \(f.checkpointEvery)") }
            if let level = f.compressLevel, !(1...19).contains(level) {
                throw FerryError(.wire, "the request's zstd level is \(level)")
            }
            var r = CopyRequest(path: f.path, ledger: f.ledger, chunkSize: f.chunkSize, size: f.size, transferId: f.transferId,
                                peer: f.peer, checkpointEvery: f.checkpointEvery)
            r.compressLevel = f.compressLevel
            r.asIs = f.asIs
            r.sourceFormat = f.sourceFormat
            r.destFormat = f.destFormat
            r.writeZeros = f.writeZeros
            r.resumeCheckpoints = f.resume ? f.checkpoints : nil
            r.verifyPrefix = f.verifyPrefix ?? false
            r.timeout = try timeout(f.timeout)
            r.recordReadErrors = f.onReadError == "record"
            guard f.onReadError == nil || ["abort", "record"].contains(f.onReadError!), (0...100).contains(f.retries ?? 0) else {
                throw FerryError(.wire, "the request's read-error policy is \(f.onReadError ?? "-") with \(f.retries ?? 0) retries")
            }
            r.retries = f.retries ?? 0
            r.snapshot = f.snapshot ?? true
            return f.operation == .receive ? .receive(r) : .send(r)
        case .verify:
            return .verify(VerifyRequest(path: f.path, ledger: f.ledger, imageId: f.imageId, timeout: try timeout(f.timeout),
                                         live: f.live ?? false, maxRate: f.maxRate, resume: f.resume))
        case .resendReceive:
            guard subBlockOK(f.subBlockSize) else { throw FerryError(.wire, "the request's sub-block size is \(f.subBlockSize)") }
            return .resendReceive(RepairRequest(path: f.path, ledger: f.ledger, imageId: f.imageId, verifyFirst: f.verifyFirst,
                                                subBlockSize: f.subBlockSize, peer: f.peer))
        case .resendSend:
            guard let plan = f.plan else { throw FerryError(.wire, "resend request without a plan") }
            try ChunkGeometry.validate(plan.chunkSize)
            guard subBlockOK(plan.subBlockSize) else { throw FerryError(.wire, "the plan's sub-block size is \(plan.subBlockSize)") }
            try plan.validate()
            return .resendSend(SupplyRequest(path: f.path, ledger: f.ledger, plan: plan, force: f.force, peer: f.peer))
        }
    }
}

/// The request as protocol 1 carries it: one flat object naming its operation, with every field
/// present (a protocol-1 peer decodes all of them).
struct RequestFrame: Codable {
    enum Operation: String, Codable {
        case receive, send, verify
        case resendReceive = "resend-receive"
        case resendSend = "resend-send"
    }
    var operation: Operation
    var path: String
    var ledger: String?
    var chunkSize = 0
    var size: UInt64?
    var transferId = ""
    var peer = ""
    var asIs = false
    var writeZeros = false
    var compressLevel: Int?
    var checkpointEvery = 0
    var resume = false
    var checkpoints: [Int] = []
    var imageId: Int64?
    var chunks: [Int] = []
    var subBlockSize = 0
    var force = false
    var verifyFirst = false
    var plan: ResendPlan?
    /// Optional, so a ferry that never sent them still decodes.
    var verifyPrefix: Bool?
    var timeout: Double?
    var onReadError: String?
    var retries: Int?
    var snapshot: Bool?
    var live: Bool?
    var maxRate: UInt64?
    var sourceFormat: String?
    var destFormat: String?

    init(_ r: Request) {
        switch r {
        case .receive(let c), .send(let c):
            operation = { if case .receive = r { return .receive } else { return .send } }()
            path = c.path
            ledger = c.ledger
            chunkSize = c.chunkSize
            size = c.size
            transferId = c.transferId
            peer = c.peer
            asIs = c.asIs
            sourceFormat = c.sourceFormat
            destFormat = c.destFormat
            writeZeros = c.writeZeros
            compressLevel = c.compressLevel
            checkpointEvery = c.checkpointEvery
            resume = c.resumeCheckpoints != nil
            checkpoints = c.resumeCheckpoints ?? []
            verifyPrefix = c.verifyPrefix ? true : nil
            timeout = c.timeout ?? 0
            onReadError = c.recordReadErrors ? "record" : nil
            retries = c.retries > 0 ? c.retries : nil
            snapshot = c.snapshot ? nil : false
        case .verify(let v):
            (operation, path, ledger, imageId) = (.verify, v.path, v.ledger, v.imageId)
            timeout = v.timeout ?? 0
            live = v.live ? true : nil
            maxRate = v.maxRate
            resume = v.resume
        case .resendReceive(let rr):
            (operation, path, ledger, imageId, verifyFirst, subBlockSize, peer) =
                (.resendReceive, rr.path, rr.ledger, rr.imageId, rr.verifyFirst, rr.subBlockSize, rr.peer)
        case .resendSend(let s):
            (operation, path, ledger, plan, force, peer) = (.resendSend, s.path, s.ledger, s.plan, s.force, s.peer)
            chunkSize = s.plan.chunkSize
            size = s.plan.size
            transferId = s.plan.transferId
        }
    }
}
