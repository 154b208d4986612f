package import DfuSe
package import USBModel

/// A fault of a virtual MCU (`--sim-scenario`), after the user reports issue 11 grew from.
package enum MCUScenario: String, Sendable, Hashable, CaseIterable, Codable {
    case none
    /// The device is an application's DFU class (CubeMX "STM32 DownLoad Firmware Update"), not
    /// ST's bootloader: writes and erases are acknowledged and nothing is stored.
    case appDFU = "app-dfu"
    /// RDP level 1: reads, writes and erases are refused with errVENDOR; Read Unprotect erases
    /// everything and resets the chip.
    case rdp1
    /// Some sectors are write-protected: writes to them succeed on USB and change nothing.
    case writeProtected = "write-protected"
    /// The bootloader mis-measured the HSE: string and option-byte uploads fail now and then, and
    /// the serial does not follow the UID rule.
    case hseMisdetect = "hse-misdetect"
    /// Every board reports one constant serial (`STM32FxSTM32`).
    case sameSerial = "same-serial"
}

/// How a virtual MCU is set up.
package struct MCUConfiguration: Sendable, Hashable {
    package var family: MCUFamily
    package var scenario: MCUScenario
    package var port: PortPath
    /// Where flash and option bytes are kept between runs (`mcu-<family>-flash.bin`, …).
    package var memoryDirectory: String
    /// The chip's 96-bit unique ID (the serial follows from it).
    package var uid: [UInt8]
    /// How long a page or sector erase keeps the bootloader busy (bwPollTimeout), per KiB.
    package var eraseTimePerKiB: Duration = .microseconds(100)
    /// The fixed part of an erase.
    package var eraseTimeBase: Duration = .milliseconds(2)
    /// bwPollTimeout after a data block.
    package var writeTime: Duration = .milliseconds(1)
    /// bwPollTimeout of a mass erase.
    package var massEraseTime: Duration = .milliseconds(50)
    /// Time between the reset after an option-byte write or Read Unprotect and the re-enumeration.
    package var resetTime: Duration = .milliseconds(300)

    package init(
        family: MCUFamily, scenario: MCUScenario = .none, port: PortPath = PortPath(bus: 1, ports: [1]),
        memoryDirectory: String, uid: [UInt8]? = nil
    ) {
        self.family = family
        self.scenario = scenario
        self.port = port
        self.memoryDirectory = memoryDirectory
        self.uid = uid ?? Self.defaultUID(family)
    }

    /// A stable UID per family so that runs agree on the serial.
    package static func defaultUID(_ family: MCUFamily) -> [UInt8] {
        var state = UInt64(family.deviceID) &* 0x9E37_79B9_7F4A_7C15
        return (0..<12).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 40)
        }
    }

    /// The serial the device reports.
    package var serial: String {
        switch scenario {
        case .sameSerial: return "STM32FxSTM32"
        case .hseMisdetect:
            // Garbage from a bootloader running USB on a wrong clock: not the UID rule.
            return String((family.expectedSerial(uid: uid) ?? "000000000000").reversed())
        default: return family.expectedSerial(uid: uid) ?? "STM32FxSTM32"
        }
    }

    /// The alternates the device offers: the bootloader's, or the application template's single flash one.
    package var alternates: [String] {
        guard scenario == .appDFU else { return family.alternates }
        // CubeMX's template: the first sectors hold the DFU application itself and are read-only.
        let flash = family.flash
        let reserved = max(1, flash.sectors.count / 16)
        var sectors = flash.sectors
        for index in 0..<reserved { sectors[index].access = 1 }
        return [DfuSeMemoryMap(name: "Internal Flash", sectors: sectors).formatted(namePadding: "   ")]
    }

    /// Sector indices of the flash that `write-protected` protects (the third and fourth erase units).
    package var protectedSectors: Range<Int> { scenario == .writeProtected ? 2..<4 : 0..<0 }
}
