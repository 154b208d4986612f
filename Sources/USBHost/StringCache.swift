import CLibUSB
import Synchronization
import USBModel

/// String descriptors already read, per enumeration of a device, shared by every handle of one
/// context: listing a device reads its identity and alternate names, and opening it right after
/// (the tracker's scan, then the lease's open, then `DFUDevice.open`) would read them all again.
///
/// A device that re-enumerates gets a new device address from the kernel, so its strings are read
/// afresh (a board's serial or product may change between stages). Every scan and open drops the
/// entries of enumerations libusb no longer lists, so an address the kernel hands out again
/// (after 127 others on the bus) never finds an old entry.
final class StringCache: Sendable {
    /// One enumeration: where and at which address the device is, and what it says it is.
    struct Enumeration: Hashable, Sendable {
        var port: PortPath
        var busNumber: Int
        var deviceAddress: Int
        var vendorID: UInt16
        var productID: UInt16
        var bcdDevice: UInt16

        init(_ identity: USBDeviceIdentity) {
            port = identity.port
            busNumber = identity.busNumber
            deviceAddress = identity.deviceAddress
            vendorID = identity.vendorID
            productID = identity.productID
            bcdDevice = identity.bcdDevice
        }

        /// From libusb's cached device descriptor.
        init(device: OpaquePointer) {
            var raw = libusb_device_descriptor()
            if libusb_get_device_descriptor(device, &raw) != 0 { raw = libusb_device_descriptor() }
            var ports = [UInt8](repeating: 0, count: 8)
            let depth = max(0, Int(libusb_get_port_numbers(device, &ports, Int32(ports.count))))
            let bus = Int(libusb_get_bus_number(device))
            port = PortPath(bus: bus, ports: ports.prefix(depth).map(Int.init))
            busNumber = bus
            deviceAddress = Int(libusb_get_device_address(device))
            vendorID = raw.idVendor
            productID = raw.idProduct
            bcdDevice = raw.bcdDevice
        }
    }

    private let entries = Mutex<[Enumeration: [UInt8: String]]>([:])

    func string(_ index: UInt8, of enumeration: Enumeration) -> String? {
        entries.withLock { $0[enumeration]?[index] }
    }

    func remember(_ text: String, _ index: UInt8, of enumeration: Enumeration) {
        entries.withLock { $0[enumeration, default: [:]][index] = text }
    }

    /// Forgets every enumeration not in `present` (libusb's list now).
    func keepOnly(_ present: [Enumeration]) {
        let listed = Set(present)
        entries.withLock { $0 = $0.filter { listed.contains($0.key) } }
    }
}
