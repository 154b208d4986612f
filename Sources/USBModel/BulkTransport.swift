/// Bulk endpoints of an opened device, host side (U-Boot's fastboot gadget: one vendor
/// interface with a bulk OUT and a bulk IN endpoint). Implemented over libusb (USBHost) and in
/// memory over the virtual board. Like `USBControlTransport`, blocking calls never run on the
/// cooperative pool.
public protocol USBBulkTransport: Sendable {
    /// Claims the interface with these endpoints (found in the configuration descriptor).
    func claimBulk(interface: UInt8, outEndpoint: UInt8, inEndpoint: UInt8) async throws
    /// Writes `data` on the claimed OUT endpoint as one transfer (the implementation may split it
    /// into URBs; the device sees the bytes in order).
    func bulkOut(_ data: [UInt8], timeout: Duration) async throws
    /// Reads one transfer of at most `maxLength` bytes from the claimed IN endpoint.
    func bulkIn(maxLength: Int, timeout: Duration) async throws -> [UInt8]
}

/// The first interface of class/subclass/protocol FF/42/03 ("Android Fastboot") with one bulk
/// OUT and one bulk IN endpoint, read from a configuration descriptor's raw bytes.
public struct FastbootInterface: Sendable, Hashable {
    public var interface: UInt8
    public var outEndpoint: UInt8
    public var inEndpoint: UInt8
    public var maxPacketSize: UInt16

    public init(interface: UInt8, outEndpoint: UInt8, inEndpoint: UInt8, maxPacketSize: UInt16) {
        self.interface = interface
        self.outEndpoint = outEndpoint
        self.inEndpoint = inEndpoint
        self.maxPacketSize = maxPacketSize
    }

    /// The first FF/42/03 interface of `configuration` with a bulk OUT and a bulk IN endpoint
    /// (endpoint descriptors follow their interface descriptor, in `extra`).
    public static func find(in configuration: ConfigurationDescriptor) -> FastbootInterface? {
        for alt in configuration.interfaces
        where alt.interfaceClass == 0xFF && alt.interfaceSubClass == 0x42 && alt.interfaceProtocol == 0x03 {
            var out: UInt8?
            var input: UInt8?
            var packet: UInt16 = 0
            for descriptor in alt.extra
            where descriptor.count >= 7 && descriptor[1] == DescriptorType.endpoint && descriptor[3] & 0x03 == 0x02 {
                packet = UInt16(descriptor[4]) | UInt16(descriptor[5]) << 8
                if descriptor[2] & 0x80 != 0 { input = descriptor[2] } else { out = descriptor[2] }
            }
            if let out, let input {
                return FastbootInterface(
                    interface: alt.interfaceNumber, outEndpoint: out, inEndpoint: input, maxPacketSize: packet)
            }
        }
        return nil
    }
}

/// Device side of bulk endpoints (the virtual fastboot gadget). Hosts call it under the same
/// serialization as `USBDeviceModel`. A reply's latency is how long the device holds the
/// transfer (NAKs) before completing it; `.noAnswer` on IN means nothing is queued yet.
public protocol USBBulkDeviceModel: USBDeviceModel {
    /// The host wrote `data` on OUT endpoint `endpoint`.
    func bulkOut(endpoint: UInt8, data: [UInt8]) -> DeviceControlReply
    /// The host reads at most `maxLength` bytes from IN endpoint `endpoint`.
    func bulkIn(endpoint: UInt8, maxLength: Int) -> DeviceControlReply
}
