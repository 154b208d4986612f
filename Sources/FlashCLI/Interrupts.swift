import Dispatch
import Glibc

/// Turns Ctrl-C into task cancellation while `body` runs, so the engine stops between transfers
/// and reports `cancelled` instead of dying mid-write; a second Ctrl-C exits at once.
enum Interrupts {
    static func cancellingOnInterrupt<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let task = Task { try await body() }
        let source = SignalWatcher(task: task)
        defer { source.stop() }
        return try await task.value
    }
}

/// Owns the SIGINT dispatch source; only touched from `queue` after init.
private final class SignalWatcher: @unchecked Sendable {
    private let queue = DispatchQueue(label: "stm32mp-flash.sigint")
    private let source: any DispatchSourceSignal

    init<T: Sendable>(task: Task<T, any Error>) {
        signal(SIGINT, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGINT, queue: queue)
        var interrupted = false
        source.setEventHandler {
            if interrupted { _exit(130) }
            interrupted = true
            task.cancel()
        }
        source.resume()
    }

    func stop() {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
}
