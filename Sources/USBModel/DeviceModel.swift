/// Device side of USB: a device that answers control requests. Implemented by the virtual board's
/// firmware personalities; hosted in memory by the virtual bus, or at the kernel interface by the
/// umockdev emulator. Only descriptors and EP0 matter here: every STM32MP DFU stage uses EP0 only.
///
/// Not thread-safe by itself: whoever hosts the device serializes every call.
public protocol USBDeviceModel: AnyObject {
    /// The device descriptor.
    var deviceDescriptor: DeviceDescriptor { get }
    /// The (only) configuration.
    var configuration: ConfigurationDescriptor { get }
    /// Link speed this device enumerates at.
    var speed: USBSpeed { get }
    /// String descriptor `index` (0 = language table); nil = STALL (e.g. transiently unreadable).
    func stringDescriptor(index: UInt8, languageID: UInt16) -> [UInt8]?
    /// SET_INTERFACE; false = STALL.
    func setInterface(_ interface: UInt8, alternate: UInt8) -> Bool
    /// A class or vendor control request (standard descriptor requests are answered by the host
    /// of the model from the properties above).
    func control(_ setup: SetupPacket, data: [UInt8]) -> DeviceControlReply
    /// A USB bus reset on this port.
    func busReset()
}

/// How a device answers one control request.
public struct DeviceControlReply: Sendable, Hashable {
    public enum Outcome: Sendable, Hashable {
        /// Data stage (IN: the bytes returned; OUT: empty) and status stage completed.
        case ok([UInt8])
        /// STALL handshake.
        case stall
        /// No answer at all (the host times out).
        case noAnswer
    }

    public var outcome: Outcome
    /// How long the device holds the transfer before answering (busy writing storage, …).
    public var latency: Duration

    public init(_ outcome: Outcome, latency: Duration = .zero) {
        self.outcome = outcome
        self.latency = latency
    }

    public static let ack = DeviceControlReply(.ok([]))
    public static let stall = DeviceControlReply(.stall)
    public static func data(_ bytes: [UInt8], latency: Duration = .zero) -> DeviceControlReply {
        DeviceControlReply(.ok(bytes), latency: latency)
    }
}

/// A change of what is plugged into a port, scheduled by a simulated board.
public enum BusTransition {
    /// The device on `port` disconnects.
    case detach(port: PortPath)
    /// `device` enumerates on `port`.
    case attach(port: PortPath, device: any USBDeviceModel)
}

/// A simulated board: one port whose device changes over time (ROM → TF-A → U-Boot …). Hosts (the
/// in-memory virtual bus, the umockdev emulator) call `advance(to:)` with their clock's time and
/// apply the transitions it returns in order, and call it again after every control request,
/// since a request (DFU_DETACH) can schedule a transition.
public protocol SimulatedBoard: AnyObject {
    /// The port the board is plugged into.
    var port: PortPath { get }
    /// The device enumerated right now, if any.
    var attachedDevice: (any USBDeviceModel)? { get }
    /// When the next scheduled transition is due, if one is.
    var nextTransitionTime: Duration? { get }
    /// Applies every transition due at or before `now` and returns them in order.
    func advance(to now: Duration) -> [BusTransition]
}
