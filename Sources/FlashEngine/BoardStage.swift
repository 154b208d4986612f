/// Which firmware answers on the board's USB port. Told from the product string first, then
/// confirmed by GetPhase (an old ST TF-A reuses the ROM's product string, for one).
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

    /// Classifies a device from its VID:PID and product string (protocol reference §2.3).
    public static func classify(vendorID: UInt16, productID: UInt16, product: String?) -> BoardStage {
        guard vendorID == 0x0483 else { return .unknown }
        if productID == 0x0AFB { return .fastboot }
        guard productID == 0xDF11, let product else { return .unknown }
        if product.hasPrefix("DFU in HS Mode") || product.hasPrefix("DFU in FS Mode") { return .rom }
        if product.hasPrefix("DFU @Device ID") { return .tfa }
        if product.hasPrefix("USB download gadget@") { return .uboot }
        if product.hasPrefix("USB download gadget") { return .ubootPlainDFU }
        return .unknown
    }

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
