import CSys
import Dispatch
import Glibc
import Synchronization

/// One chunk in flight: an aligned buffer plus what the pump learned about it.
///
/// A slot has one owner at a time: the filling thread, then its hasher, then the sink. Each hands
/// it on through a semaphore or a serial queue, which orders every access; that hand-over is the
/// one thing here the compiler cannot check, hence `@unchecked`.
public final class ChunkSlot: @unchecked Sendable {
    public let buffer: AlignedBuffer
    public internal(set) var index = 0
    public internal(set) var offset: UInt64 = 0
    public internal(set) var length = 0
    public internal(set) var isZero = false
    /// SHA-256 of the chunk's bytes, known when the consumer sees the slot.
    public internal(set) var digest = Digest.zero
    /// Set by a producer that already hashed the chunk (a receiver checking the sender's hash).
    public var presetDigest: Digest?
    /// Ranges of this chunk the source could not read (a rescue copy): they hold zeros.
    public var unreadable: [ByteRange] = []
    /// The whole-image hasher right after this chunk, kept for checkpoint chunks only.
    public internal(set) var hasherAfter: SHA256Hasher?

    let hashed = DispatchSemaphore(value: 0)
    let wholeHashed = DispatchSemaphore(value: 0)

    init(capacity: Int) { buffer = AlignedBuffer(capacity: capacity) }

    public var bytes: UnsafeRawBufferPointer { buffer.bytes(length) }
}

/// Bytes done so far, read by a progress display on another thread.
public final class ProgressCounter: Sendable {
    private let value = Atomic<UInt64>(0)
    public init() {}
    public func add(_ n: Int) { value.add(UInt64(n), ordering: .relaxed) }
    public func set(_ n: UInt64) { value.store(n, ordering: .relaxed) }
    public var bytes: UInt64 { value.load(ordering: .relaxed) }
}

/// The first error any of several threads ran into; later ones are dropped.
public final class FirstFailure: Sendable {
    private let stored = Mutex<(any Error)?>(nil)
    public init() {}
    public func record(_ error: any Error) { stored.withLock { if $0 == nil { $0 = error } } }
    public var error: (any Error)? { stored.withLock { $0 } }
}

/// A closure the pump calls from its sink thread only, one call at a time, while the thread that
/// handed it over is still inside `run`, filling slots. The caller's closures capture its own non-Sendable state, which
/// the fill closure on the caller's thread may touch as well: the callers keep those two apart
/// (fill reads, the sink writes and records), and that is the contract the compiler cannot see.
struct SinkCall<Argument>: @unchecked Sendable {
    let body: (Argument) throws -> Void
}

/// What a pump run saw.
public struct PumpResult: Sendable {
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
public final class ChunkPump: Sendable {
    public let chunkSize: Int
    private let free: Mutex<[ChunkSlot]>
    private let available: DispatchSemaphore
    private let hashQueue = DispatchQueue(label: "ferry.hash", qos: .userInitiated, attributes: .concurrent)
    private let wholeQueue = DispatchQueue(label: "ferry.whole", qos: .userInitiated)
    private let sinkQueue = DispatchQueue(label: "ferry.sink", qos: .userInitiated)
    private let failure = FirstFailure()
    private let zeroDigests = Mutex<[Int: Digest]>([:])

    /// Chunks in flight: enough to keep reader, hashers and writer busy: up to 32 and up to 64 MiB,
    /// at least 4 (32 MiB at the default 1 MiB chunk).
    public static func defaultSlotCount(chunkSize: Int) -> Int {
        max(4, min(32, (64 << 20) / chunkSize))
    }

    public init(chunkSize: Int, slotCount: Int? = nil) {
        self.chunkSize = chunkSize
        let n = slotCount ?? Self.defaultSlotCount(chunkSize: chunkSize)
        free = Mutex((0..<n).map { _ in ChunkSlot(capacity: chunkSize) })
        available = DispatchSemaphore(value: n)
    }

    /// The SHA-256 of `length` zero bytes (cached: zero chunks are not hashed again).
    public func zeroDigest(length: Int) -> Digest {
        if let d = zeroDigests.withLock({ $0[length] }) { return d }
        let buf = AlignedBuffer(capacity: max(length, 1))
        memset(buf.pointer, 0, buf.capacity)
        let d = Digest.sha256(buf.pointer, length)
        zeroDigests.withLock { $0[length] = d }
        return d
    }

    private func fail(_ error: any Error) { failure.record(error) }

    private var failed: (any Error)? { failure.error }

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
    /// - `checkpointOnInterrupt`: at SIGINT or SIGTERM, stop filling, let every chunk already
    ///   read be consumed, and run `afterWhole` on the last one (a checkpoint where the run
    ///   stopped, so `--resume` loses nothing), then throw the interruption.
    public func run(indices: [Int]? = nil, startIndex: Int = 0, hasher: SHA256Hasher? = nil,
                    checkpointEvery: Int? = nil, checkpointOnInterrupt: Bool = false,
                    fill: (ChunkSlot) throws -> Int,
                    consume: @escaping (ChunkSlot) throws -> Void,
                    afterWhole: ((ChunkSlot) throws -> Void)? = nil) throws -> PumpResult {
        // The whole-image hasher belongs to the serial whole queue, the counts to the sink.
        let whole = Mutex<SHA256Hasher?>(hasher)
        let counts = Mutex(PumpResult())
        let wantWhole = hasher != nil
        let consume = SinkCall(body: consume)
        let afterWhole = afterWhole.map { SinkCall(body: $0) }
        var position = 0
        var index = startIndex
        // The last chunk consumed, and whether a checkpoint already covers it (sink thread only).
        let lastConsumed = Mutex<(index: Int, checkpointed: Bool)?>(nil)
        var stoppedBy: FerryError?

        while true {
            if failed != nil { break }
            if let signal = Interrupts.received {
                if checkpointOnInterrupt { stoppedBy = Interrupts.error(signal) } else { fail(Interrupts.error(signal)) }
                break
            }
            if let indices {
                guard position < indices.count else { break }
                index = indices[position]
            }
            available.wait()
            let slot = free.withLock { $0.removeLast() }
            slot.index = index
            slot.offset = UInt64(index) * UInt64(chunkSize)
            slot.presetDigest = nil
            slot.unreadable = []
            slot.hasherAfter = nil
            let n: Int
            do {
                n = try fill(slot)
            } catch let e as FerryError where e.code == .interrupted && checkpointOnInterrupt {
                stoppedBy = e
                release(slot)
                break
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
                    let after = whole.withLock { h -> SHA256Hasher? in
                        h!.update(slot.buffer.pointer, slot.length)
                        return isCheckpoint ? h : nil
                    }
                    if let after { slot.hasherAfter = after }
                    slot.wholeHashed.signal()
                }
            }
            sinkQueue.async { [self] in
                slot.hashed.wait()
                if failed == nil {
                    do {
                        try consume.body(slot)
                        counts.withLock {
                            $0.chunks += 1
                            $0.bytes += UInt64(slot.length)
                            if slot.isZero { $0.zeroChunks += 1 }
                        }
                    } catch {
                        fail(error)
                    }
                }
                if wantWhole { slot.wholeHashed.wait() }
                if isCheckpoint, failed == nil, let afterWhole {
                    do { try afterWhole.body(slot) } catch { fail(error) }
                }
                if failed == nil { lastConsumed.withLock { $0 = (slot.index, isCheckpoint) } }
                release(slot)
            }
            position += 1
            index += 1
        }
        // Drain: every queued chunk is consumed (or skipped after a failure) before returning.
        sinkQueue.sync {}
        wholeQueue.sync {}
        if let stoppedBy {
            // Every chunk read was consumed and hashed in order: the whole-image state is the
            // state after the last one. Any slot can carry that checkpoint: all are idle now.
            if failed == nil, let afterWhole, let last = lastConsumed.withLock({ $0 }), !last.checkpointed {
                let marker = free.withLock { $0.last! }
                marker.index = last.index
                marker.offset = UInt64(last.index) * UInt64(chunkSize)
                marker.length = 0
                marker.hasherAfter = whole.withLock { $0 }
                sinkQueue.sync {
                    do { try afterWhole.body(marker) } catch { fail(error) }
                }
            }
            if let failed { throw failed }
            throw stoppedBy
        }
        if let failed { throw failed }
        var result = counts.withLock { $0 }
        if wantWhole {
            result.wholeDigest = whole.withLock { $0!.finalized() }
        }
        return result
    }

    private func release(_ slot: ChunkSlot) {
        free.withLock { $0.append(slot) }
        available.signal()
    }
}

/// True when all `count` bytes at `p` are zero.
public func isAllZero(_ p: UnsafeRawPointer, _ count: Int) -> Bool { csys_is_zero(p, count) != 0 }
