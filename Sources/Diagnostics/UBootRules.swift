import BoardTracking
import FlashEngine

/// Diagnoses about the firmware after TF-A: U-Boot's USB gadget and the identity it comes back as.
enum UBootRules {
    /// §E row 4: every cause looks the same on USB; the console is the only separator.
    static func ubootNoUSB(_ context: Diagnoser.Context, evidence: [String]) -> Diagnosis {
        let console = ConsoleFinding.scan(context.consoleLog)
        let kinds = Set(console.map(\.kind))
        var cause = DiagnosisCode.ubootNoUSB.summary
        if kinds.contains(.authentication) {
            cause = "TF-A failed to authenticate an image of the FIP (-80) and stopped before U-Boot."
        } else if kinds.contains(.ubootNoGadget) {
            cause = "U-Boot has no USB peripheral: the usbotg_hs node is disabled or not in peripheral/otg mode."
        } else if kinds.contains(.missingRegulator) {
            cause = "U-Boot's USB PHY cannot start: a supply is missing from its device tree."
        } else if kinds.contains(.crash) {
            cause = "The firmware crashed after TF-A handed over."
        } else if kinds.contains(.ubootPrompt) {
            cause = "U-Boot stopped at its prompt: its bootcmd did not run stm32prog."
        }
        var steps = [String]()
        if console.isEmpty {
            steps.append(
                "Attach a UART console (115200 8N1) and run again: the lines below tell the causes apart, nothing on USB does."
            )
        }
        steps += [
            "Device tree: in `<board>-u-boot.dtsi` set `&usbotg_hs { dr_mode = \"peripheral\"; u-boot,force-b-session-valid; };` when OTG_VBUS/OTG_ID are not wired to the SoC (ST's DK boards do this; without it U-Boot waits for a VBUS session that never comes).",
            "USB PHY supplies: the usbphyc node needs `vdda1v1-supply` and `vdda1v8-supply`, and each PHY port its `phy-supply`; console lines `Can't get vdda1v1-supply regulator` (or vdda1v8/phy-supply) or `can't get voltage level detector supply` (usbotg_hs `usb33d-supply`) say which.",
            "Console `No USB device found` or `udc_device_get_by_index failed`: the USB OTG node is disabled or in host mode in U-Boot's device tree.",
            "Console `Failed to load image id … (-80)`: TF-A's authentication (TRUSTED_BOARD_BOOT) rejected an image of the FIP; sign it with the right key.",
            "Console `Boot interface 6 not supported`: the FSBL is a storage build of TF-A, not the USB programmer build.",
            "U-Boot environment: the boot must reach `stm32prog usb 0` (ST's default bootcmd does when booted from USB); a custom bootcmd, a stopped autoboot or CONFIG_CMD_STM32PROG=n never starts it.",
        ]
        let seen = evidence + console.map { "console: \($0.line) — \($0.meaning)" }
        return Diagnosis(code: .ubootNoUSB, cause: cause, evidence: seen, nextSteps: steps)
    }

    static func unexpectedStage(_ stage: BoardStage, _ context: Diagnoser.Context, evidence: [String]) -> Diagnosis {
        let advice: String
        switch stage {
        case .ubootPlainDFU:
            advice =
                "U-Boot started a plain DFU gadget (`dfu 0 …` or SPL DFU) instead of `stm32prog`: use a U-Boot with CONFIG_CMD_STM32PROG and let its USB boot path run `stm32prog usb 0`."
        case .fastboot:
            advice =
                "U-Boot started fastboot (0483:0afb) instead of stm32prog: its bootcmd or boot button selects fastboot; use stm32prog, or flash with a fastboot tool."
        case .tfa:
            advice =
                "TF-A answered where U-Boot was expected: the board restarted into TF-A (a watchdog or a reset in BL2); attach a UART."
        case .uboot:
            advice =
                "U-Boot stm32prog answered where another stage was expected: the board may still be in U-Boot from a previous run; reset it and start again."
        default:
            advice =
                "Another firmware answered on the board's port; reset the board with the boot pins on USB and start again."
        }
        return Diagnosis(
            code: .unexpectedStage,
            cause: "The board came back as \(stage.displayName), which does not belong at this point.",
            evidence: evidence, nextSteps: [advice])
    }
}
