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
    /// wait is at most one chunk's hashing.
    func take(_ chunks: Int) -> SHA256Hasher? {
        while true {
            let found = state.withLock { s -> (SHA256Hasher?, Bool) in
                let h = s.states[chunks]
                if h != nil || s.closed {
                    s.states = s.states.filter { $0.key > chunks }
                    return (h, true)
                }
                return (nil, false)
            }
            if found.1 {
                if state.withLock({ $0.closed }) { changed.signal() } // wake any other waiter too
                return found.0
            }
            changed.wait()
        }
    }
}
