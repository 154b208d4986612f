import Testing
import USBModel

@testable import USBHost

/// Strings are read once per enumeration of a device: a re-enumeration (new device address) or a
/// device libusb no longer lists is read afresh, so a stage's new serial or product is never
/// answered from an older stage's strings.
@Suite struct StringCacheTests {
    private func identity(address: Int, product: UInt16 = 0xDF11) -> USBDeviceIdentity {
        USBDeviceIdentity(
            port: PortPath(bus: 1, ports: [2, 3]), busNumber: 1, deviceAddress: address, vendorID: 0x0483,
            productID: product, bcdDevice: 0x2200, speed: .full)
    }

    @Test func aStringIsKeptForItsEnumerationOnly() {
        let cache = StringCache()
        let first = StringCache.Enumeration(identity(address: 5))
        cache.remember("STM32  BOOTLOADER", 2, of: first)
        #expect(cache.string(2, of: first) == "STM32  BOOTLOADER")
        #expect(cache.string(3, of: first) == nil, "another index was never read")
        // The same port after a reset: a new address, so nothing is known yet.
        #expect(cache.string(2, of: StringCache.Enumeration(identity(address: 6))) == nil)
        // Same address, another product ID (another stage): not the same enumeration either.
        #expect(cache.string(2, of: StringCache.Enumeration(identity(address: 5, product: 0x0AFB))) == nil)
    }

    @Test func enumerationsNoLongerListedAreForgotten() {
        let cache = StringCache()
        let gone = StringCache.Enumeration(identity(address: 5))
        let present = StringCache.Enumeration(identity(address: 9))
        cache.remember("A", 1, of: gone)
        cache.remember("B", 1, of: present)
        cache.keepOnly([present])
        #expect(cache.string(1, of: gone) == nil, "an address the kernel may hand out again starts empty")
        #expect(cache.string(1, of: present) == "B")
    }
}
