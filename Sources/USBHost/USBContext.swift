import CLibUSB
public import Timekeeping
public import USBModel

/// How long string reads keep trying right after enumeration, when a board may STALL them
/// for a moment (ST's own tool retries for the same reason; dfu-util shows "UNKNOWN").
public struct StringRetryPolicy: Sendable, Hashable {
    public var attempts: Int
    public var interval: Duration

    public init(attempts: Int = 10, interval: Duration = .milliseconds(50)) {
        precondition(attempts >= 1, "at least one attempt")
        self.attempts = attempts
        self.interval = interval
    }
}

/// The process's libusb context. Create one per process and keep it for the process's life:
/// libusb sets up its udev monitor and device list per context.
///
/// `@unchecked Sendable`: libusb contexts are thread-safe (libusb documents this); the only other
/// state is immutable. Blocking enumeration runs on a private queue, never on the caller's thread.
public final class USBContext: @unchecked Sendable {
    fileprivate let raw: ContextPointer
    /// The clock that string-read retries wait on.
    public let clock: any FlashClock
    public let stringRetry: StringRetryPolicy
    private let worker = BlockingWorker(label: "stm32mp-flash.usb-enumeration")
    /// Strings already read from the devices present now: a scan reads the names, then an open
    /// and the DFU layer ask for the same ones again (each a control transfer, ~3 ms under the
    /// emulator, more on a slow bootloader).
    let strings = StringCache()

    /// The corresponding C function is `libusb_init`.
    public init(clock: any FlashClock, stringRetry: StringRetryPolicy = StringRetryPolicy()) throws(USBTransferError) {
        var context: OpaquePointer?
        try checkLibUSB(libusb_init(&context), "libusb_init")
        guard let context else { throw USBTransferError(.other, operation: "libusb_init", detail: "no context") }
        raw = ContextPointer(pointer: context)
        self.clock = clock
        self.stringRetry = stringRetry
    }

    deinit { libusb_exit(raw.pointer) }

    /// Devices exposing a DFU interface (class 0xFE, subclass 0x01), found from cached
    /// descriptors only; only those devices are opened, to read their strings and alternate names.
    /// A device that cannot be opened (permissions) is still listed, without strings.
    /// Devices on `skipping` ports are listed from the cache only, without strings, never opened.
    public func dfuDevices(skipping: Set<PortPath> = []) async throws -> [DFUDeviceListing] {
        let found = try await worker.run { [raw, strings] () throws(USBTransferError) in
            try scanDFUDevices(raw.pointer, keepingStringsIn: strings)
        }
        var listings: [DFUDeviceListing] = []
        for device in found {
            let dfuAlternates = device.configuration.interfaces.filter(\.isDFU)
            // From the cache alone: names unknown.
            let unread = DFUDeviceListing(
                identity: device.identity,
                alternates: dfuAlternates.map {
                    DFUInterfaceAlternate(interface: $0.interfaceNumber, alternate: $0.alternateSetting, name: nil)
                })
            if skipping.contains(device.identity.port) {
                listings.append(unread)
                continue
            }
            do {
                let handle = try await open(port: device.identity.port)
                var alternates: [DFUInterfaceAlternate] = []
                for alt in dfuAlternates {
                    let name =
                        alt.interfaceStringIndex == 0 ? nil : try? await handle.string(index: alt.interfaceStringIndex)
                    alternates.append(
                        DFUInterfaceAlternate(
                            interface: alt.interfaceNumber, alternate: alt.alternateSetting, name: name))
                }
                await handle.close()
                listings.append(DFUDeviceListing(identity: handle.identity, alternates: alternates))
            } catch let error as USBTransferError where error.kind == .noDevice {
                continue  // Gone between scan and open: it will show up as a hot-plug event instead.
            } catch {
                listings.append(unread)
            }
        }
        return listings
    }

    /// Opens the device at `port` and reads its manufacturer, product and serial strings.
    /// The corresponding C function is `libusb_open`.
    public func open(port: PortPath) async throws -> USBDeviceHandle {
        let opened = try await worker.run { [raw, strings] () throws(USBTransferError) in
            try openDevice(raw.pointer, at: port, keepingStringsIn: strings)
        }
        let core = HandleCore(opened: opened, context: self)
        let descriptor = opened.descriptor
        var identity = opened.identity
        identity.manufacturer = try await core.optionalString(index: descriptor.manufacturerIndex)
        identity.product = try await core.optionalString(index: descriptor.productIndex)
        identity.serial = try await core.optionalString(index: descriptor.serialNumberIndex)
        return USBDeviceHandle(
            core: core, identity: identity, descriptor: descriptor, configuration: opened.configuration)
    }
}

extension USBContext {
    /// Whether libusb still lists `device` (it drops a disconnected device from its list in the
    /// step that marks it detached). Blocking, for a handle's queue.
    /// The corresponding C function is `libusb_get_device_list`.
    func lists(_ device: OpaquePointer?) -> Bool {
        guard let device else { return false }
        return (try? withDeviceList(raw.pointer) { devices in devices.contains(device) }) ?? false
    }
}

/// The libusb context pointer, which libusb allows to be used from any thread.
private struct ContextPointer: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// What enumeration learns from a device's cached descriptors.
struct ScannedDevice: Sendable {
    var identity: USBDeviceIdentity
    var descriptor: DeviceDescriptor
    var configuration: ConfigurationDescriptor
}

/// A just-opened libusb handle on its way to the handle's queue.
struct OpenedDevice: @unchecked Sendable {
    /// Owned: closed by `HandleCore`.
    var handle: OpaquePointer
    var identity: USBDeviceIdentity
    var descriptor: DeviceDescriptor
    var configuration: ConfigurationDescriptor
}

/// Calls `body` with every device libusb knows of, then frees the list.
/// The corresponding C function is `libusb_get_device_list`.
private func withDeviceList<T>(_ context: OpaquePointer, _ body: ([OpaquePointer]) throws(USBTransferError) -> T)
    throws(USBTransferError) -> T
{
    var list: UnsafeMutablePointer<OpaquePointer?>?
    let count = libusb_get_device_list(context, &list)
    guard count >= 0, let list else {
        throw USBTransferError(libusbCode: Int32(count), operation: "libusb_get_device_list")
    }
    defer { libusb_free_device_list(list, 1) }
    let devices = (0..<count).compactMap { list[$0] }
    return try body(devices)
}

/// Reads one device's identity (without strings) and descriptors from libusb's cache; nil when
/// its configuration does not satisfy `wanted` (default: a DFU interface) or its descriptors are
/// unreadable.
private func scanDevice(
    _ device: OpaquePointer, wanted: (ConfigurationDescriptor) -> Bool = { $0.interfaces.contains(where: \.isDFU) }
) -> ScannedDevice? {
    var raw = libusb_device_descriptor()
    guard libusb_get_device_descriptor(device, &raw) == 0 else { return nil }
    var config: UnsafeMutablePointer<libusb_config_descriptor>?
    guard libusb_get_config_descriptor(device, 0, &config) == 0, let config else { return nil }
    defer { libusb_free_config_descriptor(config) }
    let configuration = ConfigurationDescriptor(libusb: config.pointee)
    guard wanted(configuration) else { return nil }
    var ports = [UInt8](repeating: 0, count: 8)
    let depth = libusb_get_port_numbers(device, &ports, Int32(ports.count))
    let bus = Int(libusb_get_bus_number(device))
    guard depth > 0 else { return nil }  // A root hub has no port path, and no DFU interface.
    let descriptor = DeviceDescriptor(libusb: raw)
    let identity = USBDeviceIdentity(
        port: PortPath(bus: bus, ports: ports.prefix(Int(depth)).map(Int.init)), busNumber: bus,
        deviceAddress: Int(libusb_get_device_address(device)), vendorID: raw.idVendor, productID: raw.idProduct,
        bcdDevice: raw.bcdDevice, speed: USBSpeed(libusbSpeed: libusb_get_device_speed(device)))
    return ScannedDevice(identity: identity, descriptor: descriptor, configuration: configuration)
}

private func scanDFUDevices(_ context: OpaquePointer, keepingStringsIn strings: StringCache) throws(USBTransferError)
    -> [ScannedDevice]
{
    try withDeviceList(context) { devices in
        strings.keepOnly(devices.map(StringCache.Enumeration.init(device:)))
        return devices.compactMap { scanDevice($0) }.sorted { $0.identity.port < $1.identity.port }
    }
}

/// Opens the device at `port` if it has a DFU interface or U-Boot's fastboot interface (FF/42/03
/// with bulk endpoints); other devices are never opened.
private func openDevice(_ context: OpaquePointer, at port: PortPath, keepingStringsIn strings: StringCache)
    throws(USBTransferError) -> OpenedDevice
{
    try withDeviceList(context) { devices throws(USBTransferError) in
        strings.keepOnly(devices.map(StringCache.Enumeration.init(device:)))
        for device in devices {
            guard
                let scanned = scanDevice(
                    device,
                    wanted: { $0.interfaces.contains(where: \.isDFU) || FastbootInterface.find(in: $0) != nil }),
                scanned.identity.port == port
            else { continue }
            var handle: OpaquePointer?
            try checkLibUSB(libusb_open(device, &handle), "libusb_open")
            guard let handle else { throw USBTransferError(.other, operation: "libusb_open", detail: "no handle") }
            return OpenedDevice(
                handle: handle, identity: scanned.identity, descriptor: scanned.descriptor,
                configuration: scanned.configuration)
        }
        throw USBTransferError(
            .notFound, operation: "libusb_open", detail: "no DFU device at port \(port), nor a fastboot device")
    }
}
