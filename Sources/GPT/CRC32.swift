/// CRC-32 as IEEE 802.3 and the UEFI GPT define it: reflected polynomial 0xEDB88320, initial
/// value and final XOR 0xFFFFFFFF. "123456789" gives 0xCBF43926.
public struct CRC32: Sendable, Hashable {
    /// One entry per byte value: the register after shifting that byte through eight times.
    static let table: [UInt32] = (0..<256).map { byte in
        (0..<8).reduce(UInt32(byte)) { crc, _ in crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }

    private var register: UInt32 = 0xFFFF_FFFF

    public init() {}

    public mutating func update(with bytes: some Sequence<UInt8>) {
        for byte in bytes {
            register = Self.table[Int((register ^ UInt32(byte)) & 0xFF)] ^ (register >> 8)
        }
    }

    /// The CRC of everything passed to `update` so far.
    public var value: UInt32 { register ^ 0xFFFF_FFFF }

    public static func checksum(of bytes: some Sequence<UInt8>) -> UInt32 {
        var crc = CRC32()
        crc.update(with: bytes)
        return crc.value
    }
}
