/// What this project knows about one STM32 MCU family's system (ROM) bootloader over USB DFU: its
/// alternates, sector map, option-byte block, serial rule and quirks (AN2606, AN3156, reference
/// `stm32-mcu-dfuse.md`). Used to recognise a bootloader from its memory maps, to decode option
/// bytes, and by the virtual MCUs. Values marked UNCONFIRMED in docs/mcu.md come from reference
/// manuals, not from a captured bootloader.
package struct MCUFamily: Sendable, Hashable {
    /// Short name used on the command line (`f105`, `f746`, `h562`, `g0`).
    package var id: String
    /// The series as people say it (`STM32F105/107 (connectivity line)`).
    package var name: String
    /// DBGMCU_IDCODE device ID (AN2606 tables).
    package var deviceID: UInt16
    /// Every alternate's iInterface string, alternate 0 first.
    package var alternates: [String]
    /// Address of the 96-bit unique ID, where the bootloader lets it be read (nil: not readable).
    package var uidAddress: UInt32?
    /// bcdDevice of the bootloader (MSB = version, `0x2200` = v2.2).
    package var bcdDevice: UInt16
    /// iProduct as the bootloader reports it.
    package var product: String
    /// The DfuSe Get command answer (`00 21 41 92`; H5 has no 0x92).
    package var commands: [UInt8]
    /// How the bootloader builds iSerial.
    package var serialRule: SerialRule
    /// Option-byte fields that docs/mcu.md lists as decoded for this family.
    package var optionBytes: [OptionByteField]
    /// Words the doctor and diagnoses add for this family (clock, supply, product state).
    package var notes: [String]

    package enum SerialRule: String, Sendable, Hashable {
        /// ST USB device library: hex8(UID[0] + UID[2]) ‖ hex4(UID[1] >> 16), 12 characters.
        case usbdLibrary
        /// A constant string on every board (F4 bootloader v2.2: `STM32FxSTM32`).
        case constant
    }

    /// The flash alternate's map.
    package var flash: DfuSeMemoryMap { DfuSeMemoryMap(alternates[0])! }
    /// The option-byte alternate, when the family has one.
    package var optionByteMap: DfuSeMemoryMap? {
        alternates.lazy.compactMap(DfuSeMemoryMap.init).first { $0.name.hasPrefix("Option Bytes") }
    }
    /// True when the bootloader supports Read Unprotect (0x92).
    package var hasReadUnprotect: Bool { commands.contains(DfuSeCommand.readUnprotect) }

    /// The serial the bootloader should report for this UID (nil for a constant-serial rule).
    package func expectedSerial(uid: [UInt8]) -> String? {
        switch serialRule {
        case .constant: return nil
        case .usbdLibrary: return Self.usbdSerial(uid: uid)
        }
    }

    /// ST USB device library `Get_SerialNum`: UID words are little-endian 32-bit words.
    package static func usbdSerial(uid: [UInt8]) -> String? {
        guard uid.count >= 12 else { return nil }
        func word(_ i: Int) -> UInt32 {
            UInt32(uid[i]) | UInt32(uid[i + 1]) << 8 | UInt32(uid[i + 2]) << 16 | UInt32(uid[i + 3]) << 24
        }
        let first = word(0) &+ word(8)
        let second = UInt16(word(4) >> 16)
        let high = String(second, radix: 16, uppercase: true)
        return hex8(first) + String(repeating: "0", count: 4 - high.count) + high
    }
}

/// DfuSe commands sent as DNLOAD block 0 (AN3156 §5).
package enum DfuSeCommand {
    package static let getCommands: UInt8 = 0x00
    package static let setAddressPointer: UInt8 = 0x21
    package static let erase: UInt8 = 0x41
    package static let readUnprotect: UInt8 = 0x92

    package static func name(_ code: UInt8) -> String {
        switch code {
        case getCommands: "Get"
        case setAddressPointer: "Set Address Pointer"
        case erase: "Erase"
        case readUnprotect: "Read Unprotect"
        default: "command 0x" + String(code, radix: 16, uppercase: true)
        }
    }
}

/// One decoded field of an option-byte block.
package struct OptionByteField: Sendable, Hashable {
    package enum Meaning: Sendable, Hashable {
        /// Read-out protection byte: `level0` means level 0, `level2` level 2, anything else level 1.
        case readProtection(level0: UInt8, level2: UInt8?)
        /// H5 product state (Open 0xED, Provisioning 0x17, iROT-provisioned 0x2E, TZ-closed 0xC6,
        /// Closed 0x72, Locked 0x5C).
        case productState
        /// Write protection, a bit per sector group, 0 = protected (`inverted`) or 1 = protected.
        case writeProtection(inverted: Bool)
        /// A number shown in hex.
        case raw
    }

    package var name: String
    /// Offset in the block.
    package var offset: Int
    /// Width in bytes (little-endian).
    package var width: Int
    /// Offset of the complement byte(s) the hardware checks (F1), rewritten on `--set`.
    package var complementOffset: Int?
    package var meaning: Meaning

    package init(name: String, offset: Int, width: Int = 1, complementOffset: Int? = nil, meaning: Meaning = .raw) {
        self.name = name
        self.offset = offset
        self.width = width
        self.complementOffset = complementOffset
        self.meaning = meaning
    }

    /// The field's value in `block` (nil when the block is too short).
    package func value(in block: [UInt8]) -> UInt32? {
        guard offset + width <= block.count else { return nil }
        var value: UInt32 = 0
        for i in 0..<width { value |= UInt32(block[offset + i]) << (8 * i) }
        return value
    }

    /// `block` with the field (and its complement) set to `value`.
    package func setting(_ value: UInt32, in block: [UInt8]) -> [UInt8] {
        var result = block
        for i in 0..<width where offset + i < result.count {
            result[offset + i] = UInt8((value >> (8 * i)) & 0xFF)
            if let complement = complementOffset, complement + 2 * i < result.count {
                result[complement + 2 * i] = ~UInt8((value >> (8 * i)) & 0xFF)
            }
        }
        return result
    }

    /// Human meaning of `value`.
    package func describe(_ value: UInt32) -> String {
        let hex = "0x" + String(value, radix: 16, uppercase: true)
        switch meaning {
        case .raw: return hex
        case .readProtection(let level0, let level2):
            if value == UInt32(level0) { return "\(hex) (level 0, not protected)" }
            if let level2, value == UInt32(level2) { return "\(hex) (level 2, bootloader disabled)" }
            return "\(hex) (level 1, read-protected)"
        case .productState:
            let names: [UInt32: String] = [
                0xED: "Open", 0x17: "Provisioning", 0x2E: "iROT-Provisioned", 0xC6: "TZ-Closed", 0x72: "Closed",
                0x5C: "Locked",
            ]
            return "\(hex) (\(names[value] ?? "unknown state"))"
        case .writeProtection(let inverted):
            let protectedBits = inverted ? ~value & ((1 << (8 * width)) - 1) : value
            return protectedBits == 0
                ? "\(hex) (no write protection)"
                : "\(hex) (write-protected groups: mask 0x\(String(protectedBits, radix: 16, uppercase: true)))"
        }
    }

    /// Read-protection level 1 in this block.
    package func isReadProtected(_ block: [UInt8]) -> Bool {
        guard case .readProtection(let level0, _) = meaning, let value = value(in: block) else { return false }
        return value != UInt32(level0)
    }
}

extension MCUFamily {
    /// STM32F105/107: 256 KiB in 2 KiB pages, 16-byte option block at 0x1FFFF800 with complements
    /// (RM0008 §2.5), bootloader V2.x on OTG_FS that tries 25 MHz, 14.7456 MHz, then 8 MHz HSE.
    package static let f105 = MCUFamily(
        id: "f105", name: "STM32F105/107 (connectivity line)", deviceID: 0x418,
        alternates: ["@Internal Flash  /0x08000000/128*002Kg", "@Option Bytes  /0x1FFFF800/01*016 e"],
        uidAddress: 0x1FFF_F7E8, bcdDevice: 0x2100, product: "STM32 BOOTLOADER",
        commands: [0x00, 0x21, 0x41, 0x92], serialRule: .usbdLibrary,
        optionBytes: [
            OptionByteField(
                name: "RDP", offset: 0, complementOffset: 1, meaning: .readProtection(level0: 0xA5, level2: nil)),
            OptionByteField(name: "USER", offset: 2, complementOffset: 3),
            OptionByteField(name: "DATA0", offset: 4, complementOffset: 5),
            OptionByteField(name: "DATA1", offset: 6, complementOffset: 7),
            OptionByteField(name: "WRP0", offset: 8, complementOffset: 9, meaning: .writeProtection(inverted: true)),
            OptionByteField(name: "WRP1", offset: 10, complementOffset: 11, meaning: .writeProtection(inverted: true)),
            OptionByteField(name: "WRP2", offset: 12, complementOffset: 13, meaning: .writeProtection(inverted: true)),
            OptionByteField(name: "WRP3", offset: 14, complementOffset: 15, meaning: .writeProtection(inverted: true)),
        ],
        notes: [
            "The F105/F107 bootloader tries an HSE of 25 MHz, then 14.7456 MHz, then 8 MHz, and resets after six failed trials (AN2606); boards with other crystals may not enumerate."
        ])

    /// STM32F74x/75x: 1 MiB in 4×32 + 128 + 3×256 KiB sectors (not the F405 string), HSE measured
    /// against HSI (AN2606 §4.1), 32-byte option block at 0x1FFF0000 (RM0385).
    package static let f746 = MCUFamily(
        id: "f746", name: "STM32F74x/75x", deviceID: 0x449,
        alternates: [
            "@Internal Flash  /0x08000000/04*032Kg,01*128Kg,03*256Kg", "@Option Bytes  /0x1FFF0000/01*032 e",
            "@OTP Memory /0x1FF0F000/01*1056 e", "@Device Feature/0xFFFF0000/01*004 e",
        ],
        uidAddress: 0x1FF0_F420, bcdDevice: 0x2200, product: "STM32  BOOTLOADER",
        commands: [0x00, 0x21, 0x41, 0x92], serialRule: .usbdLibrary,
        optionBytes: [
            OptionByteField(name: "USER", offset: 0),
            OptionByteField(name: "RDP", offset: 1, meaning: .readProtection(level0: 0xAA, level2: 0xCC)),
            OptionByteField(name: "nWRP", offset: 8, meaning: .writeProtection(inverted: true)),
            OptionByteField(name: "BOOT_ADD0", offset: 16, width: 2),
            OptionByteField(name: "BOOT_ADD1", offset: 24, width: 2),
        ],
        notes: [
            "The F2/F4/F7 bootloader measures the HSE against the HSI and needs an integer MHz crystal from 4 to 26 MHz; at 24–26 MHz an HSI off by ~2 % (temperature) gives a wrong USB clock (AN2606 §4.1)."
        ])

    /// STM32H562/563: 2 MiB in 8 KiB sectors, no RDP (product state instead, no Read Unprotect),
    /// Get answers `00 21 41` (AN3156 §4.2).
    package static let h562 = MCUFamily(
        id: "h562", name: "STM32H562/563", deviceID: 0x484,
        alternates: ["@Internal Flash   /0x08000000/256*08Kg", "@Option Bytes   /0x40022050/01*088 e"],
        uidAddress: 0x08FF_F800, bcdDevice: 0x3000, product: "DFU in FS Mode",
        commands: [0x00, 0x21, 0x41], serialRule: .usbdLibrary,
        optionBytes: [
            OptionByteField(name: "USER", offset: 0),
            OptionByteField(name: "PRODUCT_STATE", offset: 1, meaning: .productState),
        ],
        notes: [
            "STM32H5: no RDP; the product state decides. OBK provisioning (PRODUCT_STATE 0x17 → 0x72) is reported to fail while USB is connected: provision over SWD with USB unplugged (docs/troubleshooting.md#h5-obk-with-usb)."
        ])

    /// STM32G0B1: 512 KiB in 2 KiB pages, option block at 0x1FFF7800 (FLASH_OPTR first, RM0444).
    package static let g0 = MCUFamily(
        id: "g0", name: "STM32G0B1/G0C1", deviceID: 0x467,
        alternates: ["@Internal Flash   /0x08000000/256*02Kg", "@Option Bytes   /0x1FFF7800/01*128 e"],
        uidAddress: 0x1FFF_7590, bcdDevice: 0x3000, product: "DFU in FS Mode",
        commands: [0x00, 0x21, 0x41, 0x92], serialRule: .usbdLibrary,
        optionBytes: [
            OptionByteField(name: "RDP", offset: 0, meaning: .readProtection(level0: 0xAA, level2: 0xCC)),
            OptionByteField(name: "USER", offset: 1, width: 3),
            OptionByteField(name: "WRP1A", offset: 24, width: 4),
        ],
        notes: [])

    /// The families the virtual MCUs model and the recogniser knows by their maps.
    package static let all: [MCUFamily] = [.f105, .f746, .h562, .g0]

    package static func named(_ id: String) -> MCUFamily? { all.first { $0.id == id } }

    /// Flash strings of families we recognise but do not model (so `list` still names them).
    /// The device ID where the map names one line (AN2606); nil where lines share the map.
    static let otherFlashStrings: [(prefix: String, name: String, deviceID: UInt16?)] = [
        ("04*016Kg,01*064Kg,07*128Kg", "STM32F405/407/415/417", 0x413),
        ("04*016Kg,01*064Kg,03*128Kg", "STM32F72x/73x", 0x452),
        ("04*016Kg,01*064Kg,01*128Kg", "STM32F401/411", nil),
        ("16*128Kg", "STM32H74x/75x", 0x450),
        ("08*128Kg", "STM32H72x/73x/H750", nil),
    ]

    /// What the user should know about a series the tool cannot see over DFU (H7 supply lock-up),
    /// from the flash string of a family it does not model.
    package static func seriesNotes(flashString: String) -> [String] {
        guard let name = seriesName(flashString: flashString), name.hasPrefix("STM32H7") else { return [] }
        return [
            "\(name): a firmware that selects the wrong SMPS/LDO supply locks the core up so that neither SWD nor DFU connects; recovery needs BOOT0 high and a full power cycle (docs/troubleshooting.md#h7-smps-ldo)."
        ]
    }

    /// Recognises a family from the alternates' strings (the flash map first, then the option-byte
    /// address); nil when nothing matches.
    package static func identify(alternates: [String]) -> MCUFamily? {
        let maps = alternates.compactMap(DfuSeMemoryMap.init)
        guard let flash = maps.first(where: { $0.name.hasPrefix("Internal Flash") }) else { return nil }
        let options = maps.first(where: { $0.name.hasPrefix("Option Bytes") })
        return all.first { family in
            family.flash.sectors.map(\.size) == flash.sectors.map(\.size) && family.flash.start == flash.start
                && (options == nil || family.optionByteMap?.start == options?.start)
        }
    }

    /// A series name for flash maps the tool does not model (nil when unknown).
    package static func seriesName(flashString: String) -> String? {
        otherFlashStrings.first { flashString.contains($0.prefix) }?.name
    }
}

/// The DBGMCU_IDCODE device ID of an MCU in its bootloader (`0x449` for STM32F74x/75x), and where
/// the tool learnt it. The bootloaders do not let DBGMCU_IDCODE be uploaded (F4 refuses the read,
/// F7 hangs: the register takes 32-bit accesses only, ST community threads), so the ID comes from
/// the alternates' memory map, which names one product line (AN2606 device IDs).
package struct MCUDeviceID: Sendable, Hashable, CustomStringConvertible {
    package enum Source: String, Sendable, Hashable {
        /// The flash (and option-byte) map matched a family of the table.
        case memoryMap = "memory-map"
    }

    package var value: UInt16
    /// The product line the ID stands for (`STM32F74x/75x`).
    package var series: String
    package var source: Source

    package init(value: UInt16, series: String, source: Source) {
        self.value = value
        self.series = series
        self.source = source
    }

    /// `0x449`.
    package var description: String { "0x" + String(value, radix: 16, uppercase: true) }

    /// From the alternates' names; nil when the map does not name one line.
    package static func from(alternates: [String]) -> MCUDeviceID? {
        if let family = MCUFamily.identify(alternates: alternates) {
            return MCUDeviceID(value: family.deviceID, series: family.name, source: .memoryMap)
        }
        guard let flash = alternates.first(where: { $0.contains("Internal Flash") }),
            let line = MCUFamily.otherFlashStrings.first(where: { flash.contains($0.prefix) }),
            let value = line.deviceID
        else { return nil }
        return MCUDeviceID(value: value, series: line.name, source: .memoryMap)
    }
}
