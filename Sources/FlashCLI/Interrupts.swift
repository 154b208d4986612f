import Dispatch
import Glibc
import Synchronization

/// Turns SIGINT (Ctrl-C) and SIGTERM into task cancellation while `body` runs, so the engine stops
/// between transfers, leaves the board usable and reports `cancelled` instead of dying mid-write.
/// A second signal exits at once (status 128 + signal) after `onForcedExit` printed where the
/// board was left.
enum Interrupts {
    /// The first signal received since `arm()` (0: none). A run that saw one never ends in
    /// success, even if the engine had already finished.
    static let received = Atomic<Int32>(0)

    /// The process's one watcher, from `arm()` until a body ends.
    private static let watcher = Mutex<SignalWatcher?>(nil)

    /// Catches SIGINT and SIGTERM from now on. Commands call it before their first output line
    /// (`start`), so a signal that arrives before the device work begins is not lost to the
    /// default action (which would end the process without its `failed` line): it cancels the
    /// body as soon as `cancellingOnInterrupt` starts it.
    static func arm() {
        watcher.withLock { if $0 == nil { $0 = SignalWatcher() } }
    }

    static func cancellingOnInterrupt<T: Sendable>(
        onForcedExit: @escaping @Sendable (Int32) -> Void = { _ in },
        _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        arm()
        let current = watcher.withLock { $0! }
        let task = Task { try await body() }
        current.watch(cancel: { task.cancel() }, onForcedExit: onForcedExit)
        defer {
            watcher.withLock { $0 = nil }
            current.stop()
        }
        return try await task.value
    }

    /// The exit status for a run stopped by `signal`: 130 for SIGINT, 143 for SIGTERM.
    static func exitStatus(for signal: Int32) -> Int32 { 128 + (signal == 0 ? SIGINT : signal) }
}

/// What a signal acts on: the watched body's cancel and forced-exit closures.
private final class WatchedBody: Sendable {
    struct Actions: Sendable {
        var cancel: (@Sendable () -> Void)?
        var onForcedExit: @Sendable (Int32) -> Void = { _ in }
    }
    let actions = Mutex(Actions())
}

/// Owns the SIGINT and SIGTERM inbox (only touched in `init` and `stop`) and what a signal does:
/// the first cancels the watched body (at once, or as soon as one is watched), a second exits.
private final class SignalWatcher: Sendable {
    private let inbox: SignalInbox
    private let body = WatchedBody()

    init() {
        inbox = SignalInbox([SIGINT, SIGTERM], queue: DispatchQueue(label: "stm32mp-flash.signals")) {
            [body] number in
            let (first, _) = Interrupts.received.compareExchange(
                expected: 0, desired: number, ordering: .sequentiallyConsistent)
            let actions = body.actions.withLock { $0 }
            if first {
                actions.cancel?()
            } else {
                actions.onForcedExit(number)
                _exit(Interrupts.exitStatus(for: number))
            }
        }
    }

    /// Watches a body: a signal already received cancels it now.
    func watch(cancel: @escaping @Sendable () -> Void, onForcedExit: @escaping @Sendable (Int32) -> Void) {
        let actions = WatchedBody.Actions(cancel: cancel, onForcedExit: onForcedExit)
        body.actions.withLock { $0 = actions }
        if Interrupts.received.load(ordering: .sequentiallyConsistent) != 0 { cancel() }
    }

    /// The body ended: signals get their default action again.
    func stop() { inbox.stop() }
}
