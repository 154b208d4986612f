/// Which firmware answers on the board's USB port. Told from the product string first, then
/// confirmed by GetPhase (an old ST TF-A reuses the ROM's product string, for one). `STM32MPFamily`
/// tells them from a device's identity.
public enum BoardStage: String, Sendable, Hashable, Codable, CaseIterable {
    /// The boot ROM's DFU (`DFU in HS Mode @Device ID /0x…` or `DFU in FS Mode …`).
    case rom
    /// TF-A BL2 built as a USB programmer (`DFU @Device ID /0x…`).
    case tfa
    /// U-Boot `stm32prog` (`USB download gadget@Device ID /0x…`).
    case uboot
    /// A U-Boot DFU gadget without `stm32prog` (plain `USB download gadget`), e.g. SPL DFU.
    case ubootPlainDFU = "uboot-dfu"
    /// U-Boot fastboot (0483:0afb).
    case fastboot
    /// Anything else.
    case unknown

    /// How people call this stage in messages.
    public var displayName: String {
        switch self {
        case .rom: "ROM code"
        case .tfa: "TF-A"
        case .uboot: "U-Boot stm32prog"
        case .ubootPlainDFU: "U-Boot DFU (no stm32prog)"
        case .fastboot: "U-Boot fastboot"
        case .unknown: "unknown firmware"
        }
    }
}
