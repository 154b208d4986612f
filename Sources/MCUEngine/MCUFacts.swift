package import DfuSe
package import MCUImages
package import USBModel

/// What a session learned about the MCU, as values: what the diagnoses and `mcu info` read.
package struct MCUFacts: Sendable, Hashable {
    package var identity: USBDeviceIdentity?
    package var alternates: [String?] = []
    package var kind: MCUKind?
    /// The Get command answer, when read.
    package var commands: [UInt8]?
    /// The option-byte block, when read.
    package var optionBytes: [UInt8]?
    /// Why the option bytes could not be read.
    package var optionBytesFailure: DfuSeFailure?
    /// The 96-bit unique ID, where the bootloader let it be read.
    package var uid: [UInt8]?
    /// Re-enumerations followed during the session.
    package var reenumerations = 0

    package init() {}

    package var family: MCUFamily? { kind?.family }

    /// The device ID, from the alternates' memory map (the bootloaders do not upload DBGMCU_IDCODE).
    package var deviceID: MCUDeviceID? { MCUDeviceID.from(alternates: alternates.compactMap { $0 }) }

    /// The serial the family's rule gives for the UID (nil when unknown or the rule is a constant).
    package var expectedSerial: String? {
        guard let family, let uid else { return nil }
        return family.expectedSerial(uid: uid)
    }

    /// The reported serial does not follow the UID rule.
    package var serialMismatch: Bool {
        guard let expected = expectedSerial, let serial = identity?.serial else { return false }
        return expected != serial
    }

    /// Option-byte fields decoded for the family: (name, value, meaning).
    package var decodedOptionBytes: [(name: String, value: UInt32, meaning: String)] {
        guard let family, let block = optionBytes else { return [] }
        return family.optionBytes.compactMap { field in
            field.value(in: block).map { (field.name, $0, field.describe($0)) }
        }
    }

    /// RDP level 1 per the option bytes (nil when not read).
    package var readProtected: Bool? {
        guard let family, let block = optionBytes else { return nil }
        return family.optionBytes.contains { $0.isReadProtected(block) }
    }

    /// Sector indices of the flash that the option bytes mark write-protected, where documented
    /// (F1 WRP0–3: a bit per two pages; F7 nWRP: a bit per sector; G0 WRP1A start/end pages).
    package var writeProtectedSectors: [Int] {
        guard let family, let block = optionBytes else { return [] }
        var sectors: [Int] = []
        switch family.id {
        case "f105":
            for (byteIndex, name) in ["WRP0", "WRP1", "WRP2", "WRP3"].enumerated() {
                guard let value = family.optionBytes.first(where: { $0.name == name })?.value(in: block) else {
                    continue
                }
                for bit in 0..<8 where value & (1 << bit) == 0 {
                    let group = byteIndex * 8 + bit
                    sectors += [group * 2, group * 2 + 1]
                }
            }
        case "f746":
            if let value = family.optionBytes.first(where: { $0.name == "nWRP" })?.value(in: block) {
                sectors = (0..<8).filter { value & (1 << $0) == 0 }
            }
        case "g0":
            if let value = family.optionBytes.first(where: { $0.name == "WRP1A" })?.value(in: block) {
                let start = Int(value & 0x7F)
                let end = Int((value >> 16) & 0x7F)
                if start <= end { sectors = Array(start...end) }
            }
        default: break
        }
        return sectors
    }
}

/// Why an MCU command failed: the typed fact plus what the session knew by then.
package struct MCUFailure: Error, Sendable, CustomStringConvertible {
    package enum Kind: Sendable {
        /// No MCU DfuSe device (matching the selection) is on the bus.
        case noDevice(seen: [USBDeviceIdentity])
        /// Several match and nothing chose one.
        case severalDevices([USBDeviceIdentity])
        /// The device could not be opened or described.
        case open(USBTransferError)
        /// A DfuSe request failed.
        case dfuse(DfuSeFailure)
        /// Readback differs from what was written.
        case verifyMismatch(address: UInt64, expected: UInt8, actual: UInt8, segment: MCUSegment)
        /// The file does not fit the device.
        case plan(MCUPlanError)
        /// The device did not come back after a reset it was told to do.
        case notBack(after: String)
        /// The request needs something this device does not offer (no option-byte alternate, no 0x92).
        case unsupported(String)
        /// Another job of this process holds the MCU on that port (the tracker never opens it twice).
        case leasedElsewhere(PortPath)
        case cancelled
    }

    package var kind: Kind
    package var facts: MCUFacts
    /// What was being done (`write`, `option-bytes`).
    package var operation: String

    package init(_ kind: Kind, facts: MCUFacts, operation: String) {
        self.kind = kind
        self.facts = facts
        self.operation = operation
    }

    package var description: String {
        switch kind {
        case .noDevice: return "no STM32 MCU in DFU mode found"
        case .severalDevices(let list):
            return
                "\(list.count) STM32 MCUs in DFU mode: choose one with --port (\(list.map(\.port.description).joined(separator: ", ")))"
        case .open(let error): return "cannot open the device: \(error)"
        case .dfuse(let failure): return failure.description
        case .verifyMismatch(let address, let expected, let actual, _):
            return
                "verification failed at \(DfuSe.address(address)): wrote 0x\(String(expected, radix: 16, uppercase: true)), read back 0x\(String(actual, radix: 16, uppercase: true))"
        case .plan(let error): return error.description
        case .notBack(let step): return "the MCU did not enumerate again after \(step)"
        case .unsupported(let text): return text
        case .leasedElsewhere(let port): return "the MCU on port \(port) is held by another job of this process"
        case .cancelled: return "cancelled"
        }
    }
}
