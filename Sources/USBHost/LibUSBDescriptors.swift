import CLibUSB
import USBModel

/// Conversions from libusb's parsed descriptor structs to the shared USBModel values.
extension DeviceDescriptor {
    init(libusb d: libusb_device_descriptor) {
        self.init(
            bcdUSB: d.bcdUSB, deviceClass: d.bDeviceClass, deviceSubClass: d.bDeviceSubClass,
            deviceProtocol: d.bDeviceProtocol, maxPacketSize0: d.bMaxPacketSize0, vendorID: d.idVendor,
            productID: d.idProduct, bcdDevice: d.bcdDevice, manufacturerIndex: d.iManufacturer,
            productIndex: d.iProduct, serialNumberIndex: d.iSerialNumber, configurationCount: d.bNumConfigurations)
    }
}

extension ConfigurationDescriptor {
    /// Rebuilds the configuration from libusb's tree, keeping the class-specific descriptors
    /// (libusb's `extra` bytes) where they were, e.g. the DFU functional descriptor.
    init(libusb config: libusb_config_descriptor) {
        var alternates: [InterfaceAltSetting] = []
        for i in 0..<Int(config.bNumInterfaces) {
            let interface = config.interface[i]
            for a in 0..<Int(interface.num_altsetting) {
                let alt = interface.altsetting[a]
                // libusb parses endpoint descriptors out of `extra`; put them back after the
                // class-specific ones, as in the raw descriptor (fastboot's bulk endpoints).
                var extra = splitDescriptors(alt.extra, Int(alt.extra_length))
                for e in 0..<Int(alt.bNumEndpoints) {
                    let endpoint = alt.endpoint[e]
                    extra.append([
                        7, DescriptorType.endpoint, endpoint.bEndpointAddress, endpoint.bmAttributes,
                        UInt8(endpoint.wMaxPacketSize & 0xFF), UInt8(endpoint.wMaxPacketSize >> 8), endpoint.bInterval,
                    ])
                    extra += splitDescriptors(endpoint.extra, Int(endpoint.extra_length))
                }
                alternates.append(
                    InterfaceAltSetting(
                        interfaceNumber: alt.bInterfaceNumber, alternateSetting: alt.bAlternateSetting,
                        interfaceClass: alt.bInterfaceClass, interfaceSubClass: alt.bInterfaceSubClass,
                        interfaceProtocol: alt.bInterfaceProtocol, interfaceStringIndex: alt.iInterface,
                        extra: extra))
            }
        }
        self.init(
            configurationValue: config.bConfigurationValue, attributes: config.bmAttributes,
            maxPower: config.MaxPower, interfaces: alternates,
            extra: splitDescriptors(config.extra, Int(config.extra_length)))
    }
}

/// Splits a run of concatenated descriptors at their length bytes (stops at a malformed one).
private func splitDescriptors(_ start: UnsafePointer<UInt8>?, _ count: Int) -> [[UInt8]] {
    guard let start, count > 0 else { return [] }
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    var result: [[UInt8]] = []
    var offset = 0
    while offset + 2 <= bytes.count {
        let length = Int(bytes[offset])
        guard length >= 2, offset + length <= bytes.count else { break }
        result.append(Array(bytes[offset..<offset + length]))
        offset += length
    }
    return result
}

extension USBSpeed {
    /// From `libusb_get_device_speed`.
    init(libusbSpeed: Int32) {
        switch libusbSpeed {
        case Int32(LIBUSB_SPEED_LOW.rawValue): self = .low
        case Int32(LIBUSB_SPEED_FULL.rawValue): self = .full
        case Int32(LIBUSB_SPEED_HIGH.rawValue): self = .high
        case Int32(LIBUSB_SPEED_SUPER.rawValue): self = .superSpeed
        case Int32(LIBUSB_SPEED_SUPER_PLUS.rawValue): self = .superPlus
        default: self = .unknown
        }
    }
}
