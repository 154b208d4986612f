import USBModel

/// A USB 2.0 hub, so that a board on a nested port (`1-2.3`) sits below the hubs the kernel would
/// show: libusb derives port numbers from the parent chain. The root hub (`usb1`) uses Linux's
/// own IDs, as on a real host; other hubs a common generic hub's.
final class HubModel: USBDeviceModel {
    /// Linux's `USB_MAXCHILDREN`: no hub the kernel accepts has more ports.
    static let maximumPortCount = 31

    private let isRoot: Bool
    /// `bNbrPorts` and sysfs `maxchild`.
    let portCount: Int

    init(isRoot: Bool, portCount: Int) {
        self.isRoot = isRoot
        self.portCount = portCount
    }

    /// A hub whose ports include `port` and the one after it (where the `moves-port` faults
    /// re-enumerate the board): 4 like common hubs, more when the board sits higher up.
    convenience init(isRoot: Bool, reaching port: Int) {
        self.init(isRoot: isRoot, portCount: min(max(4, port + 1), Self.maximumPortCount))
    }

    var deviceDescriptor: DeviceDescriptor {
        DeviceDescriptor(
            deviceClass: 9, deviceProtocol: 1, vendorID: isRoot ? 0x1D6B : 0x05E3, productID: isRoot ? 0x0002 : 0x0608,
            bcdDevice: isRoot ? 0x0606 : 0x6060, manufacturerIndex: 1, productIndex: 2,
            serialNumberIndex: isRoot ? 3 : 0)
    }

    var configuration: ConfigurationDescriptor {
        ConfigurationDescriptor(
            attributes: 0xE0, maxPower: 0,
            interfaces: [
                InterfaceAltSetting(
                    interfaceNumber: 0, alternateSetting: 0, interfaceClass: 9, interfaceSubClass: 0,
                    interfaceProtocol: 0, interfaceStringIndex: 0)
            ])
    }

    var speed: USBSpeed { .high }

    func stringDescriptor(index: UInt8, languageID: UInt16) -> [UInt8]? {
        let strings: [UInt8: String] =
            isRoot
            ? [1: "Linux stm32mp-board-emulator", 2: "EHCI Host Controller", 3: "0000:00:14.0"]
            : [1: "GenesysLogic", 2: "USB2.0 Hub"]
        if index == 0 { return StringDescriptor.languageTable }
        return strings[index].map(StringDescriptor.encode)
    }

    func setInterface(_ interface: UInt8, alternate: UInt8) -> Bool { interface == 0 && alternate == 0 }

    /// Hub class requests that `lsusb -v` sends: the hub descriptor and the port status.
    func control(_ setup: SetupPacket, data: [UInt8]) -> DeviceControlReply {
        switch (setup.requestType, setup.request) {
        case (0xA0, 6):  // GET_DESCRIPTOR (hub): individual power switching, 100 ms power-on.
            return .data(hubDescriptor)
        case (0xA0, 0):  // GET_STATUS (hub)
            return .data([0, 0, 0, 0])
        case (0xA3, 0):  // GET_STATUS (port): powered.
            return .data([0x00, 0x01, 0x00, 0x00])
        default:
            return .stall
        }
    }

    func busReset() {}

    /// USB 2.0 §11.23.2.1: DeviceRemovable (all removable) and PortPwrCtrlMask (all ones), each
    /// one bit per port plus bit 0, rounded up to whole bytes.
    private var hubDescriptor: [UInt8] {
        let bitmapLength = portCount / 8 + 1
        let header: [UInt8] = [UInt8(7 + 2 * bitmapLength), 0x29, UInt8(portCount), 0x09, 0x00, 50, 100]
        return header + [UInt8](repeating: 0x00, count: bitmapLength) + [UInt8](repeating: 0xFF, count: bitmapLength)
    }
}
