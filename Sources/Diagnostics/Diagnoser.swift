import BoardTracking
import FlashEngine
import Timekeeping
import USBModel

/// Turns a failure plus host evidence into one diagnosis. The mapping, reason by reason (each
/// rule is a function below; docs/troubleshooting.md repeats it for users):
///
/// | `FlashFailure.Reason` | Extra evidence | Code |
/// |---|---|---|
/// | `noBoard` | — (in a VM/container: `vm-passthrough-lost` as alternative) | `no-board` |
/// | `severalBoards` | — | `several-boards` |
/// | `openFailed` / `transferFailed` | kind `.access` → `usb-permission`, `.busy` → `device-busy`, `.noDevice` → `disconnected` (or `power-supply` with kernel over-current) | |
/// | `openFailed` | string-descriptor operation or detail → `strings-unreadable`, else `transfer-error` | |
/// | `transferFailed` | `.timeout` → `transfer-timeout`; `.stall/.io/.other/.notFound` → `transfer-error`; either on a full-speed link → `full-speed-link`; at the ROM after the FSBL was sent → `fsbl-not-started` | |
/// | `boardReportedError(msg)` | `BoardMessages.classify`: `Layout…` → `layout-rejected`, `FIP Header check failed` → `fip-header-rejected`, `Wrong sequence number` → `wrong-sequence`, device/partition text → `device-init-failed`, OTP/PMIC → `otp-update-failed`, else `board-error` | |
/// | `reconnectTimeout` | DFU device added on another port → `other-port`; kernel -71/-110 → `enumeration-errors`; a console line explaining it → the stage's code; in a VM/WSL/container → `vm-passthrough-lost` first with the stage's code as alternative; else the stage's code: after ROM detach `fsbl-not-started`, after TF-A detach `uboot-no-usb`, after U-Boot detach `device-init-timeout` | |
/// | `unexpectedIdentity(.rom)` | after a ROM detach → `fsbl-not-started`; after TF-A/U-Boot → `rom-came-back` (`power-supply` when the kernel saw over-current) | |
/// | `unexpectedIdentity(other)` | — | `unexpected-stage` |
/// | `phaseRepeated(0x01)` at the ROM | — | `fsbl-not-started`; other phases `phase-repeated` |
/// | `fsblRejected` (the ROM's dfuERROR on phase 0x01) | the file's STM32 header, checksum, signature flag and chip | `fsbl-rejected` (FSBLRules) |
/// | `fsblWrongChip` (header vs `@Device ID`, before sending) | — | `fsbl-wrong-chip` |
/// | `phaseWithoutFile`, `missingAlternate`, `incomplete`, `protocolError`, `cancelled` | — | the code of the same name |
/// | `verifyMismatch`, `fileChanged`, `hostFile`, `otherSession` | — | `verify-mismatch`, `file-changed`, `host-file`, `other-session` |
/// | fast path: `scriptRejected`, `noFastboot`, `storageMismatch`, `serialChanged`, `fastbootFailed`, `fastbootPartitions`, `fastbootUnsuitable` | — | `script-rejected`, `no-fastboot`, `storage-mismatch`, `serial-changed`, `fastboot-failed`, `fastboot-partitions`, `fastboot-unsuitable` (FastbootRules) |
public enum Diagnoser {
    public static func diagnose(_ evidence: Evidence) -> Diagnosis {
        let context = Context(evidence)
        var diagnosis = rule(for: evidence.failure.reason, context)
        // Rules and the common part may cite the same line (a console message); say it once.
        var seen: Set<String> = []
        diagnosis.evidence = (context.commonEvidence(for: diagnosis.code) + diagnosis.evidence).filter {
            seen.insert($0).inserted
        }
        return diagnosis
    }

    static func rule(for reason: FlashFailure.Reason, _ context: Context) -> Diagnosis {
        switch reason {
        case .noBoard(let waited): return noBoard(waited: waited, context)
        case .unsupportedDevice(let identity, let kind, let reason):
            return PhaseRules.unsupportedDevice(identity, kind: kind, reason: reason, context)
        case .boardBusy(let port): return PhaseRules.boardBusy(port, context)
        case .severalBoards(let boards): return severalBoards(boards, context)
        case .openFailed(let error): return openFailed(error, context)
        case .transferFailed(let error): return transferFailed(error, context)
        case .boardReportedError(let message): return boardMessage(message, context)
        case .reconnectTimeout(let waited): return reconnectTimeout(waited: waited, context)
        case .unexpectedIdentity(let stage): return unexpectedIdentity(stage, context)
        case .phaseRepeated(let id): return phaseRepeated(id, context)
        case .phaseWithoutFile(let id): return PhaseRules.phaseWithoutFile(id, context)
        case .missingAlternate(let id): return PhaseRules.missingAlternate(id, context)
        case .incomplete(let ids): return PhaseRules.incomplete(ids, context)
        case .protocolError(let text): return PhaseRules.protocolError(text, context)
        case .cancelled: return PhaseRules.cancelled(context)
        case .verifyMismatch(let mismatch): return IntegrityRules.verifyMismatch(mismatch, context)
        case .fileChanged(let path, let detail): return IntegrityRules.fileChanged(path: path, detail: detail, context)
        case .hostFile(let path, let reason): return IntegrityRules.hostFile(path: path, reason: reason, context)
        case .otherSession(let detail): return IntegrityRules.otherSession(detail, context)
        case .scriptRejected(let message): return FastbootRules.scriptRejected(message, context)
        case .noFastboot(let waited): return FastbootRules.noFastboot(waited: waited, context)
        case .storageMismatch(let board, let layout): return FastbootRules.storageMismatch(board, layout, context)
        case .serialChanged(let expected, let found): return FastbootRules.serialChanged(expected, found, context)
        case .fastbootFailed(let command, let reason): return FastbootRules.failed(command, reason, context)
        case .fastbootPartitions(let text): return FastbootRules.partitions(text, context)
        case .fastbootUnsuitable(let text): return FastbootRules.unsuitable(text, context)
        case .badImage(let error): return PhaseRules.badImage(error, context)
        case .fsblRejected(let rejection): return FSBLRules.rejected(rejection, context)
        case .fsblWrongChip(let mismatch): return FSBLRules.wrongChip(mismatch, context)
        }
    }

    // MARK: Finding the board

    static func noBoard(waited: Duration, _ context: Context) -> Diagnosis {
        var evidence = ["waited \(roundedSeconds(waited)) s (--wait-timeout); no 0483:df11 device appeared"]
        var steps = [
            "Set the boot pins to USB (serial) boot and reset the board: on ST discovery kits both boot switches OFF; other boards: see their manual.",
            "Use a data cable on the board's USB OTG (device) connector, not the ST-LINK or power-only connector.",
            "Run `lsusb -d 0483:df11` (on the host if you use a VM): if nothing is listed, the board is not in USB boot mode or its USB is not powered (VDD3V3_USB / USB PHY supply on custom boards).",
        ]
        let dfu = context.environment.boards.filter { $0.productID == 0xDF11 }
        if !dfu.isEmpty {
            evidence.append("sysfs nevertheless lists " + dfu.map(\.summary).joined(separator: "; "))
            steps.insert(
                "The kernel sees a 0483:df11 device, so check the --port/--serial you passed and the node permissions (`stm32mp-flash doctor`).",
                at: 0)
        }
        var alternatives: [AlternativeCause] = []
        if context.environment.isPassthrough {
            alternatives.append(
                AlternativeCause(
                    code: .vmPassthroughLost,
                    cause:
                        "The board's ROM DFU device exists on the host but is not passed through to \(context.placeName).",
                    howToTell:
                        "list USB devices on the host (`lsusb -d 0483:df11`, `usbipd list`, `VBoxManage list usbhost`): if the host shows the board, the passthrough filter is missing."
                ))
        }
        return Diagnosis(
            code: .noBoard, cause: DiagnosisCode.noBoard.summary, evidence: evidence, nextSteps: steps,
            alternatives: alternatives)
    }

    static func severalBoards(_ boards: [USBDeviceIdentity], _ context: Context) -> Diagnosis {
        let listed = boards.map {
            "\($0.port) \($0.vendorProduct) serial \($0.serial ?? "none") \"\($0.product ?? "?")\""
        }
        return Diagnosis(
            code: .severalBoards, cause: DiagnosisCode.severalBoards.summary, evidence: listed,
            nextSteps: [
                "Choose one board by port with `--port \(boards.first?.port.description ?? "B-P.P")` (the port survives every re-enumeration).",
                "Or by serial with `--serial` when every stage reports the chip UID (some U-Boot environments change it).",
                "Unplug the boards you do not want to flash if neither is known.",
            ])
    }

    // MARK: USB errors

    static func openFailed(_ error: USBTransferError, _ context: Context) -> Diagnosis {
        if let shared = usbErrorRule(error, context) { return shared }
        // The operation names a string read (`libusb_get_string_descriptor`, `string descriptor 2`);
        // a missing functional descriptor is not one.
        if error.operation.lowercased().contains("string") {
            return Diagnosis(
                code: .stringsUnreadable, cause: DiagnosisCode.stringsUnreadable.summary, evidence: ["\(error)"],
                nextSteps: [
                    "Run again: right after enumeration the strings can be unreadable for a moment, and the tool retries.",
                    "If it persists, plug the board directly into a USB 2 port (no hub, no USB 3 extension) and try another cable.",
                ],
                alternatives: [context.linkAlternative].compactMap { $0 })
        }
        return transferError(error, context)
    }

    static func transferFailed(_ error: USBTransferError, _ context: Context) -> Diagnosis {
        let failure = context.failure
        if failure.stage == .rom, failure.phase == 0x01, context.facts.sentData(to: .rom), error.kind != .access {
            var diagnosis = fsblNotStarted(
                context, detail: "the ROM stopped answering after it received the FSBL: \(error)")
            diagnosis.alternatives.append(
                AlternativeCause(
                    code: error.kind == .noDevice ? .disconnected : .transferError,
                    cause: "The USB link dropped on its own while TF-A started.",
                    howToTell:
                        "on an MP15 TF-A keeps the ROM's USB session; if a retry also fails right after the FSBL, TF-A itself did not start."
                ))
            return diagnosis
        }
        if let shared = usbErrorRule(error, context) { return shared }
        if let fullSpeed = context.facts.fullSpeedEntry {
            return Diagnosis(
                code: .fullSpeedLink, cause: DiagnosisCode.fullSpeedLink.summary,
                evidence: ["\(error)", "full-speed link: " + fullSpeed.description],
                nextSteps: fullSpeedSteps,
                alternatives: [
                    AlternativeCause(
                        code: error.kind == .timeout ? .transferTimeout : .transferError,
                        cause: error.kind == .timeout
                            ? DiagnosisCode.transferTimeout.summary : DiagnosisCode.transferError.summary,
                        howToTell:
                            "if it also fails on a high-speed (480 Mbit/s) link, the link speed is not the cause.")
                ])
        }
        if error.kind == .timeout {
            return Diagnosis(
                code: .transferTimeout, cause: DiagnosisCode.transferTimeout.summary, evidence: ["\(error)"],
                nextSteps: [
                    "U-Boot writes its 8 MiB buffer to storage inside a control transfer; slow SD cards or NAND can take longer than the transfer timeout. Retry with a longer timeout or a faster card.",
                    "If the board's console shows a crash or reset, fix that first (attach a UART and retry).",
                    "Try a USB 2 port without hubs.",
                ],
                alternatives: [context.linkAlternative].compactMap { $0 })
        }
        return transferError(error, context)
    }

    /// The USB error kinds whose meaning does not depend on when they happened.
    static func usbErrorRule(_ error: USBTransferError, _ context: Context) -> Diagnosis? {
        switch error.kind {
        case .access: return HostRules.usbPermission(error, context)
        case .busy: return HostRules.deviceBusy(error, context)
        case .noDevice: return HostRules.disconnected(error, context)
        default: return nil
        }
    }

    static func transferError(_ error: USBTransferError, _ context: Context) -> Diagnosis {
        var evidence = ["\(error)"]
        let errors = KernelLog.enumerationErrors(in: context.kernelLog)
        evidence += errors.suffix(3).map { "kernel: " + $0 }
        return Diagnosis(
            code: .transferError, cause: DiagnosisCode.transferError.summary, evidence: evidence,
            nextSteps: [
                "Run again with the same layout: a STALL without a GetPhase message usually means the board refused a request in its current state; the timeline above shows which.",
                "Plug the board directly into a USB 2 port; avoid hubs, USB 3 extension cables and front-panel ports.",
                "If it repeats at the same point, report it with `--json` output (the timeline) attached.",
            ],
            alternatives: [context.linkAlternative].compactMap { $0 })
    }

    static let fullSpeedSteps = [
        "Plug the board into a USB 2.0 high-speed port directly (no full-speed hub, no KVM switch, no long passive extension).",
        "Check `cat /sys/bus/usb/devices/<port>/speed`: it should say 480.",
        "In a VM, attach the board to an EHCI or xHCI controller, not a USB 1.1 (OHCI/UHCI) one.",
    ]

    // MARK: Board messages

    static func boardMessage(_ message: String, _ context: Context) -> Diagnosis {
        let code = BoardMessages.classify(message)
        let seen = ["GetPhase answered FF with: \"\(message.trimmingCharacters)\""]
        switch code {
        case .layoutRejected:
            return Diagnosis(
                code: code, cause: "U-Boot rejected the FlashLayout: \(message.trimmingCharacters)", evidence: seen,
                nextSteps: [
                    "Run `stm32mp-flash check <layout.tsv>`: it applies U-Boot's rules and points at the line (U-Boot counts physical lines, comments and blank lines included).",
                    "U-Boot now leaves stm32prog without a reset: power-cycle or reset the board (boot pins still on USB) before the next try.",
                ])
        case .fipHeaderRejected:
            return Diagnosis(
                code: code, cause: DiagnosisCode.fipHeaderRejected.summary, evidence: seen,
                nextSteps: [
                    "Point the phase 0x03 line (Id `fip`, older layouts `ssbl`) at a FIP image (`fip-<board>-<config>.bin`), not at `u-boot.stm32` or `u-boot.bin`.",
                    "Only ST's old TF-A v2.4 fork takes `u-boot.stm32`; a current TF-A wants a FIP (header word 0xAA640001).",
                    "Check the file is complete: `stm32mp-flash check` validates the FIP header.",
                ])
        case .wrongSequence:
            return Diagnosis(
                code: code, cause: DiagnosisCode.wrongSequence.summary, evidence: seen,
                nextSteps: [
                    "Retry on a direct USB 2 port: a lost or repeated transfer (hub, passthrough) breaks the numbering.",
                    "If it repeats, it is a bug in the host's block numbering: report it with the `--json` timeline.",
                ],
                alternatives: context.environment.isPassthrough
                    ? [
                        AlternativeCause(
                            code: .vmPassthroughLost, cause: "A passthrough layer replayed or dropped a USB request.",
                            howToTell:
                                "run the same flash on the host: if it passes there, the passthrough layer is at fault."
                        )
                    ]
                    : [])
        case .deviceInitFailed:
            return Diagnosis(
                code: code, cause: "U-Boot could not prepare the target storage: \(message.trimmingCharacters)",
                evidence: seen,
                nextSteps: BoardMessages.deviceAdvice(message) + [
                    context.facts.detachedAfterError
                        ? "The tool sent the DETACH after reading this error, so U-Boot resets the board and the ROM DFU device appears again (boot pins still on USB); fix the layout or board and run again."
                        : "The DETACH after this error could not be sent, so the board stays in U-Boot: reset it (reset button or power cycle, boot pins still on USB) before the next run."
                ])
        case .otpUpdateFailed:
            return Diagnosis(
                code: code, cause: "U-Boot refused the OTP/PMIC update: \(message.trimmingCharacters)", evidence: seen,
                nextSteps: [
                    "Leave the OTP (0xF2) and PMIC (0xF4) lines out of the layout unless you mean to program them.",
                    "OTP programming needs U-Boot with OTP support (and OP-TEE's nvmem service on secure builds); a locked or closed chip refuses writes for good.",
                ])
        default:
            return Diagnosis(
                code: .boardError, cause: "The board reported: \(message.trimmingCharacters)", evidence: seen,
                nextSteps: [
                    "Read the message: it comes from the firmware on the board (TF-A or U-Boot stm32prog), verbatim.",
                    "Attach a UART console: the board logs `Error: …` with more context.",
                ])
        }
    }

    // MARK: Re-enumeration

    static func reconnectTimeout(waited: Duration, _ context: Context) -> Diagnosis {
        var diagnosis = reconnectTimeoutRanked(waited: waited, context)
        // Item: every "did not come back within N s" names the option that sets N and says what
        // the grace listening after the timeout saw.
        let facts = context.facts
        if let late = facts.lateArrival {
            let option = facts.lastWait?.option ?? "the reconnect timeout"
            let seconds = Int(late.afterDetach.inSeconds.rounded(.up))
            diagnosis.evidence.append(
                "the board did enumerate \(roundedSeconds(late.afterDetach)) s after the DETACH, after the wait had ended: "
                    + "\(late.identity.port) \(late.identity.vendorProduct) \"\(late.identity.product ?? "?")\"")
            diagnosis.nextSteps.insert(
                "The board came back late: run again with `\(option) \(seconds + 10)` (or more); nothing else may be wrong.",
                at: 0)
        } else if let listened = facts.listenedAfterTimeout {
            diagnosis.evidence.append(
                "nothing enumerated in the \(roundedSeconds(listened)) s listened after the wait ended either")
        }
        return diagnosis
    }

    static func reconnectTimeoutRanked(waited: Duration, _ context: Context) -> Diagnosis {
        let facts = context.facts
        let option = facts.lastWait.map { " (\($0.option))" } ?? ""
        var evidence = [
            "nothing came back within \(roundedSeconds(waited)) s\(option) after the DETACH"
                + (facts.detachedStage.map { " sent to " + $0.displayName } ?? "")
        ]
        if facts.addedAfterDetach.isEmpty { evidence.append("no USB add event at all after the DETACH") }
        let expected = expectedSilenceCode(facts.detachedStage)

        if let other = facts.otherPortAfterDetach.last {
            return Diagnosis(
                code: .otherPort, cause: DiagnosisCode.otherPort.summary,
                evidence: evidence + ["after the DETACH: " + other.description],
                nextSteps: [
                    "If that is this board (another connector, a hub that re-numbers), plug it where it stays on one port, or pass that port with `--port \(other.event.device?.port.description ?? "B-P.P")`.",
                    "If it is another board, unplug it or pass `--port \(facts.boardPort?.description ?? "B-P.P")` so the tool ignores it.",
                ],
                alternatives: [
                    expectedAlternative(
                        expected,
                        howToTell:
                            "if the other device's serial differs from the board's, this board really stayed silent.")
                ])
        }
        let enumeration = KernelLog.enumerationErrors(in: context.kernelLog)
        if !enumeration.isEmpty {
            return Diagnosis(
                code: .enumerationErrors, cause: DiagnosisCode.enumerationErrors.summary,
                evidence: evidence + enumeration.suffix(5).map { "kernel: " + $0 },
                nextSteps: [
                    "Plug the board into a USB 2 port or through a USB 2 hub; some xHCI controllers and USB 3 hubs fail the STM32MP gadget's enumeration.",
                    "Try a short, good data cable; on a custom board check the USB D+/D- routing, the 24 MHz/HSE clock and the USB PHY supplies.",
                    "If the ROM enumerates but U-Boot does not, compare U-Boot's USB PHY settings (usbphyc tuning in the device tree) with ST's board files.",
                ],
                alternatives: [context.fullSpeedAlternative].compactMap { $0 })
        }
        let console = ConsoleFinding.scan(context.consoleLog)
        if !console.isEmpty {
            return silence(
                expected, context, evidence: evidence + console.map { "console: \($0.line) — \($0.meaning)" })
        }
        // A board that already re-enumerated in this run showed that new identities do reach this
        // system: passthrough is then the less likely cause.
        if context.environment.isPassthrough, let earlier = facts.reenumeratedBefore {
            var diagnosis = silence(
                expected, context,
                evidence: evidence + [
                    "the board already re-enumerated in this run and was opened: " + earlier.description
                ])
            diagnosis.alternatives.append(
                AlternativeCause(
                    code: .vmPassthroughLost,
                    cause: "The passthrough layer lost the board at this re-enumeration only.",
                    howToTell:
                        "look at the host's own device list after the DETACH (`lsusb -d 0483:df11` on a Linux host, `usbipd list`, `VBoxManage list usbhost`): if the host shows the board and this system does not, passthrough lost it."
                ))
            return diagnosis
        }
        if context.environment.isPassthrough {
            var diagnosis = HostRules.passthroughLost(context, evidence: evidence)
            diagnosis.alternatives.append(
                expectedAlternative(
                    expected,
                    howToTell:
                        "look at the host's own device list (`lsusb -d 0483:df11` on a Linux host, `usbipd list` on Windows, `VBoxManage list usbhost`): if the host shows the board as `USB download gadget@…` after the DETACH, passthrough lost it; if the host shows nothing, the board never enumerated (attach a UART)."
                ))
            return diagnosis
        }
        var diagnosis = silence(expected, context, evidence: evidence)
        if !context.environment.kernelLogReadable || context.kernelLog.isEmpty {
            diagnosis.alternatives.append(
                AlternativeCause(
                    code: .enumerationErrors,
                    cause:
                        "The board may have tried to enumerate and failed; the kernel log was not available to check.",
                    howToTell:
                        "run `dmesg | grep -i usb` (as root if needed) right after the failure: `error -71`/`-110` or `device not accepting address` lines mean it tried."
                ))
        }
        if let fullSpeed = context.fullSpeedAlternative { diagnosis.alternatives.append(fullSpeed) }
        return diagnosis
    }

    /// The code that explains silence after a DETACH from `stage`.
    static func expectedSilenceCode(_ stage: BoardStage?) -> DiagnosisCode {
        switch stage {
        case .rom: .fsblNotStarted
        case .uboot: .deviceInitTimeout
        default: .ubootNoUSB
        }
    }

    static func expectedAlternative(_ code: DiagnosisCode, howToTell: String) -> AlternativeCause {
        AlternativeCause(code: code, cause: code.summary, howToTell: howToTell)
    }

    static func silence(_ code: DiagnosisCode, _ context: Context, evidence: [String]) -> Diagnosis {
        switch code {
        case .fsblNotStarted: return fsblNotStarted(context, detail: nil, evidence: evidence)
        case .deviceInitTimeout:
            return Diagnosis(
                code: .deviceInitTimeout, cause: DiagnosisCode.deviceInitTimeout.summary, evidence: evidence,
                nextSteps: [
                    "Between the FlashLayout and the partitions U-Boot erases devices and writes the GPT; on large eMMC/NAND this can take longer than the wait. Retry with a longer reconnect timeout.",
                    "Attach a UART: U-Boot prints `Error: …` there if device init failed, or crashes visibly.",
                ])
        default: return UBootRules.ubootNoUSB(context, evidence: evidence)
        }
    }

    static func fsblNotStarted(_ context: Context, detail: String?, evidence: [String] = []) -> Diagnosis {
        let console = ConsoleFinding.scan(context.consoleLog)
        var cause = DiagnosisCode.fsblNotStarted.summary
        if console.contains(where: { $0.kind == .tfaNotUSBBuild }) {
            cause =
                "The FSBL sent is a TF-A built for storage boot, not a USB programmer build: it panics with `Boot interface 6 not supported`."
        } else if console.contains(where: { $0.kind == .authentication }) {
            cause = "TF-A failed an authentication check and stopped."
        }
        return Diagnosis(
            code: .fsblNotStarted, cause: cause, evidence: evidence + [detail].compactMap { $0 },
            nextSteps: [
                "Send the USB programmer build of TF-A: the FlashLayout's phase 0x01 line (Id `fsbl-boot`) must point at `tf-a-<board>-usb.stm32` (built with STM32MP_USB_PROGRAMMER=1), not `…-sdcard.stm32` or `…-emmc.stm32`.",
                "Check the file: `stm32mp-flash check` verifies the STM32 header, its checksum and the chip family.",
                "Attach a UART: `Boot interface 6 not supported`, a DDR init error or `Failed to load image` tell which.",
                "On a closed (secure-boot) chip the ROM rejects an FSBL with a wrong signature.",
            ])
    }

    static func unexpectedIdentity(_ stage: BoardStage, _ context: Context) -> Diagnosis {
        let facts = context.facts
        let evidence = [
            "came back as \(stage.displayName)"
                + (facts.detachedStage.map { " after the DETACH sent to \($0.displayName)" } ?? "")
        ]
        guard stage == .rom else { return UBootRules.unexpectedStage(stage, context, evidence: evidence) }
        if facts.detachedStage == .rom {
            return fsblNotStarted(
                context, detail: nil, evidence: evidence + ["the ROM restarted instead of running the FSBL"])
        }
        return HostRules.romCameBack(context, evidence: evidence)
    }

    static func phaseRepeated(_ id: UInt8, _ context: Context) -> Diagnosis {
        if id == 0x01 && (context.failure.stage == .rom || context.failure.stage == nil) {
            return fsblNotStarted(
                context, detail: "the ROM asked for the FSBL (phase 0x01) again: it did not accept the file")
        }
        return Diagnosis(
            code: .phaseRepeated, cause: DiagnosisCode.phaseRepeated.summary,
            evidence: ["the board asked for phase \(phaseHex(id)) again right after receiving it"],
            nextSteps: [
                "Check the file of phase \(phaseHex(id)): it may be for another board or SoC, or truncated (`stm32mp-flash check`).",
                "Attach a UART: the firmware usually says why it dropped the image.",
            ])
    }
}

/// Whole seconds of a wait, rounded, for messages.
func roundedSeconds(_ duration: Duration) -> Int {
    let parts = duration.components
    return Int(parts.seconds) + (parts.attoseconds >= 500_000_000_000_000_000 ? 1 : 0)
}
