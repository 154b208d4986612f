public import Hotplug
import Synchronization
public import Timekeeping
public import USBHost
public import USBModel

/// The real USB bus: libusb (USBHost) for devices and transfers, libudev (Hotplug) for events.
/// The composition root of the host side; the flashing engine only sees `USBBus`.
public final class SystemUSBBus: USBBus {
    public let clock: any FlashClock
    /// The process's libusb context.
    public let context: USBContext
    private let source: UdevEventSource
    private let inbox = EventInbox()
    private let watcher = Mutex<Task<Void, Never>?>(nil)

    /// The corresponding C function is `libusb_init`.
    public init(clock: any FlashClock = SystemClock(), eventSource: UdevEventSource = .detect()) throws {
        self.clock = clock
        context = try USBContext(clock: clock)
        source = eventSource
    }

    deinit { watcher.withLock { $0?.cancel() } }

    /// Opens the udev monitor now (events from here on are buffered until read). Idempotent.
    public func startWatching() async throws {
        try watcher.withLock { task throws in
            guard task == nil else { return }
            let events = try HotplugMonitor.events(source: source, clock: clock)
            task = Task { [inbox] in
                for await event in events { await inbox.deliver(event) }
                await inbox.finish()
            }
        }
    }

    /// The next event, or nil once `deadline` has passed (or the monitor stopped).
    public func nextEvent(until deadline: Duration) async throws -> HotplugEvent? {
        let inbox = inbox
        let clock = clock
        while true {
            if let event = await inbox.pop() { return event }
            if await inbox.isFinished || clock.now >= deadline { return nil }
            let arrived = try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask { await inbox.waitForEvent() }
                group.addTask {
                    try await clock.sleep(until: deadline)
                    return false
                }
                let first = try await group.next() ?? false
                group.cancelAll()
                return first
            }
            if !arrived { return await inbox.pop() }
        }
    }

    public func dfuDevices() async throws -> [USBDeviceIdentity] {
        try await context.dfuDevices().map(\.identity)
    }

    /// DFU devices with their alternate settings' names (for `list`).
    public func dfuListings() async throws -> [DFUDeviceListing] {
        try await context.dfuDevices()
    }

    public func open(port: PortPath) async throws -> any USBControlTransport {
        try await context.open(port: port)
    }
}

/// Events between the monitor's stream and `nextEvent`, which a timeout may abandon without
/// losing an event: waiting never takes one, only `pop` does.
private actor EventInbox {
    private var buffered: [HotplugEvent] = []
    private var waiters: [Int: CheckedContinuation<Bool, Never>] = [:]
    private var nextWaiter = 0
    private(set) var isFinished = false

    func deliver(_ event: HotplugEvent) {
        buffered.append(event)
        wakeAll(true)
    }

    func finish() {
        isFinished = true
        wakeAll(false)
    }

    func pop() -> HotplugEvent? { buffered.isEmpty ? nil : buffered.removeFirst() }

    /// Returns true once an event is buffered, false when cancelled or the stream ended.
    func waitForEvent() async -> Bool {
        if !buffered.isEmpty { return true }
        if isFinished { return false }
        let id = nextWaiter
        nextWaiter += 1
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if Task.isCancelled { continuation.resume(returning: false) } else { waiters[id] = continuation }
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    private func cancelWaiter(_ id: Int) { waiters.removeValue(forKey: id)?.resume(returning: false) }

    private func wakeAll(_ value: Bool) {
        let current = waiters
        waiters = [:]
        for continuation in current.values { continuation.resume(returning: value) }
    }
}
