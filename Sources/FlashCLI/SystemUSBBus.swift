public import Hotplug
import Synchronization
public import Timekeeping
public import USBHost
public import USBModel

/// The real USB bus: libusb (USBHost) for devices and transfers, libudev (Hotplug) for events.
/// The composition root of the host side; the flashing engine only sees `USBBus`.
///
/// One udev monitor per bus (per process), opened by the first subscription, fanned out to every
/// subscriber's own queue: the tracker, `watch`, a station's status page never take events from
/// each other.
public final class SystemUSBBus: USBBus {
    public let clock: any FlashClock
    /// The process's libusb context.
    public let context: USBContext
    private let source: UdevEventSource
    private let hub: EventHub
    private let watcher = Mutex<Task<Void, Never>?>(nil)

    /// The corresponding C function is `libusb_init`.
    public init(clock: any FlashClock = SystemClock(), eventSource: UdevEventSource = .detect()) throws {
        self.clock = clock
        context = try USBContext(clock: clock)
        source = eventSource
        hub = EventHub(clock: clock)
    }

    deinit { watcher.withLock { $0?.cancel() } }

    /// Opens the udev monitor on first use; every subscription sees events from its own call on.
    public func subscribe() async throws -> any HotplugSubscription {
        let subscription = hub.subscribe()
        try watcher.withLock { task throws in
            guard task == nil else { return }
            let events = try HotplugMonitor.events(source: source, clock: clock)
            task = Task { [hub] in
                for await event in events { hub.deliver(event) }
                hub.finish()
            }
        }
        return subscription
    }

    public func dfuDevices(skipping: Set<PortPath>) async throws -> [DFUDeviceListing] {
        try await context.dfuDevices(skipping: skipping)
    }

    public func open(port: PortPath) async throws -> any USBControlTransport {
        try await context.open(port: port)
    }
}
