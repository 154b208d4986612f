import DFU
import USBModel

/// Which firmware answers on the virtual board's port.
public enum FirmwareStage: String, Sendable, Hashable, CaseIterable, Codable {
    case rom, tfa, uboot
}

/// The USB identity of each stage, exactly as reference §2 gives it.
enum StageIdentity {
    static let vendorID: UInt16 = 0x0483
    static let productID: UInt16 = 0xDF11
    static let bcdDevice: UInt16 = 0x0200
    static let manufacturer = "STMicroelectronics"

    /// TF-A: `09 21 0F FF 00 00 04 10 01`.
    static let tfaFunctional = DFUFunctionalDescriptor(
        attributes: 0x0F, detachTimeoutMS: 255, transferSize: 1024, dfuVersion: 0x0110)
    /// U-Boot: `09 21 0F 00 00 00 10 10 01`.
    static let ubootFunctional = DFUFunctionalDescriptor(
        attributes: 0x0F, detachTimeoutMS: 0, transferSize: 4096, dfuVersion: 0x0110)
    /// ROM: 1024-byte transfers, DFU version per configuration; attributes and detach timeout
    /// copied from TF-A, which republishes the ROM's layout (UNCONFIRMED, §2.2).
    static func romFunctional(version: UInt16, transferSize: UInt16 = 1024) -> DFUFunctionalDescriptor {
        DFUFunctionalDescriptor(attributes: 0x0F, detachTimeoutMS: 255, transferSize: transferSize, dfuVersion: version)
    }

    /// Revision ID the stages print for each SoC (they differ between stages, §2.3).
    static func revision(_ soc: VirtualSoC, _ stage: FirmwareStage) -> UInt16 {
        switch (soc, stage) {
        case (.mp15, .rom): 0x0000
        case (.mp15, _): 0x2000
        case (.mp13, _): 0x1003
        case (.mp25, .rom), (.mp25, .uboot): 0x2000
        case (.mp25, .tfa): 0x0011
        }
    }

    static func chipName(_ soc: VirtualSoC) -> String {
        switch soc {
        case .mp15: "STM32MP157CAA Rev.B"
        case .mp13: "STM32MP135FAF Rev.Y"
        case .mp25: "STM32MP257FAI Rev.Y"
        }
    }

    static func hex(_ value: UInt16, digits: Int) -> String {
        let s = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, digits - s.count)) + s
    }

    static func romProduct(_ soc: VirtualSoC, speed: USBSpeed) -> String {
        let mode = speed == .full ? "FS" : "HS"
        return
            "DFU in \(mode) Mode @Device ID /0x\(hex(soc.deviceID, digits: 3)), @Revision ID /0x\(hex(revision(soc, .rom), digits: 4))"
    }

    static func tfaProduct(_ soc: VirtualSoC) -> String {
        "DFU @Device ID /0x\(hex(soc.deviceID, digits: 3)), @Revision ID /0x\(hex(revision(soc, .tfa), digits: 4)), @Name /\(chipName(soc)),"
    }

    static func ubootProduct(_ soc: VirtualSoC) -> String {
        "USB download gadget@Device ID /0x\(hex(soc.deviceID, digits: 3)), @Revision ID /0x\(hex(revision(soc, .uboot), digits: 4)), @Name /\(chipName(soc)),"
    }

    /// The MP15 ROM's six alternates, republished by the MP15 TF-A (§A.2, §B.1).
    static let mp15Alternates = [
        "@Partition0 /0x00/1*256Ke", "@FSBL /0x01/1*1Me", "@Partition2 /0x02/1*1Me", "@Partition3 /0x03/1*16Me",
        "@Partition4 /0x04/1*16Me", "@virtual /0xF1/1*512Ba",
    ]
}

/// What a firmware publishes on USB.
struct PublishedIdentity {
    var manufacturer: String
    var product: String
    var serial: String
    var alternates: [String]
    var functional: DFUFunctionalDescriptor
    /// iInterface of alternate 0 (TF-A: 6 + alt).
    var firstInterfaceString: UInt8
    /// Extra strings (TF-A: 4 `DFU Config`, 5 `DFU Interface`).
    var extraStrings: [UInt8: String] = [:]

    var deviceDescriptor: DeviceDescriptor {
        DeviceDescriptor(
            maxPacketSize0: 64, vendorID: StageIdentity.vendorID, productID: StageIdentity.productID,
            bcdDevice: StageIdentity.bcdDevice)
    }

    var configuration: ConfigurationDescriptor {
        var interfaces = alternates.indices.map { index in
            InterfaceAltSetting(
                interfaceNumber: 0, alternateSetting: UInt8(index), interfaceClass: 0xFE, interfaceSubClass: 0x01,
                interfaceProtocol: 0x02, interfaceStringIndex: firstInterfaceString + UInt8(index))
        }
        if !interfaces.isEmpty { interfaces[interfaces.count - 1].extra = [functional.bytes] }
        return ConfigurationDescriptor(configurationValue: 1, attributes: 0xC0, maxPower: 0x32, interfaces: interfaces)
    }

    func string(_ index: UInt8) -> String? {
        switch index {
        case 1: return manufacturer
        case 2: return product
        case 3: return serial
        default:
            if index >= firstInterfaceString, Int(index - firstInterfaceString) < alternates.count {
                return alternates[Int(index - firstInterfaceString)]
            }
            return extraStrings[index]
        }
    }
}
