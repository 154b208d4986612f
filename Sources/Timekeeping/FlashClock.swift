import Synchronization

/// A monotonic clock that is injected everywhere time matters (timeouts, progress rates, the
/// virtual board's timing model), so tests run instantly and deterministically.
///
/// Instants are plain `Duration`s since the clock's origin: simple to store in events, to print and
/// to compare across targets without generic `Clock.Instant` plumbing.
public protocol FlashClock: Sendable {
    /// Time elapsed since this clock's origin.
    var now: Duration { get }
    /// Suspends until `deadline`; returns at once if it has passed.
    /// - Throws: `CancellationError` when the calling task is cancelled.
    func sleep(until deadline: Duration) async throws
}

extension FlashClock {
    /// Suspends for `duration` from now.
    public func sleep(for duration: Duration) async throws {
        try await sleep(until: now + duration)
    }
}

/// Real time, from `ContinuousClock`, with its origin at creation.
public struct SystemClock: FlashClock {
    private let origin: ContinuousClock.Instant

    public init() { origin = ContinuousClock.now }

    public var now: Duration { ContinuousClock.now - origin }

    public func sleep(until deadline: Duration) async throws {
        let remaining = deadline - now
        if remaining > .zero {
            try await Task.sleep(for: remaining, clock: .continuous)
        } else {
            try Task.checkCancellation()
        }
    }
}

/// Virtual time for discrete-event simulation: `sleep(until:)` moves `now` forward at once.
///
/// Only correct when one task drives the simulation (the flashing driver does; the virtual board
/// is passive and answers on that task), so there is no other sleeper to wake in order.
public final class SimulatedClock: FlashClock {
    private let current: Mutex<Duration>

    public init(start: Duration = .zero) { current = Mutex(start) }

    public var now: Duration { current.withLock { $0 } }

    public func sleep(until deadline: Duration) async throws {
        try Task.checkCancellation()
        advance(to: deadline)
    }

    /// Moves time forward to `instant` (never backward).
    public func advance(to instant: Duration) {
        current.withLock { if instant > $0 { $0 = instant } }
    }

    /// Moves time forward by `duration`.
    public func advance(by duration: Duration) {
        current.withLock { $0 += duration }
    }
}

extension Duration {
    /// The duration in seconds as a `Double`, for rates and human output.
    public var inSeconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }
}
