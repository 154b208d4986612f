/// Standard device descriptor (18 bytes, USB 2.0 table 9-8).
public struct DeviceDescriptor: Sendable, Hashable {
    public var bcdUSB: UInt16
    public var deviceClass: UInt8
    public var deviceSubClass: UInt8
    public var deviceProtocol: UInt8
    public var maxPacketSize0: UInt8
    public var vendorID: UInt16
    public var productID: UInt16
    public var bcdDevice: UInt16
    public var manufacturerIndex: UInt8
    public var productIndex: UInt8
    public var serialNumberIndex: UInt8
    public var configurationCount: UInt8

    public init(
        bcdUSB: UInt16 = 0x0200, deviceClass: UInt8 = 0, deviceSubClass: UInt8 = 0, deviceProtocol: UInt8 = 0,
        maxPacketSize0: UInt8 = 64, vendorID: UInt16, productID: UInt16, bcdDevice: UInt16,
        manufacturerIndex: UInt8 = 1, productIndex: UInt8 = 2, serialNumberIndex: UInt8 = 3,
        configurationCount: UInt8 = 1
    ) {
        self.bcdUSB = bcdUSB
        self.deviceClass = deviceClass
        self.deviceSubClass = deviceSubClass
        self.deviceProtocol = deviceProtocol
        self.maxPacketSize0 = maxPacketSize0
        self.vendorID = vendorID
        self.productID = productID
        self.bcdDevice = bcdDevice
        self.manufacturerIndex = manufacturerIndex
        self.productIndex = productIndex
        self.serialNumberIndex = serialNumberIndex
        self.configurationCount = configurationCount
    }

    /// Parses the wire form; nil when shorter than 18 bytes or not a device descriptor.
    public init?(bytes: [UInt8]) {
        guard bytes.count >= 18, bytes[0] >= 18, bytes[1] == DescriptorType.device else { return nil }
        func u16(_ i: Int) -> UInt16 { UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8 }
        bcdUSB = u16(2)
        deviceClass = bytes[4]
        deviceSubClass = bytes[5]
        deviceProtocol = bytes[6]
        maxPacketSize0 = bytes[7]
        vendorID = u16(8)
        productID = u16(10)
        bcdDevice = u16(12)
        manufacturerIndex = bytes[14]
        productIndex = bytes[15]
        serialNumberIndex = bytes[16]
        configurationCount = bytes[17]
    }

    public var bytes: [UInt8] {
        [
            18, DescriptorType.device, UInt8(bcdUSB & 0xFF), UInt8(bcdUSB >> 8), deviceClass, deviceSubClass,
            deviceProtocol, maxPacketSize0, UInt8(vendorID & 0xFF), UInt8(vendorID >> 8),
            UInt8(productID & 0xFF), UInt8(productID >> 8), UInt8(bcdDevice & 0xFF), UInt8(bcdDevice >> 8),
            manufacturerIndex, productIndex, serialNumberIndex, configurationCount,
        ]
    }
}

/// One alternate setting of one interface, with the class-specific descriptors that follow it.
public struct InterfaceAltSetting: Sendable, Hashable {
    public var interfaceNumber: UInt8
    public var alternateSetting: UInt8
    public var interfaceClass: UInt8
    public var interfaceSubClass: UInt8
    public var interfaceProtocol: UInt8
    public var interfaceStringIndex: UInt8
    /// Descriptors between this interface descriptor and the next one (e.g. the DFU functional
    /// descriptor, which follows the last alternate).
    public var extra: [[UInt8]]

    public init(
        interfaceNumber: UInt8, alternateSetting: UInt8, interfaceClass: UInt8, interfaceSubClass: UInt8,
        interfaceProtocol: UInt8, interfaceStringIndex: UInt8, extra: [[UInt8]] = []
    ) {
        self.interfaceNumber = interfaceNumber
        self.alternateSetting = alternateSetting
        self.interfaceClass = interfaceClass
        self.interfaceSubClass = interfaceSubClass
        self.interfaceProtocol = interfaceProtocol
        self.interfaceStringIndex = interfaceStringIndex
        self.extra = extra
    }

    /// True for a DFU interface (application-specific class 0xFE, subclass 0x01).
    public var isDFU: Bool { interfaceClass == 0xFE && interfaceSubClass == 0x01 }
}

/// A configuration descriptor with everything it contains (USB 2.0 §9.6.3).
public struct ConfigurationDescriptor: Sendable, Hashable {
    public var configurationValue: UInt8
    public var attributes: UInt8
    public var maxPower: UInt8
    public var interfaces: [InterfaceAltSetting]
    /// Descriptors that follow the configuration descriptor before the first interface.
    public var extra: [[UInt8]]

    public init(
        configurationValue: UInt8 = 1, attributes: UInt8 = 0xC0, maxPower: UInt8 = 0x32,
        interfaces: [InterfaceAltSetting], extra: [[UInt8]] = []
    ) {
        self.configurationValue = configurationValue
        self.attributes = attributes
        self.maxPower = maxPower
        self.interfaces = interfaces
        self.extra = extra
    }

    /// Parses the full configuration (wTotalLength bytes); nil when malformed.
    public init?(bytes: [UInt8]) {
        guard bytes.count >= 9, bytes[1] == DescriptorType.configuration else { return nil }
        let total = Int(bytes[2]) | Int(bytes[3]) << 8
        guard total <= bytes.count, total >= 9 else { return nil }
        configurationValue = bytes[5]
        attributes = bytes[7]
        maxPower = bytes[8]
        interfaces = []
        extra = []
        var offset = Int(bytes[0])
        while offset + 2 <= total {
            let length = Int(bytes[offset])
            guard length >= 2, offset + length <= total else { return nil }
            let descriptor = Array(bytes[offset..<offset + length])
            if descriptor[1] == DescriptorType.interface, length >= 9 {
                interfaces.append(
                    InterfaceAltSetting(
                        interfaceNumber: descriptor[2], alternateSetting: descriptor[3],
                        interfaceClass: descriptor[5], interfaceSubClass: descriptor[6],
                        interfaceProtocol: descriptor[7], interfaceStringIndex: descriptor[8]))
            } else if interfaces.isEmpty {
                extra.append(descriptor)
            } else {
                interfaces[interfaces.count - 1].extra.append(descriptor)
            }
            offset += length
        }
    }

    /// The wire form with a correct wTotalLength and bNumInterfaces.
    public var bytes: [UInt8] {
        var body: [UInt8] = []
        for descriptor in extra { body += descriptor }
        for alt in interfaces {
            let endpoints = UInt8(alt.extra.filter { $0.count >= 2 && $0[1] == DescriptorType.endpoint }.count)
            body += [
                9, DescriptorType.interface, alt.interfaceNumber, alt.alternateSetting, endpoints,
                alt.interfaceClass, alt.interfaceSubClass, alt.interfaceProtocol, alt.interfaceStringIndex,
            ]
            for descriptor in alt.extra { body += descriptor }
        }
        let total = 9 + body.count
        let interfaceCount = UInt8(Set(interfaces.map(\.interfaceNumber)).count)
        return [
            9, DescriptorType.configuration, UInt8(total & 0xFF), UInt8(total >> 8), interfaceCount,
            configurationValue, 0, attributes, maxPower,
        ] + body
    }
}

/// String descriptors: UTF-16LE text behind a 2-byte header (USB 2.0 §9.6.7).
public enum StringDescriptor {
    /// Encodes `text` as a string descriptor (truncated to the 255-byte limit).
    public static func encode(_ text: String) -> [UInt8] {
        var units: [UInt8] = []
        for unit in text.utf16 {
            if units.count + 2 > 253 { break }
            units += [UInt8(unit & 0xFF), UInt8(unit >> 8)]
        }
        return [UInt8(2 + units.count), DescriptorType.string] + units
    }

    /// The language-ID table descriptor (index 0) listing only US English, 0x0409.
    public static let languageTable: [UInt8] = [4, DescriptorType.string, 0x09, 0x04]

    /// Decodes a string descriptor; nil when malformed.
    public static func decode(_ bytes: [UInt8]) -> String? {
        guard bytes.count >= 2, bytes[1] == DescriptorType.string else { return nil }
        let length = min(Int(bytes[0]), bytes.count)
        var units: [UInt16] = []
        var i = 2
        while i + 1 < length {
            units.append(UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8)
            i += 2
        }
        return String(decoding: units, as: UTF16.self)
    }
}
