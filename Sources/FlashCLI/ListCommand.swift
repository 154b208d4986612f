import ArgumentParser
import BoardTracking
import BootImages
import FlashEngine
import FoundationEssentials
import Glibc
import TerminalText
import USBHost
import USBModel

/// `stm32mp-flash list`: the USB devices with a DFU interface, what firmware answers on each and
/// its alternate settings. Reads descriptors of all devices, opens only DFU ones.
struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List USB devices in DFU mode and the STM32MP stage each one runs.")

    @Flag(help: "One JSON object per device and line.")
    var json = false

    func run() async throws {
        let bus = try SystemUSBBus()
        let listings = try await bus.dfuDevices()
        for listing in listings {
            let report = DeviceReport(listing.identity, alternates: listing.alternates)
            writeLine(json ? try jsonLine(report) : report.text)
        }
        if !json && listings.isEmpty { writeLine("No USB device in DFU mode found.") }
    }
}

/// A device as `list` and `watch` print it.
struct DeviceReport: Codable {
    var port: String
    var bus: Int
    var device: Int
    var vendorProduct: String
    /// `stm32mp`, `stm32-mcu`, `unknown`: which board family recognised the device.
    var family: String
    /// The family's code: `rom`, `tfa`, `uboot`, `uboot-dfu`, `fastboot`, `mcu-bootloader`, `unknown`.
    var stage: String
    var stageName: String
    var chip: ChipFamily?
    var manufacturer: String?
    var product: String?
    var serial: String?
    var speed: USBSpeed
    var alternates: [DFUInterfaceAlternate]?

    enum CodingKeys: String, CodingKey {
        case port, bus, device, vendorProduct, family, stage, stageName, chip, manufacturer, product, serial, speed,
            alternates
    }

    /// Unknown values are written as null, never left out (docs/json.md).
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(port, forKey: .port)
        try container.encode(bus, forKey: .bus)
        try container.encode(device, forKey: .device)
        try container.encode(vendorProduct, forKey: .vendorProduct)
        try container.encode(family, forKey: .family)
        try container.encode(stage, forKey: .stage)
        try container.encode(stageName, forKey: .stageName)
        try container.encode(chip, forKey: .chip)
        try container.encode(manufacturer, forKey: .manufacturer)
        try container.encode(product, forKey: .product)
        try container.encode(serial, forKey: .serial)
        try container.encode(speed, forKey: .speed)
        try container.encode(alternates, forKey: .alternates)
    }

    init(_ identity: USBDeviceIdentity, alternates: [DFUInterfaceAlternate]?) {
        port = identity.port.description
        bus = identity.busNumber
        device = identity.deviceAddress
        vendorProduct = identity.vendorProduct
        let kind = BoardFamilies.standard.classify(identity, alternates: alternates?.compactMap(\.name) ?? [])
        family = kind.family.rawValue
        stage = kind.code
        stageName = kind.displayName
        chip = kind.family == .stm32mp ? ChipFamily.fromProduct(identity.product) : nil
        manufacturer = identity.manufacturer
        product = identity.product
        serial = identity.serial
        speed = identity.speed
        self.alternates = alternates
    }

    /// `1-1  bus 1 dev 2  0483:df11  ROM code (mp15)  serial …  high speed`, then one line per alternate.
    var text: String {
        var line = "\(port)  bus \(bus) dev \(device)  \(vendorProduct)  \(stageName)"
        if let chip { line += " (\(chip.rawValue))" }
        // The strings are the device's choice: shown escaped and shortened, never raw.
        line += "  serial \(TerminalText.field(serial ?? "?", limit: 40))  \(speed.rawValue) speed"
        if family != BoardFamilyName.stm32mp.rawValue, let product { line += "  \"\(TerminalText.field(product))\"" }
        for alt in alternates ?? [] {
            line += "\n    alt \(alt.alternate): \(alt.name.map { TerminalText.field($0) } ?? "(name unreadable)")"
        }
        return line
    }
}

/// Writes one line to stdout unbuffered, so a pipe reader sees each event as it happens.
func writeLine(_ text: String) {
    let bytes = Array((text + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
        guard written > 0 else { return }
        offset += written
    }
}

/// A line on stderr (messages that are not the command's output).
func printError(_ text: String) {
    let bytes = Array((text + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
}

/// `value` as one line of JSON (JSON Lines), keys sorted so output is stable.
func jsonLine(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
