/// The 8-byte SETUP stage of a USB control transfer (USB 2.0 §9.3).
public struct SetupPacket: Sendable, Hashable, CustomStringConvertible {
    public var requestType: UInt8
    public var request: UInt8
    public var value: UInt16
    public var index: UInt16
    public var length: UInt16

    public init(requestType: UInt8, request: UInt8, value: UInt16, index: UInt16, length: UInt16) {
        self.requestType = requestType
        self.request = request
        self.value = value
        self.index = index
        self.length = length
    }

    /// Decodes the little-endian wire form; nil unless exactly 8 bytes are given.
    public init?(bytes: some Collection<UInt8>) {
        let b = Array(bytes)
        guard b.count == 8 else { return nil }
        requestType = b[0]
        request = b[1]
        value = UInt16(b[2]) | UInt16(b[3]) << 8
        index = UInt16(b[4]) | UInt16(b[5]) << 8
        length = UInt16(b[6]) | UInt16(b[7]) << 8
    }

    /// The little-endian wire form.
    public var bytes: [UInt8] {
        [
            requestType, request, UInt8(value & 0xFF), UInt8(value >> 8),
            UInt8(index & 0xFF), UInt8(index >> 8), UInt8(length & 0xFF), UInt8(length >> 8),
        ]
    }

    /// True when the data stage goes device-to-host.
    public var isIn: Bool { requestType & 0x80 != 0 }

    public var description: String {
        func hex(_ v: some FixedWidthInteger, _ width: Int) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return
            "\(hex(requestType, 2)) \(hex(request, 2)) wValue=\(hex(value, 4)) wIndex=\(hex(index, 4)) wLength=\(length)"
    }
}

/// Values of bmRequestType and bRequest that the tool and the virtual board use.
public enum USBRequest {
    /// bmRequestType: host-to-device, standard, interface.
    public static let standardInterfaceOut: UInt8 = 0x01
    /// bmRequestType: device-to-host, standard, device.
    public static let standardDeviceIn: UInt8 = 0x80
    /// bmRequestType: device-to-host, standard, interface.
    public static let standardInterfaceIn: UInt8 = 0x81
    /// bmRequestType: host-to-device, class, interface.
    public static let classInterfaceOut: UInt8 = 0x21
    /// bmRequestType: device-to-host, class, interface.
    public static let classInterfaceIn: UInt8 = 0xA1

    public static let getStatus: UInt8 = 0x00
    public static let getDescriptor: UInt8 = 0x06
    public static let getConfiguration: UInt8 = 0x08
    public static let setConfiguration: UInt8 = 0x09
    public static let setInterface: UInt8 = 0x0B
}

/// Descriptor type codes (USB 2.0 table 9-5, plus the DFU functional descriptor).
public enum DescriptorType {
    public static let device: UInt8 = 0x01
    public static let configuration: UInt8 = 0x02
    public static let string: UInt8 = 0x03
    public static let interface: UInt8 = 0x04
    public static let endpoint: UInt8 = 0x05
    public static let deviceQualifier: UInt8 = 0x06
    public static let dfuFunctional: UInt8 = 0x21
}
