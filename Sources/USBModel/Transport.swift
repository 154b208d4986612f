public import Timekeeping

/// An opened USB device, host side: what the DFU client needs and nothing more. Implemented over
/// libusb (USBHost) and in memory over the virtual board (VirtualBoard), so the same DFU and
/// engine code drives both.
///
/// Implementations must never block the cooperative thread pool: blocking C calls run on their
/// own thread or queue.
public protocol USBControlTransport: Sendable {
    /// The identity this handle was opened for (strings filled in).
    var identity: USBDeviceIdentity { get }
    /// The device descriptor.
    func deviceDescriptor() async throws -> DeviceDescriptor
    /// The active configuration with all interface and class descriptors.
    func configurationDescriptor() async throws -> ConfigurationDescriptor
    /// String descriptor `index` in US English; retries through the transient state right after
    /// enumeration are the implementation's job.
    func string(index: UInt8) async throws -> String
    /// Claims `interface` if needed and selects `alternate` (standard SET_INTERFACE).
    func setAlternate(interface: UInt8, alternate: UInt8) async throws
    /// A control transfer with an IN data stage of at most `setup.length` bytes.
    func controlIn(_ setup: SetupPacket, timeout: Duration) async throws -> [UInt8]
    /// A control transfer with an OUT data stage (`data` may be empty).
    func controlOut(_ setup: SetupPacket, data: [UInt8], timeout: Duration) async throws
    /// Releases the handle. Safe to call twice.
    func close() async
}

/// A device appearing or disappearing, as udev (or the virtual bus) reports it.
public struct HotplugEvent: Sendable, Hashable, Codable {
    public enum Action: String, Sendable, Hashable, Codable { case add, remove }

    public var action: Action
    /// The identity as far as known at event time (on remove, what was last seen at that port).
    public var device: USBDeviceIdentity
    /// When it was seen, on the bus's clock.
    public var time: Duration

    public init(action: Action, device: USBDeviceIdentity, time: Duration) {
        self.action = action
        self.device = device
        self.time = time
    }
}

/// One consumer's view of hot-plug events. Each subscriber has its own queue: it sees every event
/// that happened after it subscribed, in order, whatever other subscribers read (events are
/// multicast, never taken away from anyone).
public protocol HotplugSubscription: Sendable {
    /// The next add/remove event for this subscriber, or nil once `deadline` (on the bus clock)
    /// has passed or the event source ended.
    func next(until deadline: Duration) async throws -> HotplugEvent?
}

/// The host's view of the USB bus: which devices are there, what changes, and how to open one.
/// Real: libusb + libudev, composed in the CLI. Simulated: the virtual bus of VirtualBoard.
///
/// The bus holds one event source per process (one udev monitor) and fans its events out to
/// every subscription; the board tracker (BoardTracking) is the usual subscriber.
public protocol USBBus: Sendable {
    /// The clock that event times and deadlines refer to.
    var clock: any FlashClock { get }
    /// A new, independent subscription to hot-plug events, buffering from this call on. Subscribe
    /// before anything that makes a board re-enumerate (DFU_DETACH) so that no event is lost.
    /// Dropping the subscription ends it.
    func subscribe() async throws -> any HotplugSubscription
    /// USB devices present now that expose a DFU interface (class 0xFE/0x01), with their strings
    /// and alternate names. Devices on `skipping` ports are listed from cached descriptors only,
    /// never opened (another flasher holds them).
    func dfuDevices(skipping: Set<PortPath>) async throws -> [DFUDeviceListing]
    /// Opens the device currently at `port`.
    func open(port: PortPath) async throws -> any USBControlTransport
}

extension USBBus {
    /// Every DFU device present now, strings read where possible.
    public func dfuDevices() async throws -> [DFUDeviceListing] { try await dfuDevices(skipping: []) }
}

/// One alternate setting of a DFU interface and its name (`iInterface`), e.g. `@FSBL /0x01/1*1Me`.
public struct DFUInterfaceAlternate: Sendable, Hashable, Codable {
    public var interface: UInt8
    public var alternate: UInt8
    /// nil when the string could not be read.
    public var name: String?

    enum CodingKeys: String, CodingKey { case interface, alternate, name }

    /// An unreadable name is written as null, never left out.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(interface, forKey: .interface)
        try container.encode(alternate, forKey: .alternate)
        try container.encode(name, forKey: .name)
    }

    public init(interface: UInt8, alternate: UInt8, name: String?) {
        self.interface = interface
        self.alternate = alternate
        self.name = name
    }
}

/// A device with a DFU interface as a bus scan finds it: identity plus its alternate settings.
public struct DFUDeviceListing: Sendable, Hashable, Codable {
    public var identity: USBDeviceIdentity
    public var alternates: [DFUInterfaceAlternate]

    public init(identity: USBDeviceIdentity, alternates: [DFUInterfaceAlternate]) {
        self.identity = identity
        self.alternates = alternates
    }

    /// The alternate names that could be read.
    public var alternateNames: [String] { alternates.compactMap(\.name) }
}
