/// The table-of-contents header at the start of a TF-A Firmware Image Package. TF-A checks it
/// when a FIP arrives over USB (phases 0x02/0x03, reference §B.2) and U-Boot's `stm32prog` uses
/// it to recognise a FIP: name 0xAA640001 and a serial number that is not zero.
public struct FIPHeader: Sendable, Hashable {
    public static let tocName: UInt32 = 0xAA64_0001
    public static let length = 16

    public var name: UInt32
    public var serialNumber: UInt32
    public var flags: UInt64

    public init(name: UInt32 = FIPHeader.tocName, serialNumber: UInt32, flags: UInt64 = 0) {
        self.name = name
        self.serialNumber = serialNumber
        self.flags = flags
    }

    /// Reads the first 16 bytes as a ToC header, whatever they hold; nil when fewer are present.
    /// Use `isValid` to know whether TF-A would accept it.
    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= Self.length else { return nil }
        self.init(
            name: bytes.littleEndianUInt32(at: 0), serialNumber: bytes.littleEndianUInt32(at: 4),
            flags: bytes.littleEndianUInt64(at: 8))
    }

    /// What TF-A's USB programmer checks before accepting a FIP.
    public var isValid: Bool { name == Self.tocName && serialNumber != 0 }

    public func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.length)
        bytes.storeLittleEndian(name, at: 0)
        bytes.storeLittleEndian(serialNumber, at: 4)
        bytes.storeLittleEndian(flags, at: 8)
        return bytes
    }
}
