import Foundation
import Synchronization

/// A thread that runs one closure, for blocking work (a pipe, a socket, O_DIRECT I/O) that must
/// not sit on Dispatch's shared pool. `join()` waits for it and hands back its value or error.
///
/// The closure usually captures its owner's non-Sendable state (a connection, a source). What it
/// touches while the owner's thread goes on is the owner's to keep apart; each use says what the
/// two threads share. That hand-over is why the box below is `@unchecked`.
public final class Worker<Value: Sendable>: Sendable {
    private let outcome = Mutex<Result<Value, any Error>?>(nil)
    private let finished = DispatchSemaphore(value: 0)

    private struct Body: @unchecked Sendable {
        let run: () throws -> Value
    }

    public init(name: String, stackSize: Int = 1 << 20, _ body: @escaping () throws -> Value) {
        let box = Body(run: body)
        let thread = Thread { [self] in
            let result = Result { try box.run() }
            outcome.withLock { $0 = result }
            finished.signal()
        }
        thread.name = name
        thread.stackSize = stackSize
        thread.start()
    }

    /// Waits for the closure to return; rethrows its error.
    @discardableResult
    public func join() throws -> Value { try result().get() }

    /// Waits for the closure to return; its value or its error.
    public func result() -> Result<Value, any Error> {
        finished.wait()
        finished.signal() // later joins return at once
        return outcome.withLock { $0! }
    }
}
