import USBModel

/// Where one enumeration of a device lives in the fake sysfs and /dev. A port path without ports
/// is the bus's root hub (`usb1`).
struct DeviceLocation: Hashable {
    let port: PortPath
    let deviceNumber: Int

    /// Without the `/sys` prefix, as `add_from_string` wants it (gotcha 5): nested below every hub
    /// on the way, as the kernel does (`usb1/1-2/1-2.3`), which is how libusb finds port numbers.
    var devicePath: String {
        var path = "/devices/pci0000:00/0000:00:14.0/usb\(port.bus)"
        for depth in port.ports.indices {
            path += "/" + PortPath(bus: port.bus, ports: Array(port.ports[...depth])).description
        }
        return path
    }
    /// As `uevent` and `remove_device` want it.
    var syspath: String { "/sys" + devicePath }
    var devnode: String { "/dev/bus/usb/\(threeDigits(port.bus))/\(threeDigits(deviceNumber))" }
    /// The usbfs minor number the kernel gives (bus − 1) × 128 + (address − 1).
    var minor: Int { (port.bus - 1) * 128 + deviceNumber - 1 }
}

private func threeDigits(_ n: Int) -> String {
    let s = String(n)
    return String(repeating: "0", count: max(0, 3 - s.count)) + s
}

/// The umockdev record (`P:`/`N:`/`E:`/`A:`/`H:` lines) of `device` enumerated at `location`,
/// with what the kernel would put in sysfs and the uevent: udevd's `ID_*` properties are left
/// out, as on a host without udevd.
func deviceRecord(for device: any USBDeviceModel, at location: DeviceLocation) -> String {
    let descriptor = device.deviceDescriptor
    let configuration = device.configuration
    func text(_ index: UInt8) -> String? {
        guard index != 0, let bytes = device.stringDescriptor(index: index, languageID: 0x0409) else { return nil }
        return StringDescriptor.decode(bytes)
    }
    func hex2(_ v: UInt8) -> String { String(hex4(UInt16(v)).suffix(2)) }
    let bcd = descriptor.bcdDevice
    var lines = [
        "P: \(location.devicePath)",
        "N: \(location.devnode.dropFirst("/dev/".count))",
        "E: SUBSYSTEM=usb",
        "E: DEVTYPE=usb_device",
        "E: DRIVER=usb",
        "E: DEVNAME=\(location.devnode)",
        "E: PRODUCT=\(String(descriptor.vendorID, radix: 16))/\(String(descriptor.productID, radix: 16))/\(String(bcd, radix: 16))",
        "E: TYPE=\(descriptor.deviceClass)/\(descriptor.deviceSubClass)/\(descriptor.deviceProtocol)",
        "E: BUSNUM=\(location.devnode.split(separator: "/")[3])",
        "E: DEVNUM=\(location.devnode.split(separator: "/")[4])",
        "E: MAJOR=189",
        "E: MINOR=\(location.minor)",
        // No trailing newline: remove_device unlinks /sys/dev/char/<contents> verbatim (gotcha 14).
        "A: dev=189:\(location.minor)",
        "A: busnum=\(location.port.bus)\\n",
        "A: devnum=\(location.deviceNumber)\\n",
        "A: devpath=\(location.port.ports.isEmpty ? "0" : location.port.ports.map(String.init).joined(separator: "."))\\n",
        "A: idVendor=\(hex4(descriptor.vendorID))\\n",
        "A: idProduct=\(hex4(descriptor.productID))\\n",
        "A: bcdDevice=\(hex4(bcd))\\n",
        "A: bDeviceClass=\(hex2(descriptor.deviceClass))\\n",
        "A: bDeviceSubClass=\(hex2(descriptor.deviceSubClass))\\n",
        "A: bDeviceProtocol=\(hex2(descriptor.deviceProtocol))\\n",
        "A: bMaxPacketSize0=\(descriptor.maxPacketSize0)\\n",
        "A: bNumConfigurations=\(descriptor.configurationCount)\\n",
        "A: bConfigurationValue=\(configuration.configurationValue)\\n",
        "A: bNumInterfaces= \(Set(configuration.interfaces.map(\.interfaceNumber)).count)\\n",
        "A: bmAttributes=\(hex2(configuration.attributes))\\n",
        "A: version=\(bcdVersion(descriptor.bcdUSB))\\n",
        "A: speed=\(device.speed.sysfsMbps)\\n",
        "A: maxchild=\((device as? HubModel)?.portCount ?? 0)\\n",
        "A: removable=removable\\n",
        "A: configuration=\\n",
        "A: rx_lanes=1\\n",
        "A: tx_lanes=1\\n",
    ]
    for (name, index) in [
        ("manufacturer", descriptor.manufacturerIndex), ("product", descriptor.productIndex),
        ("serial", descriptor.serialNumberIndex),
    ] {
        if let value = text(index) { lines.append("A: \(name)=\(recordEscaped(value))\\n") }
    }
    let descriptors = descriptor.bytes + configuration.bytes
    lines.append("H: descriptors=" + descriptors.map { String(hex4(UInt16($0)).suffix(2)).uppercased() }.joined())
    var records = lines.joined(separator: "\n") + "\n\n"
    for interface in activeInterfaces(of: device) {
        records += interfaceRecord(interface, of: device, at: location)
    }
    return records
}

/// Each interface in its alternate setting 0, the one the kernel shows after enumeration.
private func activeInterfaces(of device: any USBDeviceModel) -> [InterfaceAltSetting] {
    guard device.deviceDescriptor.deviceClass != 0x09 else { return [] }  // Hubs: not needed.
    var seen: Set<UInt8> = []
    return device.configuration.interfaces.filter {
        $0.alternateSetting == 0 && seen.insert($0.interfaceNumber).inserted
    }
}

/// The sysfs paths of the interfaces `deviceRecord` adds below the device (removed before it:
/// umockdev 0.17 does not remove children with their parent).
func interfaceSyspaths(of device: any USBDeviceModel, at location: DeviceLocation) -> [String] {
    activeInterfaces(of: device).map { location.syspath + "/" + interfaceName($0, of: device, at: location) }
}

/// `1-2.3:1.0`: the device's name, the configuration value and the interface number.
private func interfaceName(_ interface: InterfaceAltSetting, of device: any USBDeviceModel, at location: DeviceLocation)
    -> String
{
    "\(location.port):\(device.configuration.configurationValue).\(interface.interfaceNumber)"
}

/// What the kernel puts in sysfs for one interface (`usb_interface`): numbers, class triple and the
/// `interface` string of the active alternate (for a DfuSe bootloader, alternate 0's memory map,
/// which `doctor` reads).
private func interfaceRecord(
    _ interface: InterfaceAltSetting, of device: any USBDeviceModel, at location: DeviceLocation
) -> String {
    func hex2(_ v: UInt8) -> String { String(hex4(UInt16(v)).suffix(2)) }
    let endpoints = interface.extra.filter { $0.count >= 2 && $0[1] == DescriptorType.endpoint }.count
    let classes = "\(interface.interfaceClass)/\(interface.interfaceSubClass)/\(interface.interfaceProtocol)"
    var lines = [
        "P: \(location.devicePath)/\(interfaceName(interface, of: device, at: location))",
        "E: SUBSYSTEM=usb",
        "E: DEVTYPE=usb_interface",
        "E: INTERFACE=\(classes)",
        "A: bInterfaceNumber=\(hex2(interface.interfaceNumber))\\n",
        "A: bAlternateSetting=\(interface.alternateSetting)\\n",
        "A: bInterfaceClass=\(hex2(interface.interfaceClass))\\n",
        "A: bInterfaceSubClass=\(hex2(interface.interfaceSubClass))\\n",
        "A: bInterfaceProtocol=\(hex2(interface.interfaceProtocol))\\n",
        "A: bNumEndpoints=\(hex2(UInt8(endpoints)))\\n",
    ]
    if interface.interfaceStringIndex != 0,
        let bytes = device.stringDescriptor(index: interface.interfaceStringIndex, languageID: 0x0409),
        let name = StringDescriptor.decode(bytes)
    {
        lines.append("A: interface=\(recordEscaped(name))\\n")
    }
    return lines.joined(separator: "\n") + "\n\n"
}

/// ` 2.00` style, as the kernel prints bcdUSB in `version`.
private func bcdVersion(_ bcd: UInt16) -> String {
    " \(bcd >> 8 & 0xF).\(bcd >> 4 & 0xF)\(bcd & 0xF)"
}

/// The record format reads attribute values with C escapes: keep backslashes and line breaks literal.
private func recordEscaped(_ value: String) -> String {
    var out = ""
    for c in value {
        switch c {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        default: out.append(c)
        }
    }
    return out
}
