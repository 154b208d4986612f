import CLibUdev
import Dispatch
import Glibc
public import Timekeeping
public import USBModel

/// Where udev events come from. `udev` gets events after udevd has processed them (device nodes
/// and permissions exist); `kernel` gets them straight from the kernel and is the only source
/// that works where no udevd runs (containers, minimal VMs).
public enum UdevEventSource: String, Sendable, Hashable, CaseIterable {
    case udev, kernel

    /// `udev` when udevd is running (its control socket exists), else `kernel`.
    public static func detect(controlSocket: String = "/run/udev/control") -> UdevEventSource {
        access(controlSocket, F_OK) == 0 ? .udev : .kernel
    }
}

/// The udev monitor could not be set up.
public struct HotplugError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The libudev call that failed.
    public var operation: String
    public var errorNumber: Int32

    public init(operation: String, errorNumber: Int32) {
        self.operation = operation
        self.errorNumber = errorNumber
    }

    public var description: String {
        "\(operation) failed: \(String(cString: strerror(errorNumber))); hot-plug events are unavailable"
    }
}

/// USB device add/remove events from libudev, as an async stream.
public enum HotplugMonitor {
    /// Opens a udev monitor for USB devices (not interfaces) at once, so no event after this call
    /// is lost, and returns its events in arrival order. Each event's `time` is `clock.now` when
    /// it was read from the monitor socket. Up to 256 unread events are kept (the newest).
    /// Ending the stream (cancelling the consuming task, dropping it) frees the monitor.
    /// The corresponding C function is `udev_monitor_new_from_netlink`.
    public static func events(
        source: UdevEventSource = .detect(), clock: any FlashClock
    ) throws(HotplugError) -> AsyncStream<HotplugEvent> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: HotplugEvent.self, bufferingPolicy: .bufferingNewest(256))
        let monitor = try MonitorSource(source: source, clock: clock, continuation: continuation)
        continuation.onTermination = { _ in monitor.cancel() }
        monitor.start()
        return stream
    }
}

/// Owns the libudev objects and the dispatch read source of one monitor.
///
/// `@unchecked Sendable`: libudev objects are not thread-safe; after `init` they and `known` are
/// only touched on `queue` (the read source's event and cancel handlers run there).
private final class MonitorSource: @unchecked Sendable {
    private let udev: OpaquePointer
    private let monitor: OpaquePointer
    private let clock: any FlashClock
    private let continuation: AsyncStream<HotplugEvent>.Continuation
    private let queue = DispatchQueue(label: "stm32mp-flash.udev-monitor")
    private let readSource: any DispatchSourceRead
    /// Last identity seen per syspath, for remove events (sysfs is gone by then on a real kernel).
    private var known: [String: USBDeviceIdentity] = [:]

    init(source: UdevEventSource, clock: any FlashClock, continuation: AsyncStream<HotplugEvent>.Continuation)
        throws(HotplugError)
    {
        guard let udev = udev_new() else { throw HotplugError(operation: "udev_new", errorNumber: errno) }
        guard let monitor = udev_monitor_new_from_netlink(udev, source.rawValue) else {
            let error = errno
            udev_unref(udev)
            throw HotplugError(operation: "udev_monitor_new_from_netlink(\(source.rawValue))", errorNumber: error)
        }
        var rc = udev_monitor_filter_add_match_subsystem_devtype(monitor, "usb", "usb_device")
        if rc >= 0 { rc = udev_monitor_enable_receiving(monitor) }
        guard rc >= 0 else {
            udev_monitor_unref(monitor)
            udev_unref(udev)
            throw HotplugError(operation: "udev_monitor_enable_receiving", errorNumber: -rc)
        }
        self.udev = udev
        self.monitor = monitor
        self.clock = clock
        self.continuation = continuation
        readSource = DispatchSource.makeReadSource(fileDescriptor: udev_monitor_get_fd(monitor), queue: queue)
        rememberPresentDevices()
    }

    /// Caches the devices already plugged in (after the monitor is open, so none slips between),
    /// so that their remove events carry strings: by then sysfs is gone.
    /// The corresponding C function is `udev_enumerate_scan_devices`.
    private func rememberPresentDevices() {
        guard let enumerate = udev_enumerate_new(udev) else { return }
        defer { udev_enumerate_unref(enumerate) }
        _ = udev_enumerate_add_match_subsystem(enumerate, "usb")
        _ = udev_enumerate_add_match_property(enumerate, "DEVTYPE", "usb_device")
        guard udev_enumerate_scan_devices(enumerate) >= 0 else { return }
        var entry = udev_enumerate_get_list_entry(enumerate)
        while let current = entry {
            entry = udev_list_entry_get_next(current)
            guard let syspath = udev_list_entry_get_name(current),
                let device = udev_device_new_from_syspath(udev, syspath)
            else { continue }
            defer { udev_device_unref(device) }
            if let identity = UdevDeviceFields(device).identity { known[String(cString: syspath)] = identity }
        }
    }

    func start() {
        readSource.setEventHandler { [self] in drain() }
        readSource.setCancelHandler { [self] in
            udev_monitor_unref(monitor)
            udev_unref(udev)
            continuation.finish()
        }
        readSource.activate()
    }

    func cancel() { readSource.cancel() }

    /// The socket is non-blocking: read until libudev has nothing more.
    private func drain() {
        while let device = udev_monitor_receive_device(monitor) {
            let time = clock.now
            defer { udev_device_unref(device) }
            guard let event = event(from: device, time: time) else { continue }
            continuation.yield(event)
        }
    }

    private func event(from device: OpaquePointer, time: Duration) -> HotplugEvent? {
        guard let syspathC = udev_device_get_syspath(device), let actionC = udev_device_get_action(device) else {
            return nil
        }
        let syspath = String(cString: syspathC)
        switch String(cString: actionC) {
        case "add":
            guard let identity = UdevDeviceFields(device).identity else { return nil }
            known[syspath] = identity
            return HotplugEvent(action: .add, device: identity, time: time)
        case "remove":
            guard let identity = known.removeValue(forKey: syspath) ?? UdevDeviceFields(device).identity else {
                return nil
            }
            return HotplugEvent(action: .remove, device: identity, time: time)
        default:
            return nil  // bind, unbind, change: the device stays where it is.
        }
    }
}

/// Reads a udev device's properties and sysfs attributes (valid only while `device` is).
private struct UdevDeviceFields {
    let device: OpaquePointer

    init(_ device: OpaquePointer) { self.device = device }

    func property(_ name: String) -> String? {
        udev_device_get_property_value(device, name).map { String(cString: $0) }
    }
    func attribute(_ name: String) -> String? {
        udev_device_get_sysattr_value(device, name).map { String(cString: $0).trimmingWhitespace }
    }

    /// nil for root hubs (`usb1`), whose sysname is no port path.
    var identity: USBDeviceIdentity? {
        guard let sysname = udev_device_get_sysname(device), let port = PortPath(String(cString: sysname)) else {
            return nil
        }
        // PRODUCT is the kernel's `vid/pid/bcd` in hex without leading zeros, present without udevd.
        let product = property("PRODUCT")?.split(separator: "/").map { UInt16($0, radix: 16) } ?? []
        func hexID(_ property: String, _ attribute: String, _ productField: Int) -> UInt16? {
            (self.property(property) ?? self.attribute(attribute)).flatMap { UInt16($0, radix: 16) }
                ?? (product.count == 3 ? product[productField] : nil)
        }
        guard let vendorID = hexID("ID_VENDOR_ID", "idVendor", 0), let productID = hexID("ID_MODEL_ID", "idProduct", 1)
        else {
            return nil
        }
        let bcdDevice =
            attribute("bcdDevice").flatMap { UInt16($0, radix: 16) } ?? (product.count == 3 ? product[2] ?? 0 : 0)
        return USBDeviceIdentity(
            port: port, busNumber: (property("BUSNUM") ?? attribute("busnum")).flatMap { Int($0) } ?? port.bus,
            deviceAddress: (property("DEVNUM") ?? attribute("devnum")).flatMap { Int($0) } ?? 0,
            vendorID: vendorID, productID: productID, bcdDevice: bcdDevice, manufacturer: attribute("manufacturer"),
            product: attribute("product"), serial: attribute("serial"),
            speed: attribute("speed").map { USBSpeed(sysfsMbps: $0) } ?? .unknown)
    }
}
