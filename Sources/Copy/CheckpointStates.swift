import Chunks
import Glibc

/// Whole-image hash states at checkpoint chunks, handed from the hashing side to whoever records
/// the checkpoint once the destination confirmed durability (another thread, a little later).
final class CheckpointStates {
    private var states: [Int: SHA256Hasher] = [:]
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    func put(_ chunks: Int, _ state: SHA256Hasher?) {
        pthread_mutex_lock(&mutex)
        if let state { states[chunks] = state }
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }

    /// The state after `chunks` chunks, waiting up to `seconds` for it to be put; older states
    /// are dropped.
    func take(_ chunks: Int, seconds: Int = 60) -> SHA256Hasher? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        deadline.tv_sec += seconds
        while states[chunks] == nil {
            if pthread_cond_timedwait(&cond, &mutex, &deadline) == ETIMEDOUT { break }
        }
        let s = states[chunks]
        states = states.filter { $0.key > chunks }
        return s
    }
}
