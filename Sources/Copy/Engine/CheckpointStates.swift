import Chunks
import Dispatch
import Synchronization

/// Whole-image hash states at checkpoint chunks, handed from the hashing side to whoever records
/// the checkpoint once the destination confirmed durability (another thread, a little later).
final class CheckpointStates: Sendable {
    private struct State {
        var states: [Int: SHA256Hasher] = [:]
        var closed = false
    }
    private let state = Mutex(State())
    private let changed = DispatchSemaphore(value: 0)

    func put(_ chunks: Int, _ hasher: SHA256Hasher?) {
        state.withLock { if let hasher { $0.states[chunks] = hasher } }
        changed.signal()
    }

    /// No more states will come (the pump ended): a waiting `take` returns what there is.
    func close() {
        state.withLock { $0.closed = true }
        changed.signal()
    }

    /// The state after `chunks` chunks, waiting until it is put or the pump ended; older states
    /// are dropped. The sink puts a checkpoint's state right after sending its last chunk, so the
    /// wait is at most one chunk's hashing. One thread takes (the sender's listener, or the
    /// receiver's fill), so each signal needs only wake it.
    func take(_ chunks: Int) -> SHA256Hasher? {
        while true {
            let settled: SHA256Hasher?? = state.withLock { s in
                guard s.states[chunks] != nil || s.closed else { return nil }
                defer { s.states = s.states.filter { $0.key > chunks } }
                return .some(s.states[chunks])
            }
            if let settled { return settled }
            changed.wait()
        }
    }
}
