import BoardTracking
import FlashEngine
import USBModel

/// Diagnoses whose fix is on the host: permissions, other programs, passthrough, power, resets.
enum HostRules {
    static func usbPermission(_ error: USBTransferError, _ context: Diagnoser.Context) -> Diagnosis {
        let environment = context.environment
        var evidence = ["\(error)"]
        evidence += environment.boards.filter { !$0.userCanOpen }.map {
            "not openable by uid \(environment.user.uid): " + $0.summary
        }
        evidence += environment.udevRules.map { "installed rule \($0.file):\($0.line): \($0.text)" }
        if environment.udevRules.isEmpty {
            evidence.append("no udev rule for 0483:df11 in " + EnvironmentProbe.udevRuleFolders.joined(separator: ", "))
        }
        if !environment.udevRunning { evidence.append("udevd is not running (/run/udev/control is missing)") }
        var steps = [
            "Install the udev rule: `sudo stm32mp-flash udev-rules --install` (writes /etc/udev/rules.d/60-stm32mp-flash.rules with `TAG+=\"uaccess\"`, MODE=\"0660\"; add `--group plugdev` for SSH/CI users, then add yourself to that group).",
            "Unplug and re-plug the board (or reset it) so the rule applies to a fresh device node.",
        ]
        if !environment.udevRunning {
            steps.append(
                environment.wsl != nil
                    ? "Start udev inside WSL: enable systemd (`[boot] systemd=true` in /etc/wsl.conf, then `wsl --shutdown`) or run `sudo service udev restart` after each attach."
                    : "Start udevd (`sudo systemctl start systemd-udevd`), otherwise no rule applies.")
        }
        if environment.container != nil {
            steps.append("In a container the rule must be installed on the host, which owns the device nodes.")
        }
        if environment.udevRules.contains(where: \.uaccessTooLate) {
            steps.append(
                "A rule with only `TAG+=\"uaccess\"` sits in a file numbered 73 or higher: systemd applies uaccess in 73-seat-late.rules, so rename it below 73."
            )
        }
        return Diagnosis(
            code: .usbPermission, cause: DiagnosisCode.usbPermission.summary, evidence: evidence, nextSteps: steps)
    }

    static func deviceBusy(_ error: USBTransferError, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .deviceBusy, cause: DiagnosisCode.deviceBusy.summary, evidence: ["\(error)"],
            nextSteps: [
                "Close other flashing tools (STM32CubeProgrammer, dfu-util, another stm32mp-flash).",
                "Check that no running virtual machine captures the board (VirtualBox/VMware filters, QEMU usb-host rules on the same host): such a VM grabs it again at every stage.",
                "Find the holder: `sudo lsof /dev/bus/usb/*/*` or `fuser -v /dev/bus/usb/*/*`.",
            ])
    }

    static func disconnected(_ error: USBTransferError, _ context: Diagnoser.Context) -> Diagnosis {
        let overCurrent = KernelLog.overCurrent(in: context.kernelLog)
        let phase = context.failure.phase.map { " during phase " + phaseHex($0) } ?? ""
        if !overCurrent.isEmpty {
            return powerSupply(context, evidence: ["\(error)\(phase)"])
        }
        var alternatives = [powerAlternative]
        if context.environment.isPassthrough {
            alternatives.insert(
                AlternativeCause(
                    code: .vmPassthroughLost, cause: "The hypervisor or usbipd dropped the device.",
                    howToTell: "if the host still lists the board after the failure, the passthrough layer dropped it."),
                at: 0)
        }
        return Diagnosis(
            code: .disconnected, cause: DiagnosisCode.disconnected.summary, evidence: ["\(error)\(phase)"],
            nextSteps: [
                "Check the cable and connector; use a short data cable and a port on the computer itself.",
                "Power the board from its own supply (ST recommends 5 V/3 A USB-C on MP2 DKs) rather than from the USB data port alone.",
                "Attach a UART to see whether the board reset or crashed.",
            ],
            alternatives: alternatives)
    }

    static let powerAlternative = AlternativeCause(
        code: .powerSupply, cause: "The board browned out and reset.",
        howToTell:
            "a board that resets shows the ROM's DFU device again shortly after; a UART shows the boot banner again.")

    static func powerSupply(_ context: Diagnoser.Context, evidence: [String]) -> Diagnosis {
        Diagnosis(
            code: .powerSupply, cause: DiagnosisCode.powerSupply.summary, evidence: evidence,
            nextSteps: [
                "Power the board from a proper supply (MP2 DKs: 5 V/3 A USB-C) instead of a PC port or bus-powered hub.",
                "If the kernel reported over-current, unplug, check for shorts on VBUS, and use another port.",
            ])
    }

    static func romCameBack(_ context: Diagnoser.Context, evidence: [String]) -> Diagnosis {
        let facts = context.facts
        var seen = evidence
        let resets = context.kernelLog.filter { $0.contains("reset high-speed") || $0.contains("reset full-speed") }
        seen += resets.suffix(2).map { "kernel: " + $0 }
        if !KernelLog.overCurrent(in: context.kernelLog).isEmpty {
            return powerSupply(context, evidence: seen)
        }
        var cause = DiagnosisCode.romCameBack.summary
        if let error = facts.errorPhaseBeforeDetach {
            seen.append("GetPhase reported an error before the DETACH: " + error.description)
            cause = "U-Boot reset the board after reporting an error, so the ROM came back."
        }
        var alternatives: [AlternativeCause] = [powerAlternative]
        if context.environment.isPassthrough {
            alternatives.insert(
                AlternativeCause(
                    code: .vmPassthroughLost,
                    cause:
                        "The hypervisor reset the USB port when it re-attached the device; U-Boot's DWC2 gadget resets the board on a bus reset.",
                    howToTell:
                        "a reset from the host shows as `reset high-speed USB device` in the host's kernel log right after the DETACH; no GetPhase FF came before it."
                ),
                at: 0)
        }
        return Diagnosis(
            code: .romCameBack, cause: cause, evidence: seen,
            nextSteps: [
                facts.errorPhaseBeforeDetach != nil
                    ? "Fix the error the board reported (shown above) and run again."
                    : "Something reset the board after the DETACH: a USB port reset from the host or VM (U-Boot resets on bus reset), or a brown-out.",
                "Avoid tools that reset USB devices while flashing (a running VM with a filter for the board, usb_modeswitch, TLP/autosuspend).",
                "Power the board from its own supply.",
            ],
            alternatives: alternatives)
    }

    static func passthroughLost(_ context: Diagnoser.Context, evidence: [String]) -> Diagnosis {
        let environment = context.environment
        var steps: [String] = []
        for target in environment.passthroughTargets {
            steps.append(
                "Run `stm32mp-flash vm-filter --for \(target.rawValue)` for the full recipe; the key step: \(PassthroughAdvisor.keyStep(for: target))"
            )
        }
        if steps.isEmpty {
            steps.append(
                "Make the hypervisor pass through every device with VID 0483 (PIDs df11 and 0afb), or the physical port, never the product string or serial: they change at every stage."
            )
        }
        steps.append("Or run stm32mp-flash on the host itself, where no passthrough is needed.")
        return Diagnosis(
            code: .vmPassthroughLost,
            cause: "The board re-enumerated on the host but was not passed through to \(context.placeName) again.",
            evidence: evidence, nextSteps: steps)
    }
}
