import CSys
import Dispatch
import Glibc

/// One chunk in flight: an aligned buffer plus what the pump learned about it.
public final class ChunkSlot {
    public let buffer: AlignedBuffer
    public internal(set) var index = 0
    public internal(set) var offset: UInt64 = 0
    public internal(set) var length = 0
    public internal(set) var isZero = false
    /// SHA-256 of the chunk's bytes, known when the consumer sees the slot.
    public internal(set) var digest = Digest.zero
    /// Set by a producer that already hashed the chunk (a receiver checking the sender's hash).
    public var presetDigest: Digest?
    /// The whole-image hasher right after this chunk, kept for checkpoint chunks only.
    public internal(set) var hasherAfter: SHA256Hasher?

    let hashed = DispatchSemaphore(value: 0)
    let wholeHashed = DispatchSemaphore(value: 0)

    init(capacity: Int) { buffer = AlignedBuffer(capacity: capacity) }

    public var bytes: UnsafeRawBufferPointer { buffer.bytes(length) }
}

/// Bytes done so far, read by a progress display on another thread.
public final class ProgressCounter: @unchecked Sendable {
    private let lock = NSLockish()
    private var value: UInt64 = 0
    public init() {}
    public func add(_ n: Int) { lock.locked { value += UInt64(n) } }
    public func set(_ n: UInt64) { lock.locked { value = n } }
    public var bytes: UInt64 { lock.locked { value } }
}

/// A pthread mutex, for the few counters shared between pump threads.
public final class NSLockish: @unchecked Sendable {
    private var m = pthread_mutex_t()
    public init() { pthread_mutex_init(&m, nil) }
    deinit { pthread_mutex_destroy(&m) }
    @inline(__always) public func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&m)
        defer { pthread_mutex_unlock(&m) }
        return try body()
    }
}

/// What a pump run saw.
public struct PumpResult {
    public var chunks = 0
    public var zeroChunks = 0
    public var bytes: UInt64 = 0
    /// SHA-256 of every byte in order, when the pump was asked to compute it.
    public var wholeDigest: Digest?
}

/// The pipelined chunk engine shared by copy, verify, serve and resend.
///
/// The caller's thread fills slots in order (reading a disk, a pipe, or wire frames). Each filled
/// slot is checked for zeros, then hashed on a worker (all cores share the chunk hashes), fed to
/// the whole-image hasher on its own serial thread, and handed in index order to `consume` on a
/// sink thread (write, send, record). A slot returns to the pool only after both hashes and the
/// consumer are done with it, so memory stays at `slotCount` chunks whatever the image size.
public final class ChunkPump {
    public let chunkSize: Int
    private let slots: [ChunkSlot]
    private var free: [ChunkSlot]
    private let freeLock = NSLockish()
    private let available: DispatchSemaphore
    private let hashQueue = DispatchQueue(label: "ferry.hash", qos: .userInitiated, attributes: .concurrent)
    private let wholeQueue = DispatchQueue(label: "ferry.whole", qos: .userInitiated)
    private let sinkQueue = DispatchQueue(label: "ferry.sink", qos: .userInitiated)
    private let failureLock = NSLockish()
    private var failure: Error?
    private var zeroDigests: [Int: Digest] = [:]
    private let zeroLock = NSLockish()

    /// Chunks in flight: enough to keep reader, hashers and writer busy (about 64 MiB), at least 4.
    public static func defaultSlotCount(chunkSize: Int) -> Int {
        max(4, min(32, (64 << 20) / chunkSize))
    }

    public init(chunkSize: Int, slotCount: Int? = nil) {
        self.chunkSize = chunkSize
        let n = slotCount ?? Self.defaultSlotCount(chunkSize: chunkSize)
        slots = (0..<n).map { _ in ChunkSlot(capacity: chunkSize) }
        free = slots
        available = DispatchSemaphore(value: n)
    }

    /// The SHA-256 of `length` zero bytes (cached: zero chunks are not hashed again).
    public func zeroDigest(length: Int) -> Digest {
        if let d = zeroLock.locked({ zeroDigests[length] }) { return d }
        let buf = AlignedBuffer(capacity: max(length, 1))
        memset(buf.pointer, 0, buf.capacity)
        let d = Digest.sha256(buf.pointer, length)
        zeroLock.locked { zeroDigests[length] = d }
        return d
    }

    private func fail(_ error: Error) {
        failureLock.locked { if failure == nil { failure = error } }
    }

    private var failed: Error? { failureLock.locked { failure } }

    /// Runs the pump.
    /// - `fill(slot)`: on the caller's thread, in order; fill `slot.buffer` with the chunk at
    ///   `slot.offset` and return its length, 0 at the end. It may set `slot.presetDigest`.
    /// - `consume(slot)`: on the sink thread, in index order, after `slot.digest` is known.
    /// - `hasher`: when given, every byte is fed to it in order (the whole-image SHA-256); pass a
    ///   restored hasher to continue a resumed stream.
    /// - `indices`: the chunk indices to visit in order; nil means 0, 1, 2, ... until `fill`
    ///   returns 0. Offsets are `index * chunkSize`.
    /// - `checkpointEvery`: every that many chunks (by index), `afterWhole(slot)` runs on the sink
    ///   thread once the chunk is consumed and hashed, with `slot.hasherAfter` set: the moment to
    ///   make data durable and record a resumable checkpoint.
    public func run(indices: [Int]? = nil, startIndex: Int = 0, hasher: SHA256Hasher? = nil,
                    checkpointEvery: Int? = nil,
                    fill: (ChunkSlot) throws -> Int,
                    consume: @escaping (ChunkSlot) throws -> Void,
                    afterWhole: ((ChunkSlot) throws -> Void)? = nil) throws -> PumpResult {
        // Shared with the hashing and sink threads; each field has one writer at a time.
        final class Shared: @unchecked Sendable {
            var whole: SHA256Hasher?
            var result = PumpResult()
            init(_ h: SHA256Hasher?) { whole = h }
        }
        let shared = Shared(hasher)
        let wantWhole = hasher != nil
        let resultLock = NSLockish()
        var position = 0
        var index = startIndex

        while true {
            if failed != nil { break }
            if let indices {
                guard position < indices.count else { break }
                index = indices[position]
            }
            available.wait()
            let slot = freeLock.locked { free.removeLast() }
            slot.index = index
            slot.offset = UInt64(index) * UInt64(chunkSize)
            slot.presetDigest = nil
            slot.hasherAfter = nil
            let n: Int
            do {
                n = try fill(slot)
            } catch {
                fail(error)
                release(slot)
                break
            }
            if n == 0 {
                release(slot)
                break
            }
            slot.length = n
            slot.isZero = csys_is_zero(slot.buffer.pointer, n) != 0

            if let preset = slot.presetDigest {
                slot.digest = preset
                slot.hashed.signal()
            } else {
                hashQueue.async { [self] in
                    slot.digest = slot.isZero ? zeroDigest(length: slot.length) : Digest.sha256(slot.buffer.pointer, slot.length)
                    slot.hashed.signal()
                }
            }
            let isCheckpoint = checkpointEvery.map { $0 > 0 && (slot.index + 1) % $0 == 0 } ?? false
            if wantWhole {
                wholeQueue.async {
                    shared.whole!.update(slot.buffer.pointer, slot.length)
                    if isCheckpoint { slot.hasherAfter = shared.whole }
                    slot.wholeHashed.signal()
                }
            }
            sinkQueue.async { [self] in
                slot.hashed.wait()
                if failed == nil {
                    do {
                        try consume(slot)
                        resultLock.locked {
                            shared.result.chunks += 1
                            shared.result.bytes += UInt64(slot.length)
                            if slot.isZero { shared.result.zeroChunks += 1 }
                        }
                    } catch {
                        fail(error)
                    }
                }
                if wantWhole { slot.wholeHashed.wait() }
                if isCheckpoint, failed == nil, let afterWhole {
                    do { try afterWhole(slot) } catch { fail(error) }
                }
                release(slot)
            }
            position += 1
            index += 1
        }
        // Drain: every queued chunk is consumed (or skipped after a failure) before returning.
        sinkQueue.sync {}
        wholeQueue.sync {}
        if let failed { throw failed }
        var result = shared.result
        if wantWhole {
            result.wholeDigest = shared.whole!.finalized()
        }
        return result
    }

    private func release(_ slot: ChunkSlot) {
        freeLock.locked { free.append(slot) }
        available.signal()
    }
}

/// True when all `count` bytes at `p` are zero.
public func isAllZero(_ p: UnsafeRawPointer, _ count: Int) -> Bool { csys_is_zero(p, count) != 0 }
