import Chunks
import Glibc
import Synchronization

/// A framed, bidirectional byte stream over two file descriptors (ssh's stdin/stdout, or ours
/// when serving). Sending is thread-safe (a sender's data and a receiver's acknowledgements share
/// the pipe); receiving is for one thread.
public final class Connection {
    public let input: Int32
    public let output: Int32
    /// Who is at the other end, for error messages ("ssh pve", "the client").
    public var peerName: String
    /// Sends from several threads (a sender's data and its acknowledgements) take turns.
    private let sendLock = Mutex(())
    private let inbox = AlignedBuffer(capacity: 256 << 10)
    private var inStart = 0
    private var inEnd = 0
    public private(set) var bytesSent: UInt64 = 0
    public private(set) var bytesReceived: UInt64 = 0
    /// Called when the peer closed the stream, to explain why (ssh's exit status and last words).
    public var onClosed: (() -> FerryError)?
    /// Milliseconds with no byte moving either way after which a blocked read or write gives up
    /// (0: wait forever), and when a byte last moved. Shared by the threads using the connection,
    /// so a sender's steady writes keep its acknowledgement reader waiting, and a peer that
    /// stops (SIGSTOP, a dead link that never resets) ends both.
    private let idleLimit = Atomic<Int64>(0)
    private let lastMoved = Atomic<Int64>(Connection.nowMs())

    public init(input: Int32, output: Int32, peerName: String) {
        self.input = input
        self.output = output
        self.peerName = peerName
    }

    /// Seconds without any data moving after which the session ends with an error (nil or 0:
    /// never). The output becomes non-blocking, so a write to a stalled peer cannot hang either.
    public var idleTimeout: Double? {
        get { let ms = idleLimit.load(ordering: .relaxed); return ms > 0 ? Double(ms) / 1000 : nil }
        set {
            let ms = Int64(((newValue ?? 0) * 1000).rounded())
            idleLimit.store(max(0, ms), ordering: .relaxed)
            lastMoved.store(Self.nowMs(), ordering: .relaxed)
            let flags = fcntl(output, F_GETFL)
            if flags >= 0 { _ = fcntl(output, F_SETFL, ms > 0 ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) }
        }
    }

    static func nowMs() -> Int64 { Int64(monotonicSeconds() * 1000) }

    private func moved() { lastMoved.store(Self.nowMs(), ordering: .relaxed) }

    /// Waits until `fd` is ready for `events`, or fails once nothing moved for the idle limit.
    private func waitReady(_ fd: Int32, _ events: Int16) throws {
        let limit = idleLimit.load(ordering: .relaxed)
        guard limit > 0 else { return }
        while true {
            var p = pollfd(fd: fd, events: events, revents: 0)
            let r = poll(&p, 1, 1000)
            if r > 0 { return }
            if r < 0 && errno != EINTR { return }   // the read or write itself reports it
            if let s = Interrupts.received { throw Interrupts.error(s, during: "the session with \(peerName)") }
            let idle = Self.nowMs() - lastMoved.load(ordering: .relaxed)
            if idle >= limit {
                throw FerryError(.remote, "no data moved between here and \(peerName) for \(limit / 1000) s: the far side or the link stalled",
                                 hint: "--timeout SECONDS waits longer, --timeout 0 forever", cause: .stalled)
            }
        }
    }

    // MARK: Sending

    public func send(_ type: FrameType, _ body: [UInt8] = []) throws {
        precondition(body.count <= FrameHead.maxBody(type), "a \(type) frame of \(body.count) bytes exceeds its cap")
        let head = FrameHead.encode(type, bodyLength: body.count)
        try sendLock.withLock { _ in
            try head.withUnsafeBytes { h in
                try body.withUnsafeBytes { b in try writeAll([h, b]) }
            }
        }
    }

    /// Sends a chunk frame: header and payload leave in one writev, the payload without a copy.
    public func sendChunk(_ header: ChunkHeader, payload: UnsafeRawBufferPointer) throws {
        let head = FrameSerializer.chunkHead(header, payloadLength: payload.count)
        try sendLock.withLock { _ in
            try head.withUnsafeBytes { h in try writeAll([h, payload]) }
        }
    }

    private func writeAll(_ parts: [UnsafeRawBufferPointer]) throws {
        var iov = parts.filter { $0.count > 0 }.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
        var index = 0
        while index < iov.count {
            let start = index
            try waitReady(output, Int16(POLLOUT))
            let n = iov.withUnsafeMutableBufferPointer { v in
                retryingEINTR { writev(output, v.baseAddress! + start, Int32(v.count - start)) }
            }
            if n < 0 {
                if errno == EAGAIN { continue }   // non-blocking: wait for room again
                if errno == EPIPE || errno == ECONNRESET { throw closedError() }
                throw FerryError.syscall("write to", path: peerName)
            }
            bytesSent += UInt64(n)
            if n > 0 { moved() }
            var left = n
            while left > 0 && index < iov.count {
                if left >= iov[index].iov_len {
                    left -= iov[index].iov_len
                    index += 1
                } else {
                    iov[index].iov_base += left
                    iov[index].iov_len -= left
                    left = 0
                }
            }
        }
    }

    private func closedError() -> FerryError {
        var e = onClosed?() ?? FerryError(.remote, "\(peerName) closed the connection")
        e.cause = .peerGone
        return e
    }

    // MARK: Receiving

    /// A received frame: a control frame with its whole body, or a chunk frame whose payload
    /// (`payloadLength` bytes) is still to be read with `readPayload`.
    public enum Incoming {
        case control(FrameType, [UInt8])
        case chunk(ChunkHeader, payloadLength: Int)
    }

    public func receive() throws -> Incoming {
        var headBytes = [UInt8](repeating: 0, count: FrameHead.size)
        try headBytes.withUnsafeMutableBytes { try readExactly(into: $0.baseAddress!, count: FrameHead.size, atFrameStart: true) }
        let head = try headBytes.withUnsafeBytes { try FrameHead.parse($0, peer: peerName) }
        let (type, bodyLength) = (head.type, head.bodyLength)
        if type == .chunk {
            var h = [UInt8](repeating: 0, count: ChunkHeader.size)
            try h.withUnsafeMutableBytes { try readExactly(into: $0.baseAddress!, count: ChunkHeader.size, atFrameStart: false) }
            let header = try h.withUnsafeBytes { try ChunkHeader.decode($0) }
            return .chunk(header, payloadLength: bodyLength - ChunkHeader.size)
        }
        var body = [UInt8](repeating: 0, count: bodyLength)
        if bodyLength > 0 {
            try body.withUnsafeMutableBytes { try readExactly(into: $0.baseAddress!, count: bodyLength, atFrameStart: false) }
        }
        return .control(type, body)
    }

    /// Reads a chunk frame's payload into `p`.
    public func readPayload(into p: UnsafeMutableRawPointer, count: Int) throws {
        try readExactly(into: p, count: count, atFrameStart: false)
    }

    private func readExactly(into p: UnsafeMutableRawPointer, count: Int, atFrameStart: Bool) throws {
        var done = 0
        while done < count {
            if inStart < inEnd {
                let n = min(inEnd - inStart, count - done)
                memcpy(p + done, inbox.pointer + inStart, n)
                inStart += n
                done += n
                continue
            }
            let left = count - done
            // Large payloads go straight into the caller's buffer; small reads are batched.
            let direct = left >= inbox.capacity / 2
            let target = direct ? p + done : inbox.pointer
            try waitReady(input, Int16(POLLIN))
            let n = retryingEINTR { read(input, target, direct ? left : inbox.capacity) }
            if n < 0 { throw FerryError.syscall("read from", path: peerName) }
            if n == 0 {
                if atFrameStart && done == 0 { throw closedError() }
                let e = closedError()
                throw FerryError(e.code, e.message + " in the middle of a frame", hint: e.hint)
            }
            bytesReceived += UInt64(n)
            moved()
            if direct {
                done += n
            } else {
                inStart = 0
                inEnd = n
            }
        }
    }

    // MARK: Conveniences

    public func sendJSON<T: Encodable>(_ type: FrameType, _ value: T) throws { try send(type, JSONBody.encode(value)) }

    /// Sends an error frame; false when it could not be sent (the peer is gone).
    @discardableResult
    public func sendError(_ e: FerryError) -> Bool { (try? send(.error, JSONBody.encode(WireError(e)))) != nil }

    /// A control frame the conversation did not ask for: a log line is shown, an error frame
    /// becomes the far side's error, anything else is a protocol error.
    public func other(_ type: FrameType, _ body: [UInt8], during what: String, log: (String) -> Void) throws {
        switch type {
        case .log: log(String(decoding: body, as: UTF8.self))
        case .error: throw try JSONBody.decode(WireError.self, body, what: "error").ferryError
        default: throw FerryError(.wire, "\(peerName) sent an unexpected \(type) frame during \(what)")
        }
    }

    /// After `error` ended a send or a receive because the peer went away (nothing else: a peer
    /// still waiting for us would never send more), the peer's own error
    /// frame may still be waiting in the pipe (it sent it, then exited, and our next write met the
    /// broken pipe first): reads on, skipping anything else, and returns that error, so the user
    /// sees the real cause with its own status. Call only from the thread that receives.
    public func peerError(after error: any Error) -> FerryError? {
        guard let e = error as? FerryError, e.cause == .peerGone, !e.fromPeer else { return nil }
        let scratch = AlignedBuffer(capacity: 1 << 20)
        for _ in 0..<4096 {
            guard let incoming = try? receive() else { return nil }
            switch incoming {
            case .control(.error, let body):
                return (try? JSONBody.decode(WireError.self, body, what: "error"))?.ferryError
            case .control:
                continue
            case .chunk(_, let length):
                var left = length
                while left > 0 {
                    let n = min(left, scratch.capacity)
                    guard (try? readPayload(into: scratch.pointer, count: n)) != nil else { return nil }
                    left -= n
                }
            }
        }
        return nil
    }

    /// Receives the next control frame, showing log frames and turning error frames into errors.
    public func expect(_ type: FrameType, log: (String) -> Void) throws -> [UInt8] {
        while true {
            switch try receive() {
            case .control(let t, let body) where t == type:
                return body
            case .control(let t, let body):
                try other(t, body, during: "the wait for a \(type) frame", log: log)
            case .chunk:
                throw FerryError(.wire, "\(peerName) sent a chunk frame where a \(type) frame was expected")
            }
        }
    }
}
