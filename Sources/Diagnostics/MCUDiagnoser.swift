import DFU
import DfuSe
package import MCUEngine
import USBModel

/// Explains a failed MCU command from the session's typed facts (never from error text): the
/// same shape as `Diagnoser` (cause, evidence, next steps, alternatives and what tells them apart).
package enum MCUDiagnoser {
    package static func diagnose(_ failure: MCUFailure) -> Diagnosis {
        let facts = failure.facts
        let evidence = Self.evidence(facts)
        switch failure.kind {
        case .cancelled:
            return Diagnosis(
                code: .cancelled, cause: DiagnosisCode.cancelled.summary, evidence: evidence,
                nextSteps: [
                    "Run the command again; an interrupted write leaves the touched sectors erased or half written."
                ])
        case .noDevice(let seen):
            let others = seen.map { "\($0.port): \($0.vendorProduct) \($0.product.map { "\"\($0)\"" } ?? "")" }
            return Diagnosis(
                code: .noBoard, cause: "No STM32 MCU in DFU mode (system bootloader or application DFU) is visible.",
                evidence: others.isEmpty
                    ? ["no DFU device at all"]
                    : ["DFU devices that are not an STM32 MCU: " + others.joined(separator: "; ")],
                nextSteps: [
                    "Start the system bootloader: BOOT0 high (on some parts an option bit, nBOOT0/nSWBOOT0) and reset, with USB connected to the MCU's DFU-capable USB port.",
                    "Run `stm32mp-flash doctor` for permissions and udev rules.",
                    "An STM32MP board in its ROM is not an MCU: use `stm32mp-flash flash` for it.",
                ])
        case .severalDevices(let list):
            return Diagnosis(
                code: .severalBoards, cause: "Several STM32 MCUs are in DFU mode and nothing says which one to use.",
                evidence: list.map { "\($0.port): serial \($0.serial ?? "?")" },
                nextSteps: [
                    "Choose one with --port PATH (`stm32mp-flash list` shows the port paths). MCU bootloaders may all report one serial (`STM32FxSTM32`), so --serial may not tell them apart."
                ])
        case .open(let error):
            let code: DiagnosisCode =
                switch error.kind {
                case .access: .usbPermission
                case .busy: .deviceBusy
                case .noDevice: .disconnected
                default: .transferError
                }
            return Diagnosis(
                code: code, cause: code.summary, evidence: evidence + [error.description],
                nextSteps: ["Run `stm32mp-flash doctor`."])
        case .plan, .unsupported:
            return Diagnosis(
                code: .protocolError, cause: failure.description, evidence: evidence,
                nextSteps: ["Check the file and the addresses against `stm32mp-flash mcu info`."])
        case .leasedElsewhere(let port):
            return Diagnosis(
                code: .boardBusy, cause: DiagnosisCode.boardBusy.summary,
                evidence: evidence + ["port \(port) is leased by another job of this process"],
                nextSteps: ["Wait for the other job to finish, or choose another MCU with --port."])
        case .notBack(let step):
            return Diagnosis(
                code: .disconnected, cause: "The MCU did not come back on USB after \(step).", evidence: evidence,
                nextSteps: [
                    "An option-byte write or Read Unprotect resets the chip; with BOOT0 low it then starts the application instead of the bootloader. Keep BOOT0 high and run `stm32mp-flash mcu info`.",
                    "If the new option bytes turned on RDP level 2, the bootloader is disabled for good.",
                ])
        case .verifyMismatch(let address, let expected, let actual, _):
            return verifyMismatch(facts, evidence, address: address, expected: expected, actual: actual)
        case .dfuse(let dfuse):
            return dfuseFailure(dfuse, facts, evidence)
        }
    }

    /// A diagnosis worth showing although the command worked (`mcu info` on an application's DFU,
    /// or on a bootloader whose serial or option-byte upload points at a wrong USB clock).
    package static func advisory(_ facts: MCUFacts) -> Diagnosis? {
        if facts.kind?.isApplication == true { return appDFU(facts, evidence(facts)) }
        if facts.serialMismatch || (facts.optionBytesFailure.map { !$0.isVendorError } ?? false) {
            return usbClock(facts, evidence(facts))
        }
        return nil
    }

    // MARK: - Rules

    static func verifyMismatch(_ facts: MCUFacts, _ evidence: [String], address: UInt64, expected: UInt8, actual: UInt8)
        -> Diagnosis
    {
        let seen =
            evidence + [
                "readback differs first at \(DfuSe.address(address)): wrote 0x\(hex2(expected)), read 0x\(hex2(actual))"
            ]
        if facts.kind?.isApplication == true {
            return appDFU(facts, seen)
        }
        if let family = facts.family,
            let sectorIndex = family.flash.sectors.firstIndex(where: { $0.contains(address) }),
            facts.writeProtectedSectors.contains(sectorIndex)
        {
            let sector = family.flash.sectors[sectorIndex]
            return Diagnosis(
                code: .mcuWriteProtected,
                cause:
                    "Writes to \(DfuSe.address(address)) did not take: sector \(sectorIndex) (\(DfuSe.address(UInt64(sector.address)))–\(DfuSe.address(sector.end - 1))) is write-protected, and the bootloader does not report an error for that (AN3156 §5.3).",
                evidence: seen + [
                    "the option bytes mark sector(s) \(facts.writeProtectedSectors.map(String.init).joined(separator: ", ")) write-protected"
                ],
                nextSteps: [
                    "Clear the write protection in the option bytes: `stm32mp-flash mcu option-bytes` shows the fields; `--set \(wrpFieldName(family))=…` writes them (the chip resets).",
                    "Then write again: `stm32mp-flash mcu write FILE`.",
                ],
                alternatives: [
                    AlternativeCause(
                        code: .mcuVerifyMismatch, cause: DiagnosisCode.mcuVerifyMismatch.summary,
                        howToTell:
                            "If the sector is not marked in the option bytes, the flash itself or the file's overlap is to blame."
                    )
                ])
        }
        return Diagnosis(
            code: .mcuVerifyMismatch,
            cause: "The flash reads back differently from what was written, first at \(DfuSe.address(address)).",
            evidence: seen,
            nextSteps: [
                "Write again; if the same address differs, erase it (`stm32mp-flash mcu erase --address … --length …`) and write once more.",
                "Check whether the file overlaps itself or writes twice into one sector without an erase in between (flash bits only go from 1 to 0).",
                "Read the option bytes (`stm32mp-flash mcu option-bytes`) for write protection.",
            ],
            alternatives: [
                AlternativeCause(
                    code: .mcuWriteProtected, cause: DiagnosisCode.mcuWriteProtected.summary,
                    howToTell:
                        "Write-protected sectors keep their old content exactly; the option bytes show the protection."),
                AlternativeCause(
                    code: .mcuAppDFU, cause: DiagnosisCode.mcuAppDFU.summary,
                    howToTell:
                        "An application's DFU shows its own product string (not STM32 BOOTLOADER) and one flash alternate with read-only (`a`) sectors."
                ),
            ])
    }

    static func appDFU(_ facts: MCUFacts, _ evidence: [String]) -> Diagnosis {
        var seen = evidence
        if let commands = facts.commands {
            seen.append("DfuSe Get answers \(commands.map(hex2).joined(separator: " ")) (ST's bootloader: 00 21 41 92)")
        }
        return Diagnosis(
            code: .mcuAppDFU,
            cause:
                "This is your firmware's DFU class (the CubeMX \"DFU\" template), not ST's system bootloader: writes are accepted on USB, but the template's MEM_If_Write/Erase are stubs, so nothing is stored.",
            evidence: seen,
            nextSteps: [
                "Enter ST's system bootloader instead: BOOT0 high and reset (F105/F107: BOOT0=1, BOOT1=0), or jump to the bootloader from your firmware (F105: system memory at 0x1FFFB000).",
                "Or implement MEM_If_Erase/MEM_If_Write/MEM_If_Read in the template's usbd_dfu_if.c.",
                "Check with `stm32mp-flash mcu info`: the bootloader reports \"STM32 BOOTLOADER\" (or \"DFU in FS Mode\"), several alternates (flash, option bytes) and Get 00 21 41 92.",
            ],
            alternatives: [
                AlternativeCause(
                    code: .mcuWriteProtected, cause: DiagnosisCode.mcuWriteProtected.summary,
                    howToTell:
                        "Under ST's bootloader (product STM32 BOOTLOADER) only the protected sectors keep their content."
                )
            ])
    }

    static func dfuseFailure(_ failure: DfuSeFailure, _ facts: MCUFacts, _ evidence: [String]) -> Diagnosis {
        let seen = evidence + ["\(stepName(failure.step)) failed: \(failure.description)"]
        if failure.isVendorError, facts.kind?.isApplication != true {
            let flash = facts.family?.flash
            let erased =
                flash.map {
                    "all \($0.totalSize / 1024) KiB of flash (\(DfuSe.address(UInt64($0.start)))–\(DfuSe.address($0.end - 1)))"
                } ?? "the whole flash"
            let hasUnprotect =
                facts.commands?.contains(DfuSeCommand.readUnprotect) ?? facts.family?.hasReadUnprotect ?? true
            return Diagnosis(
                code: .mcuReadProtected,
                cause:
                    "The MCU is read-protected (RDP level 1): the bootloader refuses reads, writes and erases with errVENDOR (AN3156 §5).",
                evidence: seen,
                nextSteps: hasUnprotect
                    ? [
                        "`stm32mp-flash mcu unprotect --yes` sends Read Unprotect (0x92): it erases \(erased) and the RAM, resets the option bytes to level 0 and resets the chip. Your firmware and data are gone afterwards.",
                        "Then write the firmware again with `stm32mp-flash mcu write FILE`.",
                    ]
                    : [
                        "This bootloader has no Read Unprotect (STM32H5: product state instead of RDP). Regress the product state with STM32CubeProgrammer over SWD (with USB unplugged for OBK provisioning, docs/troubleshooting.md#h5-obk-with-usb)."
                    ],
                alternatives: [
                    AlternativeCause(
                        code: .mcuUSBClock, cause: DiagnosisCode.mcuUSBClock.summary,
                        howToTell:
                            "A clock problem fails with STALLs or timeouts and varies between tries; RDP refuses every read with errVENDOR (status 0x0B) every time."
                    )
                ])
        }
        if facts.kind?.isApplication == true {
            return appDFU(facts, seen)
        }
        let clockSuspect =
            facts.serialMismatch || (failure.step == .read(facts.family?.optionByteMap?.start ?? 0))
            || facts.optionBytesFailure != nil
        if clockSuspect {
            return usbClock(facts, seen)
        }
        let code: DiagnosisCode =
            switch failure.error.transferError?.kind {
            case .timeout: .transferTimeout
            case .noDevice: .disconnected
            case .some: .transferError
            case .none: .protocolError
            }
        return Diagnosis(
            code: code, cause: code.summary, evidence: seen,
            nextSteps: [
                "Run the command again; if it fails at the same step, run `stm32mp-flash mcu info` and check the option bytes.",
                "Use a short cable on a port of the computer itself.",
            ],
            alternatives: [
                AlternativeCause(
                    code: .mcuUSBClock, cause: DiagnosisCode.mcuUSBClock.summary,
                    howToTell:
                        "With a mis-measured HSE the serial does not follow the UID rule and option-byte reads fail now and then."
                )
            ])
    }

    static func usbClock(_ facts: MCUFacts, _ evidence: [String]) -> Diagnosis {
        var seen = evidence
        if facts.serialMismatch, let expected = facts.expectedSerial {
            seen.append(
                "the serial \"\(facts.identity?.serial ?? "")\" does not follow the UID rule (expected \"\(expected)\" from the UID)"
            )
        }
        if let failure = facts.optionBytesFailure {
            seen.append("uploading the option bytes failed: \(failure.description)")
        }
        let note =
            facts.family?.notes.first
            ?? "The bootloader measures the HSE crystal against its internal RC oscillator to set up the 48 MHz USB clock (AN2606)."
        return Diagnosis(
            code: .mcuUSBClock,
            cause:
                "The bootloader most likely mis-measured the HSE crystal, so USB runs on a clock a few percent off: strings, serial and option-byte uploads fail or come back wrong, on some boards and some days.",
            evidence: seen + [note],
            nextSteps: [
                "Check the crystal: the F2/F4/F7 bootloader needs an integer MHz HSE from 4 to 26 MHz; 24–26 MHz are at risk when the HSI is off with temperature. AN2606 advises 8 MHz over 25 MHz for a reliable bootloader.",
                "Try again at room temperature; a board that fails warm and works cold points at the HSI tolerance.",
                "Cross-check with the UART bootloader (USART1, PA9/PA10), which does not depend on the HSE measurement.",
                "Use a USB 2.0 port or hub directly: the link is full speed and marginal clocks fail first on long chains.",
            ],
            alternatives: [
                AlternativeCause(
                    code: .mcuReadProtected, cause: DiagnosisCode.mcuReadProtected.summary,
                    howToTell:
                        "RDP refuses every option-byte and flash read with errVENDOR, every time, and the serial follows the UID rule."
                )
            ])
    }

    // MARK: - Evidence

    /// One line per fact the session holds.
    package static func evidence(_ facts: MCUFacts) -> [String] {
        var lines: [String] = []
        if let identity = facts.identity {
            lines.append(
                "\(identity.port): \(identity.vendorProduct) bcdDevice 0x\(hex4(identity.bcdDevice)) \"\(identity.product ?? "?")\" serial \"\(identity.serial ?? "?")\""
            )
        }
        if let kind = facts.kind {
            switch kind {
            case .systemBootloader(let family, let version):
                lines.append(
                    "ST system bootloader v\(MCUKind.versionText(version))" + (family.map { ", \($0.name)" } ?? ""))
            case .applicationDFU(let family):
                lines.append("an application's DFU interface" + (family.map { " on an \($0.name)" } ?? ""))
            }
        }
        let alternates = facts.alternates.enumerated().map { "alt \($0.offset) \"\($0.element ?? "?")\"" }
        if !alternates.isEmpty { lines.append("alternates: " + alternates.joined(separator: ", ")) }
        return lines
    }

    static func stepName(_ step: DfuSeFailure.Step) -> String {
        switch step {
        case .getCommands: "Get"
        case .setAddress(let a): "Set Address Pointer \(DfuSe.address(UInt64(a)))"
        case .erasePage(let a): "Erase \(DfuSe.address(UInt64(a)))"
        case .massErase: "Mass erase"
        case .write(let a): "Write at \(DfuSe.address(UInt64(a)))"
        case .read(let a): "Read at \(DfuSe.address(UInt64(a)))"
        case .readUnprotect: "Read Unprotect"
        case .leave: "Leave DFU"
        case .optionBytesWrite(let a): "Option-byte write at \(DfuSe.address(UInt64(a)))"
        }
    }

    static func wrpFieldName(_ family: MCUFamily) -> String {
        family.optionBytes.first { if case .writeProtection = $0.meaning { true } else { false } }?.name ?? "WRP"
    }

    static func hex2(_ value: UInt8) -> String {
        let s = String(value, radix: 16, uppercase: true)
        return s.count < 2 ? "0" + s : s
    }
}
