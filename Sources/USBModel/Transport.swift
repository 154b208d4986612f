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

/// The host's view of the USB bus: which devices are there, what changes, and how to open one.
/// Real: libusb + libudev, composed in the CLI. Simulated: the virtual bus of VirtualBoard.
public protocol USBBus: Sendable {
    /// The clock that event times and deadlines refer to.
    var clock: any FlashClock { get }
    /// Starts listening for hot-plug events. Call it before anything that makes the board
    /// re-enumerate (DFU_DETACH) so that no event is lost; events are buffered until read.
    func startWatching() async throws
    /// The next add/remove event, or nil once `deadline` (on `clock`) has passed.
    func nextEvent(until deadline: Duration) async throws -> HotplugEvent?
    /// USB devices present now that expose a DFU interface (class 0xFE/0x01), strings included
    /// where readable, without opening any other device.
    func dfuDevices() async throws -> [USBDeviceIdentity]
    /// Opens the device currently at `port`.
    func open(port: PortPath) async throws -> any USBControlTransport
}
