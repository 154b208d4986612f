import ArgumentParser
import BoardTracking
import BootImages
import DfuSe
import FlashEngine
import FoundationEssentials
import Glibc
import NullEncoding
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
    /// Set when the device is an STM32 microcontroller's DFU (docs/mcu.md), not an STM32MP stage.
    var mcu: MCUDeviceReport?

    enum CodingKeys: String, CodingKey {
        case port, bus, device, vendorProduct, family, stage, stageName, chip, manufacturer, product, serial, speed,
            alternates, mcu
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
        // An MCU's DFU (the stm32-mcu family): what DfuSe knows of it, for people and scripts.
        let names = alternates?.compactMap(\.name)
        if kind.family == .stm32MCU, let mcuKind = MCUKind.of(identity, alternates: names ?? []) {
            let report = MCUDeviceReport(
                mcuKind, flashString: names?.first { $0.contains("Internal Flash") },
                deviceID: names.flatMap(MCUDeviceID.from(alternates:)))
            mcu = report
            stageName = mcuKind.displayName(series: report.series)
        }
    }

    /// `1-1  bus 1 dev 2  0483:df11  ROM code (mp15)  serial …  high speed`, then one line per alternate.
    var text: String {
        var line = "\(port)  bus \(bus) dev \(device)  \(vendorProduct)  \(stageName)"
        if let chip { line += " (\(chip.rawValue))" }
        // The strings are the device's choice: shown escaped and shortened, never raw.
        line += "  serial \(TerminalText.field(serial ?? "?", limit: 40))  \(speed.rawValue) speed"
        if family != BoardFamilyName.stm32mp.rawValue, let product { line += "  \"\(TerminalText.field(product))\"" }
        if let id = mcu?.deviceID { line += "\n    device ID \(id) (from the memory map)" }
        for note in mcu?.notes ?? [] { line += "\n    note: \(note)" }
        for alt in alternates ?? [] {
            line += "\n    alt \(alt.alternate): \(alt.name.map { TerminalText.field($0) } ?? "(name unreadable)")"
        }
        return line
    }
}

/// What `list` and `watch` say about an STM32 MCU DFU device.
struct MCUDeviceReport: Codable {
    /// `system-bootloader` or `application-dfu`.
    var kind: String
    /// `f105`, `f746`, `h562`, `g0`, or null.
    var family: String?
    /// The series, from the family or the flash map (`STM32H74x/75x`); null when unknown.
    var series: String?
    /// From bcdDevice (`2.2`); null for an application.
    var bootloaderVersion: String?
    /// What to read for this series (H5 OBK, H7 SMPS/LDO).
    var notes: [String]
    /// DBGMCU_IDCODE device ID (`0x449`) from the memory map; null when the map names no one line.
    var deviceID: String?
    /// Where the device ID came from (`memory-map`); null with it.
    var deviceIDSource: String?

    init(_ kind: MCUKind, flashString: String?, deviceID id: MCUDeviceID? = nil) {
        deviceID = id?.description
        deviceIDSource = id?.source.rawValue
        self.kind = kind.name
        family = kind.family?.id
        series = kind.family?.name ?? flashString.flatMap(MCUFamily.seriesName(flashString:))
        if case .systemBootloader(_, let version) = kind { bootloaderVersion = MCUKind.versionText(version) }
        notes = (kind.family?.notes ?? []) + (flashString.map(MCUFamily.seriesNotes(flashString:)) ?? [])
    }

    enum CodingKeys: String, CodingKey { case kind, family, series, bootloaderVersion, notes, deviceID, deviceIDSource }
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
    return String(decoding: try encoder.encode(KeepingNulls(value)), as: UTF8.self)
}
