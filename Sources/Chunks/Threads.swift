import Dispatch
import Foundation

/// A semaphore for "this thread finished" handshakes.
public final class Completion: @unchecked Sendable {
    private let s = DispatchSemaphore(value: 0)
    public init() {}
    public func signal() { s.signal() }
    public func wait() { s.wait() }
}

/// A dedicated thread (not a pool worker) for a blocking loop such as a socket reader.
public final class BlockingThread {
    private let thread: Thread
    public init(_ body: @escaping @Sendable () -> Void) {
        thread = Thread(block: body)
        thread.stackSize = 1 << 20
    }
    public func start() { thread.start() }
}
