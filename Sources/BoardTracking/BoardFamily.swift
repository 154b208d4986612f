import DfuSe
public import USBModel

/// The name of a board family, stable in JSON (`stm32mp`, `stm32-mcu`). Families outside this
/// target add their own names in an extension.
public struct BoardFamilyName: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    /// STM32MP1/MP13/MP2: ROM code, TF-A, U-Boot, driven by GetPhase.
    public static let stm32mp = BoardFamilyName(rawValue: "stm32mp")
    /// STM32 microcontrollers: the system bootloader (DfuSe) in ROM.
    public static let stm32MCU = BoardFamilyName(rawValue: "stm32-mcu")
    /// No family recognised the device.
    public static let unknown = BoardFamilyName(rawValue: "unknown")

    public var description: String { rawValue }
}

/// What a DFU device is, as the family that recognised it says.
public struct BoardClass: Sendable, Hashable {
    public var family: BoardFamilyName
    /// Stable code for JSON (`rom`, `tfa`, `uboot`, `uboot-dfu`, `fastboot`, `mcu-bootloader`, `unknown`).
    public var code: String
    /// For people: `ROM code`, `STM32 MCU system bootloader`.
    public var displayName: String
    /// The STM32MP stage, when the GetPhase flasher can drive this device; nil otherwise.
    public var stage: BoardStage?
    /// Why `flash` does not drive this device (a sentence naming what to use instead), if it does not.
    public var refusal: String?

    public init(
        family: BoardFamilyName, code: String, displayName: String, stage: BoardStage? = nil, refusal: String? = nil
    ) {
        self.family = family
        self.code = code
        self.displayName = displayName
        self.stage = stage
        self.refusal = refusal
    }

    /// An STM32MP stage.
    public static func stm32mp(_ stage: BoardStage) -> BoardClass {
        BoardClass(family: .stm32mp, code: stage.rawValue, displayName: stage.displayName, stage: stage)
    }

    /// Nothing recognised the device.
    public static let unknown = BoardClass(
        family: .unknown, code: BoardStage.unknown.rawValue, displayName: BoardStage.unknown.displayName,
        refusal: "no known board family answers on this device")
}

/// The seam that decides what a USB DFU device *is*, from what the host can see: identity
/// (VID:PID, product and serial strings) and, once read, the alternate settings' names. Kept
/// apart from the tracker so that new kinds of boards (MCU bootloaders, application DFU) plug in
/// without touching how boards are found and followed.
public protocol BoardFamily: Sendable {
    var name: BoardFamilyName { get }
    /// What the device is, or nil when it is not of this family. `alternates` is empty when the
    /// names are not known (a hot-plug event); a family must then answer from the identity alone.
    func classify(_ identity: USBDeviceIdentity, alternates: [String]) -> BoardClass?
}

/// The families a process knows, asked in order (most specific first): the first that claims a
/// device decides.
public struct BoardFamilies: Sendable {
    public var members: [any BoardFamily]

    public init(_ members: [any BoardFamily]) { self.members = members }

    /// STM32 MCU bootloaders first (they share 0483:df11 and "DFU in FS Mode" with the MP ROM and
    /// only their alternates tell them apart), then STM32MP.
    public static let standard = BoardFamilies([STM32MCUBootloaderFamily(), STM32MPFamily()])

    public func classify(_ identity: USBDeviceIdentity, alternates: [String] = []) -> BoardClass {
        for family in members {
            if let found = family.classify(identity, alternates: alternates) { return found }
        }
        return .unknown
    }

    /// A scan listing, with the alternate names it could read.
    public func classify(_ listing: DFUDeviceListing) -> BoardClass {
        classify(listing.identity, alternates: listing.alternateNames)
    }
}

/// STM32MP1/MP13/MP2 stages (protocol reference §2.3): all 0483:df11 told apart by the product
/// string, U-Boot fastboot 0483:0afb.
public struct STM32MPFamily: BoardFamily {
    public init() {}

    public var name: BoardFamilyName { .stm32mp }

    public func classify(_ identity: USBDeviceIdentity, alternates: [String]) -> BoardClass? {
        guard identity.vendorID == Self.vendorID else { return nil }
        if identity.productID == Self.fastbootProductID { return .stm32mp(.fastboot) }
        guard identity.productID == Self.dfuProductID, let product = identity.product else { return nil }
        if product.hasPrefix("DFU in HS Mode") || product.hasPrefix("DFU in FS Mode") { return .stm32mp(.rom) }
        if product.hasPrefix("DFU @Device ID") { return .stm32mp(.tfa) }
        if product.hasPrefix("USB download gadget@") { return .stm32mp(.uboot) }
        if product.hasPrefix("USB download gadget") { return .stm32mp(.ubootPlainDFU) }
        return nil
    }

    /// ST's USB vendor ID.
    public static let vendorID: UInt16 = 0x0483
    /// DFU in every STM32MP stage (and in STM32 MCU bootloaders).
    public static let dfuProductID: UInt16 = 0xDF11
    /// U-Boot's fastboot gadget on ST boards.
    public static let fastbootProductID: UInt16 = 0x0AFB
}

/// STM32 microcontroller DFU devices (DfuSe, AN3156): 0483:df11 like the MP ROM, product
/// `STM32 BOOTLOADER` or (H7, H5, G0 and others) the very `DFU in FS Mode` of the MP ROM, and
/// alternates that describe memory (`@Internal Flash  /0x08000000/04*016Kg,…`) instead of the
/// MP's phase IDs (`@FSBL /0x01/1*1Me`). The DfuSe target decides which: ST's system bootloader
/// (`mcu-bootloader`) or an application's DFU class such as CubeMX's template (`mcu-app-dfu`).
/// Never taken for an MP ROM; `stm32mp-flash mcu …` programs them (docs/mcu.md).
public struct STM32MCUBootloaderFamily: BoardFamily {
    public init() {}

    public var name: BoardFamilyName { .stm32MCU }

    public func classify(_ identity: USBDeviceIdentity, alternates: [String]) -> BoardClass? {
        guard identity.vendorID == STM32MPFamily.vendorID, identity.productID == STM32MPFamily.dfuProductID else {
            return nil
        }
        let refusal =
            "it is an STM32 microcontroller's DFU (DfuSe, alternates such as `@Internal Flash /0x08000000/…`), not an STM32MP board; program it with `stm32mp-flash mcu …` (docs/mcu.md)"
        if let kind = MCUKind.of(identity, alternates: alternates) {
            return BoardClass(
                family: .stm32MCU, code: kind.isApplication ? "mcu-app-dfu" : "mcu-bootloader",
                displayName: kind.isApplication ? "STM32 MCU application DFU" : "STM32 MCU system bootloader",
                refusal: refusal)
        }
        // Memory maps the DfuSe classifier does not place (no `Internal Flash` alternate).
        guard alternates.contains(where: Self.isMemoryMap) else { return nil }
        return BoardClass(
            family: .stm32MCU, code: "mcu-bootloader", displayName: "STM32 MCU system bootloader", refusal: refusal)
    }

    /// A DfuSe memory description: `@NAME /0xADDRESS/…` with a 32-bit address (the MP names carry a
    /// two-digit phase ID there).
    static func isMemoryMap(_ name: String) -> Bool {
        guard name.hasPrefix("@"), let slash = name.firstRange(of: "/0x") else { return false }
        let digits = name[slash.upperBound...].prefix { $0.isHexDigit }
        let rest = name[slash.upperBound...].dropFirst(digits.count)
        return digits.count >= 5 && rest.hasPrefix("/")
    }
}
