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
