/// Where a device is plugged in: bus number and the chain of hub ports, as Linux names it in
/// sysfs (`1-2.3` = bus 1, root port 2, hub port 3).
///
/// The port path is the only key that survives every re-enumeration of an STM32MP board (the
/// serial may change or vanish between stages), so the tool follows boards by it first.
public struct PortPath: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var bus: Int
    public var ports: [Int]

    public init(bus: Int, ports: [Int]) {
        self.bus = bus
        self.ports = ports
    }

    /// Parses `B-P[.P…]`; nil when malformed.
    public init?(_ text: String) {
        let halves = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard halves.count == 2, let bus = Int(halves[0]), bus >= 0 else { return nil }
        let ports = halves[1].split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
        guard !ports.isEmpty, ports.allSatisfy({ $0 != nil && $0! > 0 }) else { return nil }
        self.bus = bus
        self.ports = ports.compactMap { $0 }
    }

    public var description: String { "\(bus)-" + ports.map(String.init).joined(separator: ".") }

    public static func < (a: PortPath, b: PortPath) -> Bool {
        a.bus != b.bus ? a.bus < b.bus : a.ports.lexicographicallyPrecedes(b.ports)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let path = PortPath(text) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "bad port path \(text)"))
        }
        self = path
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Link speed as the kernel reports it in sysfs `speed` (Mbit/s).
public enum USBSpeed: String, Sendable, Hashable, Codable, CaseIterable {
    case low, full, high, superSpeed = "super", superPlus = "super+", unknown

    /// From the sysfs `speed` attribute (`1.5`, `12`, `480`, `5000`, `10000`, `20000`).
    public init(sysfsMbps: String) {
        switch sysfsMbps.trimmingWhitespace {
        case "1.5": self = .low
        case "12": self = .full
        case "480": self = .high
        case "5000": self = .superSpeed
        case "10000", "20000": self = .superPlus
        default: self = .unknown
        }
    }

    /// The sysfs `speed` value for this link.
    public var sysfsMbps: String {
        switch self {
        case .low: "1.5"
        case .full: "12"
        case .high: "480"
        case .superSpeed: "5000"
        case .superPlus: "10000"
        case .unknown: "unknown"
        }
    }
}

/// Everything the host can learn about a USB device without opening it (sysfs, udev) plus the
/// strings read after opening. A plain value: copied out of libusb/libudev, safe to send anywhere.
public struct USBDeviceIdentity: Sendable, Hashable, Codable {
    public var port: PortPath
    public var busNumber: Int
    /// Changes on every enumeration: never use it to follow a board.
    public var deviceAddress: Int
    public var vendorID: UInt16
    public var productID: UInt16
    public var bcdDevice: UInt16
    public var manufacturer: String?
    public var product: String?
    public var serial: String?
    public var speed: USBSpeed

    public init(
        port: PortPath, busNumber: Int, deviceAddress: Int, vendorID: UInt16, productID: UInt16,
        bcdDevice: UInt16, manufacturer: String? = nil, product: String? = nil, serial: String? = nil,
        speed: USBSpeed = .high
    ) {
        self.port = port
        self.busNumber = busNumber
        self.deviceAddress = deviceAddress
        self.vendorID = vendorID
        self.productID = productID
        self.bcdDevice = bcdDevice
        self.manufacturer = manufacturer
        self.product = product
        self.serial = serial
        self.speed = speed
    }

    /// `0483:df11` style.
    public var vendorProduct: String { hex4(vendorID) + ":" + hex4(productID) }
}

/// Lower-case 4-digit hex, as lsusb and udev print IDs.
public func hex4(_ value: UInt16) -> String {
    let s = String(value, radix: 16)
    return String(repeating: "0", count: 4 - s.count) + s
}

extension StringProtocol {
    /// The text without leading and trailing spaces, TABs, CRs and LFs (no Foundation needed).
    public var trimmingWhitespace: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[first...last])
    }
}
