import BoardTracking
import FlashEngine
import ImageSources
import USBModel

/// Diagnoses about the phases the board asks for and the session's end.
enum PhaseRules {
    static func phaseWithoutFile(_ id: UInt8, _ context: Diagnoser.Context) -> Diagnosis {
        var steps = [
            "Add a FlashLayout line with phase Id \(phaseHex(id)) and a Binary file, or select it (an Opt of `-` skips it)."
        ]
        switch id {
        case 0x00:
            steps.insert(
                "TF-A from ST's v2.4 fork (MP15) asks for the FlashLayout (phase 0x00) before the FIP; the tool sends the layout itself, so this means it had no layout to send.",
                at: 0)
        case 0x02:
            steps.insert(
                "MP2 TF-A asks for the DDR firmware FIP (phase 0x02) when built with STM32MP_DDR_FIP_IO_STORAGE: add the `fip-ddr` line of ST's MP2 layouts.",
                at: 0)
        case 0x03:
            steps.insert("TF-A asks for the FIP with U-Boot (phase 0x03): add the `fip` (or older `ssbl`) line.", at: 0)
        default: break
        }
        return Diagnosis(
            code: .phaseWithoutFile,
            cause: "The board asks for phase \(phaseHex(id)), which the FlashLayout has no file for.",
            evidence: [
                "the board asked for phase \(phaseHex(id)) at \(context.failure.stage?.displayName ?? "an unknown stage")"
            ], nextSteps: steps)
    }

    static func missingAlternate(_ id: UInt8, _ context: Diagnoser.Context) -> Diagnosis {
        var steps = [
            "The board's DFU alternates and the FlashLayout disagree: the layout U-Boot parsed is not the one you meant, or its firmware differs."
        ]
        if id == 0xF2 || id == 0xF4 {
            steps.insert(
                "Phase \(phaseHex(id)) is \(id == 0xF2 ? "OTP" : "PMIC NVM"): this U-Boot was built without that support; remove the line or use ST's U-Boot.",
                at: 0)
        }
        let alternates = context.facts.lastAlternates?.joined(separator: " ")
        return Diagnosis(
            code: .missingAlternate,
            cause: "The board asks for phase \(phaseHex(id)) but offers no DFU alternate setting for it.",
            evidence: ["alternates at the last open: " + (alternates ?? "not recorded")], nextSteps: steps)
    }

    static func incomplete(_ ids: [UInt8], _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .incomplete, cause: DiagnosisCode.incomplete.summary,
            evidence: ["never requested: " + ids.map(phaseHex).joined(separator: ", ")],
            nextSteps: [
                "U-Boot does not ask for lines it treats as not selected (`-`) or empty (`E`: created but not programmed); compare the Opt column of those lines with `stm32mp-flash plan`.",
                "An older stm32prog may not support a partition type of those lines; check the U-Boot version.",
            ])
    }

    static func protocolError(_ text: String, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .protocolError, cause: "The board broke the protocol: \(text)", evidence: [text],
            nextSteps: [
                "Reset the board (boot pins on USB) and run again.",
                "If it repeats, report it with the `--json` timeline and the firmware versions: the firmware may speak a variant this tool does not know.",
            ])
    }

    /// What to do next depends on where the board was left and what the cleanup did, read off
    /// the typed timeline (`leftUsable`, `recovered`, `resumed`).
    static func cancelled(_ context: Diagnoser.Context) -> Diagnosis {
        let failure = context.failure
        var evidence = [failure.phase.map { "cancelled during phase \(phaseHex($0))" } ?? "cancelled"]
        var abortedInTFA: UInt8?
        for entry in failure.timeline {
            switch entry.event {
            case .recovered, .resumed: evidence.append("timeline: " + entry.description)
            case .leftUsable(let phase, let stage, let cleanup, _):
                evidence.append("timeline: " + entry.description)
                if stage == .tfa, cleanup == .aborted { abortedInTFA = phase }
            default: break
            }
        }
        let step: String
        if let phase = abortedInTFA {
            step =
                "Run the same command again, with the same files: TF-A keeps the part of phase \(phaseHex(phase)) it received (its write address only moves forward), and the run continues that file from the byte TF-A is at. If that file changed since, reset the board with the boot pins on USB first."
        } else if failure.stage == .uboot {
            step =
                "Run the same command again: the board is still in U-Boot stm32prog; the run puts it in order and continues where its content stops matching the Binaries (--no-resume starts from the first partition)."
        } else {
            step =
                "Run the same command again; the board goes on from the phase it asks for. If it does not answer as expected, reset it with the boot pins on USB."
        }
        return Diagnosis(
            code: .cancelled, cause: DiagnosisCode.cancelled.summary, evidence: evidence, nextSteps: [step])
    }

    /// The image itself is at fault (host side): the board only saw whole, correct ranges.
    static func badImage(_ error: ImageSourceError, _ context: Diagnoser.Context) -> Diagnosis {
        let code: DiagnosisCode =
            switch error.code {
            case .bmapChecksum: .bmapChecksum
            case .badCompressedImage: .badCompressedImage
            case .badBlockMap: .badBlockMap
            case .unreadable: .imageUnreadable
            }
        let steps: [String] =
            switch error.code {
            case .bmapChecksum:
                [
                    "Use the map made for this image (bmaptool create writes it next to the image), or flash with --bmap none.",
                    "Check the image: `bmaptool copy --bmap \(error.path).bmap \(error.path) /dev/null` verifies every range too.",
                ]
            case .badCompressedImage:
                [
                    "Test the file with its own tool (`gzip -t`, `xz -t`, `zstd -t`) and download or build it again.",
                    "The partition was left unfinished; run again with a good file.",
                ]
            case .badBlockMap:
                ["Make the map again with `bmaptool create -o \(error.path) IMAGE`, or flash with --bmap none."]
            case .unreadable:
                ["Check that the file exists and this user may read it."]
            }
        return Diagnosis(
            code: code, cause: code.summary, evidence: [error.description], nextSteps: steps)
    }

    static func unsupportedDevice(
        _ identity: USBDeviceIdentity, kind: String, reason: String, _ context: Diagnoser.Context
    ) -> Diagnosis {
        var evidence = [
            "\(identity.port) \(identity.vendorProduct) \"\(identity.product ?? "?")\" is an \(kind)"
        ]
        if let alternates = context.facts.lastAlternates, !alternates.isEmpty {
            evidence.append("alternates: " + alternates.joined(separator: " "))
        }
        return Diagnosis(
            code: .unsupportedDevice, cause: "The DFU device is an \(kind): \(reason).", evidence: evidence,
            nextSteps: [
                "If you meant to flash an STM32MP board, put it in USB boot mode and pass its port with `--port` (`stm32mp-flash list` shows what each DFU device is).",
                "STM32 microcontrollers are programmed with their own tools (dfu-util with DfuSe addresses, STM32CubeProgrammer).",
            ])
    }

    static func boardBusy(_ port: PortPath, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .boardBusy, cause: DiagnosisCode.boardBusy.summary,
            evidence: ["port \(port) is leased by another job of this process"],
            nextSteps: [
                "Wait for the other job on \(port) to finish, or choose another port.",
                "Each port takes one job at a time: the tool never opens a board another job holds.",
            ])
    }
}
