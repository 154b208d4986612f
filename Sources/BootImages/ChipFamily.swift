/// STM32MP families, as far as a boot image header can tell them apart.
public enum ChipFamily: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// STM32MP151/153/157: ROM and TF-A expect header v1 (256 bytes).
    case mp15
    /// STM32MP131/133/135: header v2.0, loaded in SYSRAM at 0x2FFE0000–0x2FFFFFFF.
    case mp13
    /// STM32MP2 (MP21/MP23/MP25): header v2.0 (MP25 rev A) or v2.2, loaded in SYSRAM at 0x0E0xxxxx.
    case mp2

    public var description: String {
        switch self {
        case .mp15: "STM32MP15"
        case .mp13: "STM32MP13"
        case .mp2: "STM32MP2"
        }
    }
}

extension ChipFamily {
    /// From the `@Device ID` of a product string: 0x500 MP15, 0x501 MP13, 0x503 MP21 and 0x505
    /// MP23/MP25 (both MP2).
    public init?(deviceID: UInt16) {
        switch deviceID {
        case 0x500: self = .mp15
        case 0x501: self = .mp13
        case 0x503, 0x505: self = .mp2
        default: return nil
        }
    }

    /// Parses the `@Device ID /0xNNN` field of a USB product string (ROM, TF-A and U-Boot all
    /// announce it).
    public static func fromProduct(_ product: String?) -> ChipFamily? {
        guard let product else { return nil }
        let marker = Array("@Device ID /0x".utf8)
        let bytes = Array(product.utf8)
        guard bytes.count >= marker.count else { return nil }
        for start in 0...(bytes.count - marker.count) where Array(bytes[start..<start + marker.count]) == marker {
            let digits = bytes[(start + marker.count)...].prefix {
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                    || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0 | 0x20)
            }
            return UInt16(String(decoding: digits, as: UTF8.self), radix: 16).flatMap(ChipFamily.init(deviceID:))
        }
        return nil
    }
}
