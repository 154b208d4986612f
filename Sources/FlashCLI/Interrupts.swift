import Dispatch
import Glibc
import Synchronization

/// Turns SIGINT (Ctrl-C) and SIGTERM into task cancellation while `body` runs, so the engine stops
/// between transfers, leaves the board usable and reports `cancelled` instead of dying mid-write.
/// A second signal exits at once (status 128 + signal) after `onForcedExit` printed where the
/// board was left.
enum Interrupts {
    /// The first signal received while a body ran (0: none). A run that saw one never ends in
    /// success, even if the engine had already finished.
    static let received = Atomic<Int32>(0)

    static func cancellingOnInterrupt<T: Sendable>(
        onForcedExit: @escaping @Sendable (Int32) -> Void = { _ in },
        _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let task = Task { try await body() }
        let watcher = SignalWatcher(task: task, onForcedExit: onForcedExit)
        defer { watcher.stop() }
        return try await task.value
    }

    /// The exit status for a run stopped by `signal`: 130 for SIGINT, 143 for SIGTERM.
    static func exitStatus(for signal: Int32) -> Int32 { 128 + (signal == 0 ? SIGINT : signal) }
}

/// Owns the SIGINT and SIGTERM dispatch sources; only touched from `queue` after init.
private final class SignalWatcher: @unchecked Sendable {
    private let queue = DispatchQueue(label: "stm32mp-flash.signals")
    private let sources: [any DispatchSourceSignal]

    init<T: Sendable>(task: Task<T, any Error>, onForcedExit: @escaping @Sendable (Int32) -> Void) {
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler {
                let (first, _) = Interrupts.received.compareExchange(
                    expected: 0, desired: number, ordering: .sequentiallyConsistent)
                if first {
                    task.cancel()
                } else {
                    onForcedExit(number)
                    _exit(Interrupts.exitStatus(for: number))
                }
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    func stop() {
        for source in sources { source.cancel() }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}
