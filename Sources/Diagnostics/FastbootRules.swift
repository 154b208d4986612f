import FlashEngine

/// Diagnoses of the fast path (`flash --transport fastboot|auto`): the script hand-off at
/// U-Boot's first enumeration and the fastboot session after it (fastboot reference §1–§3).
enum FastbootRules {
    static let useDFU =
        "Flash over DFU instead: run again with `--transport dfu` (the default), which needs nothing from U-Boot beyond stm32prog."

    static func scriptRejected(_ message: String, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .scriptRejected, cause: DiagnosisCode.scriptRejected.summary,
            evidence: [
                "U-Boot answered the hand-off script with GetPhase FF: \(message)",
                "U-Boot runs a script received on the FlashLayout alternate only since v2022.07, and only when built with CONFIG_LEGACY_IMAGE_FORMAT",
            ],
            nextSteps: [
                "Reset the board (reset button or power) with the boot pins still on USB: U-Boot now idles at its prompt and does not come back by itself.",
                useDFU,
                "Or rebuild U-Boot with CONFIG_LEGACY_IMAGE_FORMAT=y (ST's defconfigs have it) and run the fast path again.",
            ])
    }

    static func noFastboot(waited: Duration, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .noFastboot, cause: DiagnosisCode.noFastboot.summary,
            evidence: [
                "waited \(roundedSeconds(waited)) s after the DETACH that followed \"U-Boot script received\"; no 0483:0afb and no 0483:df11 device appeared"
            ] + context.consoleLog.suffix(3).map { "console: \($0)" },
            nextSteps: [
                "On a serial console U-Boot shows what the script did: `Unknown command 'fastboot'`, `USB cable not detected`, or a `gpt write` error.",
                "Check that a udev rule lets you open 0483:0afb (`stm32mp-flash udev-rules`), and in a VM that the passthrough filter includes 0483:0afb (`stm32mp-flash vm-filter`).",
                "Reset the board and " + useDFU.prefix(1).lowercased() + useDFU.dropFirst(),
            ],
            alternatives: context.environment.isPassthrough
                ? [
                    AlternativeCause(
                        code: .vmPassthroughLost,
                        cause: "U-Boot's fastboot device (0483:0afb) appeared on the host but was not passed through.",
                        howToTell: "run `lsusb -d 0483:0afb` on the host while the board waits.")
                ] : [])
    }

    static func storageMismatch(_ board: String, _ layout: String, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .storageMismatch, cause: DiagnosisCode.storageMismatch.summary,
            evidence: [
                "getvar:mmcdev: U-Boot's fastboot writes \(board) (CONFIG_FASTBOOT_FLASH_MMC_DEV)",
                "the FlashLayout programs \(layout); nothing was written",
            ],
            nextSteps: [
                "A U-Boot binary flashes one MMC device over fastboot: ST's MP15 and MP25 FIPs write the eMMC (mmc1), MP13's the SD card (mmc0).",
                useDFU,
                "Or build a FIP with CONFIG_FASTBOOT_FLASH_MMC_DEV set to the layout's device.",
            ])
    }

    static func serialChanged(_ expected: String, _ found: String, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .serialChanged, cause: DiagnosisCode.serialChanged.summary,
            evidence: ["the previous stage announced serial \(expected); the board now says \(found)"],
            nextSteps: [
                "If another board was plugged in meanwhile, unplug it and run again with `--port`.",
                "U-Boot's fastboot reports env `serial#`: a U-Boot environment that sets another serial# causes this; reset the environment or flash over DFU (`--transport dfu`).",
            ])
    }

    static func failed(_ command: String, _ reason: String, _ context: Diagnoser.Context) -> Diagnosis {
        var steps = ["The text after FAIL is U-Boot's own message; a serial console shows more."]
        switch reason {
        case let text where text.contains("exceed partition size") || text.contains("too large"):
            steps.insert("The file does not fit the partition U-Boot has: check `stm32mp-flash plan` sizes.", at: 0)
        case let text where text.contains("no such partition") || text.contains("cannot find partition"):
            steps.insert(
                "U-Boot does not see that partition: the GPT was not written (see getvar gptstat in the timeline) or the board's fastboot flashes another device.",
                at: 0)
        case let text where text.contains("Unsupported") || text.contains("unrecognized"):
            steps.insert("This U-Boot's fastboot lacks the command (a Kconfig option); flash over DFU.", at: 0)
        default:
            break
        }
        steps.append(useDFU)
        return Diagnosis(
            code: .fastbootFailed, cause: DiagnosisCode.fastbootFailed.summary,
            evidence: ["fastboot \(command) → FAIL\(reason)"], nextSteps: steps)
    }

    static func partitions(_ text: String, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .fastbootPartitions, cause: DiagnosisCode.fastbootPartitions.summary,
            evidence: [text],
            nextSteps: [
                "The hand-off script writes the layout's GPT with `gpt write`; a console shows whether it failed.",
                "For a partial update (a line not `P`) the GPT on the board must already match the layout.",
                useDFU,
            ])
    }

    static func unsuitable(_ text: String, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .fastbootUnsuitable, cause: DiagnosisCode.fastbootUnsuitable.summary,
            evidence: [text, "nothing was sent to the board"],
            nextSteps: [
                useDFU, "`--transport auto` takes the fast path only for layouts that fit it and uses DFU otherwise.",
            ])
    }
}
