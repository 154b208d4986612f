import Synchronization
public import Timekeeping

/// Fans one stream of hot-plug events out to any number of subscribers, each with its own queue,
/// so that a consumer that is slow, waiting with a timeout or gone never takes or blocks an event
/// meant for another. A bus feeds it from its single event source.
public final class EventHub: Sendable {
    private let clock: any FlashClock
    private let state = Mutex(State())

    private struct State {
        var queues: [Int: [HotplugEvent]] = [:]
        /// One waiter per subscriber at most (a subscription is read by one task at a time).
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextID = 0
        var finished = false
    }

    public init(clock: any FlashClock) { self.clock = clock }

    /// A new subscriber that sees every event delivered from now on.
    public func subscribe() -> any HotplugSubscription {
        let id = state.withLock { state in
            defer { state.nextID += 1 }
            state.queues[state.nextID] = []
            return state.nextID
        }
        return HotplugSubscriber(
            next: { [self] deadline in try await next(id, until: deadline) }, onEnd: { [self] in unsubscribe(id) })
    }

    /// Queues `event` for every subscriber and wakes those waiting.
    public func deliver(_ event: HotplugEvent) {
        let woken = state.withLock { state in
            for id in state.queues.keys { state.queues[id]?.append(event) }
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in woken { waiter.resume() }
    }

    /// The source ended: subscribers get what is queued, then nil.
    public func finish() {
        let woken = state.withLock { state in
            state.finished = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in woken { waiter.resume() }
    }

    private func unsubscribe(_ id: Int) {
        let waiter = state.withLock { state in
            state.queues[id] = nil
            return state.waiters.removeValue(forKey: id)
        }
        waiter?.resume()
    }

    private func next(_ id: Int, until deadline: Duration) async throws -> HotplugEvent? {
        while true {
            let (event, finished) = state.withLock { state -> (HotplugEvent?, Bool) in
                if let first = state.queues[id]?.first {
                    state.queues[id]?.removeFirst()
                    return (first, false)
                }
                return (nil, state.finished)
            }
            if let event { return event }
            if finished || clock.now >= deadline { return nil }
            try await waitForEvent(id, until: deadline)
        }
    }

    /// Returns when an event is queued for `id`, the deadline passes or the task is cancelled.
    private func waitForEvent(_ id: Int, until deadline: Duration) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [clock] in try await clock.sleep(until: deadline) }
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let resumeNow = self.state.withLock { state -> Bool in
                            if Task.isCancelled || state.finished || !(state.queues[id]?.isEmpty ?? true) {
                                return true
                            }
                            state.waiters[id] = continuation
                            return false
                        }
                        if resumeNow { continuation.resume() }
                    }
                } onCancel: {
                    let waiter = self.state.withLock { $0.waiters.removeValue(forKey: id) }
                    waiter?.resume()
                }
            }
            _ = try await group.next()
            group.cancelAll()
        }
        try Task.checkCancellation()
    }
}

/// A subscription made of two closures: how to read the subscriber's next event, and what to do
/// when the subscription is dropped (unsubscribe). Buses build theirs from it.
public final class HotplugSubscriber: HotplugSubscription {
    private let read: @Sendable (Duration) async throws -> HotplugEvent?
    private let end: @Sendable () -> Void

    public init(
        next: @escaping @Sendable (Duration) async throws -> HotplugEvent?, onEnd: @escaping @Sendable () -> Void
    ) {
        read = next
        end = onEnd
    }

    deinit { end() }

    public func next(until deadline: Duration) async throws -> HotplugEvent? { try await read(deadline) }
}
