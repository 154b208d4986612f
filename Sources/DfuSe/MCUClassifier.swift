package import USBModel

/// What an `0483:df11` device with DfuSe memory maps is: ST's MCU system bootloader, or an
/// application's DFU class (CubeMX's "STM32 DownLoad Firmware Update" template). Told from the
/// product string and the alternates' maps; the STM32MP stages (`@Device ID /0x…` in the product,
/// no `Internal Flash` map) are not MCUs.
package enum MCUKind: Sendable, Hashable {
    case systemBootloader(family: MCUFamily?, version: UInt16)
    case applicationDFU(family: MCUFamily?)

    package var family: MCUFamily? {
        switch self {
        case .systemBootloader(let family, _), .applicationDFU(let family): family
        }
    }

    package var isApplication: Bool {
        if case .applicationDFU = self { return true }
        return false
    }

    /// `system-bootloader` / `application-dfu`, as JSON writes it.
    package var name: String { isApplication ? "application-dfu" : "system-bootloader" }

    /// Nil when the device is not an STM32 MCU DfuSe device.
    package static func classify(
        vendorID: UInt16, productID: UInt16, bcdDevice: UInt16, product: String?, alternates: [String]
    ) -> MCUKind? {
        guard vendorID == 0x0483, productID == 0xDF11 else { return nil }
        if let product, product.contains("@Device ID") { return nil }
        let maps = alternates.compactMap(DfuSeMemoryMap.init)
        guard let flash = maps.first(where: { $0.name.hasPrefix("Internal Flash") }) else { return nil }
        let family = MCUFamily.identify(alternates: alternates)
        if isBootloaderProduct(product) && flash.sectors.allSatisfy(\.writable) {
            return .systemBootloader(family: family, version: bcdDevice)
        }
        return .applicationDFU(family: family)
    }

    /// With the alternates' names when known (a listing), from the identity alone otherwise (a
    /// hot-plug event).
    package static func of(_ identity: USBDeviceIdentity, alternates: [String]) -> MCUKind? {
        if alternates.isEmpty {
            return fromIdentity(
                vendorID: identity.vendorID, productID: identity.productID, bcdDevice: identity.bcdDevice,
                product: identity.product)
        }
        return classify(
            vendorID: identity.vendorID, productID: identity.productID, bcdDevice: identity.bcdDevice,
            product: identity.product, alternates: alternates)
    }

    /// From the identity alone, for `watch` (which opens no device): ST's bootloader product
    /// strings, or the CubeMX template's. Nil when the strings do not say (an STM32MP stage says
    /// `@Device ID`; a bare `DFU in FS Mode` is an MCU, the MP ROM always adds `@Device ID`).
    package static func fromIdentity(vendorID: UInt16, productID: UInt16, bcdDevice: UInt16, product: String?)
        -> MCUKind?
    {
        guard vendorID == 0x0483, productID == 0xDF11, let product, !product.contains("@Device ID") else { return nil }
        if isBootloaderProduct(product) { return .systemBootloader(family: nil, version: bcdDevice) }
        if product.hasPrefix("STM32 DownLoad Firmware Update") { return .applicationDFU(family: nil) }
        return nil
    }

    /// `STM32 system bootloader v2.2 (STM32F74x/75x)` / `application DFU (STM32 MCU)`.
    package func displayName(series: String? = nil) -> String {
        let name = family?.name ?? series
        switch self {
        case .systemBootloader(_, let version):
            return "STM32 MCU system bootloader v\(Self.versionText(version))" + (name.map { " (\($0))" } ?? "")
        case .applicationDFU:
            return "STM32 MCU application DFU (not ST's bootloader)" + (name.map { " (\($0))" } ?? "")
        }
    }

    /// `STM32 BOOTLOADER`, `STM32  BOOTLOADER`, or a bare `DFU in FS/HS Mode` (H7, H5, G0).
    package static func isBootloaderProduct(_ product: String?) -> Bool {
        guard let product else { return false }
        let squeezed = product.split(separator: " ").joined(separator: " ").uppercased()
        return squeezed == "STM32 BOOTLOADER" || squeezed == "DFU IN FS MODE" || squeezed == "DFU IN HS MODE"
    }

    /// `2.2` from bcdDevice 0x2200 (the MSB is the version, AN3156 §1).
    package static func versionText(_ bcdDevice: UInt16) -> String {
        "\(bcdDevice >> 12).\((bcdDevice >> 8) & 0xF)"
    }
}
