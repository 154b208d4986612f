import BoardTracking
import Diagnostics
import FlashEngine
import Testing
import USBModel
import VirtualBoard

/// Identities and host environments around the recorded runs (RecordedRuns.swift).
enum Scenario {
    static let port = PortPath(bus: 1, ports: [2])

    static func device(
        _ product: String, port: PortPath = Scenario.port, address: Int = 5,
        serial: String? = "0038002A3338510A32383733", speed: USBSpeed = .high
    ) -> USBDeviceIdentity {
        USBDeviceIdentity(
            port: port, busNumber: port.bus, deviceAddress: address, vendorID: 0x0483, productID: 0xDF11,
            bcdDevice: 0x0200,
            manufacturer: "STMicroelectronics", product: product, serial: serial, speed: speed)
    }

    static let rom = device("DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000")
    static let tfa = device("DFU @Device ID /0x500, @Revision ID /0x2000, @Name /STM32MP157CAA Rev.B,", address: 6)
    static let uboot = device(
        "USB download gadget@Device ID /0x500, @Revision ID /0x2000, @Name /STM32MP157CAA Rev.B,", address: 7)

    static let linux = HostEnvironment()
    static let virtualBoxGuest = HostEnvironment(
        hypervisor: .oracle, detectionEvidence: ["/sys/class/dmi/id/product_name = \"VirtualBox\""])
    static let wslGuest = HostEnvironment(
        wsl: .wsl2, detectionEvidence: ["/proc/sys/kernel/osrelease = \"5.15.153.1-microsoft-standard-WSL2\""])
    static let waited = Duration.seconds(30)
}

@Suite("Diagnoser: one code per failure")
struct DiagnoserTests {
    func diagnose(
        _ reason: FlashFailure.Reason, stage: BoardStage? = nil, phase: UInt8? = nil, timeline: [TimelineEntry] = [],
        kernel: [String] = [], environment: HostEnvironment = Scenario.linux, console: [String] = []
    ) -> Diagnosis {
        let failure = FlashFailure(reason, stage: stage, phase: phase, timeline: timeline)
        return Diagnoser.diagnose(
            Evidence(failure: failure, kernelLog: kernel, environment: environment, consoleLog: console))
    }

    /// A recorded engine failure plus host evidence.
    func diagnose(
        _ failure: FlashFailure, kernel: [String] = [], environment: HostEnvironment = Scenario.linux,
        console: [String] = []
    ) -> Diagnosis {
        Diagnoser.diagnose(Evidence(failure: failure, kernelLog: kernel, environment: environment, consoleLog: console))
    }

    // MARK: Finding and opening the board

    @Test func noBoard() {
        let diagnosis = diagnose(.noBoard(waited: .seconds(10)))
        #expect(diagnosis.code == .noBoard)
        #expect(diagnosis.evidence.contains("waited 10 s (--wait-timeout); no 0483:df11 device appeared"))
        #expect(diagnosis.nextSteps.contains { $0.contains("boot pins") })
        #expect(diagnosis.alternatives.isEmpty)
    }

    @Test func noBoardInAVMSuggestsPassthrough() {
        let diagnosis = diagnose(.noBoard(waited: .seconds(10)), environment: Scenario.virtualBoxGuest)
        #expect(diagnosis.code == .noBoard)
        #expect(diagnosis.alternatives.map(\.code) == [.vmPassthroughLost])
    }

    @Test func noBoardWhileSysfsShowsOneChecksFilters() {
        let board = SysfsBoard(
            port: Scenario.port, vendorID: 0x0483, productID: 0xDF11, node: "/dev/bus/usb/001/005", userCanOpen: true)
        let diagnosis = diagnose(.noBoard(waited: .seconds(10)), environment: HostEnvironment(boards: [board]))
        #expect(diagnosis.nextSteps.first?.contains("--port/--serial") == true)
        #expect(diagnosis.evidence.contains { $0.contains("sysfs nevertheless lists 1-2 0483:df11") })
    }

    @Test func severalBoards() {
        let second = Scenario.device(
            "DFU in HS Mode @Device ID /0x501, @Revision ID /0x1003", port: PortPath(bus: 3, ports: [1, 4]))
        let diagnosis = diagnose(.severalBoards([Scenario.rom, second]))
        #expect(diagnosis.code == .severalBoards)
        #expect(diagnosis.evidence.count >= 3)
        #expect(diagnosis.nextSteps.first?.contains("--port 1-2") == true)
    }

    @Test func openFailedAccessIsPermission() {
        let diagnosis = diagnose(.openFailed(USBTransferError(.access, operation: "libusb_open")), stage: .rom)
        #expect(diagnosis.code == .usbPermission)
        #expect(diagnosis.nextSteps.first?.contains("udev-rules --install") == true)
        #expect(diagnosis.evidence.contains { $0.hasPrefix("no udev rule for 0483:df11") })
    }

    @Test func permissionWithoutUdevdInWSLSaysHowToStartIt() {
        let environment = HostEnvironment(wsl: .wsl2, udevRunning: false)
        let diagnosis = diagnose(
            .openFailed(USBTransferError(.access, operation: "libusb_open")), environment: environment)
        #expect(diagnosis.code == .usbPermission)
        #expect(diagnosis.nextSteps.contains { $0.contains("systemd=true") })
    }

    @Test func openFailedBusy() {
        #expect(diagnose(.openFailed(USBTransferError(.busy, operation: "libusb_claim_interface"))).code == .deviceBusy)
    }

    @Test func aMissingFunctionalDescriptorIsNotAStringProblem() {
        let error = USBTransferError(
            .io, operation: "open", detail: "open: malformed answer: no DFU functional descriptor")
        #expect(diagnose(.openFailed(error), stage: .rom).code == .transferError)
    }

    @Test func unreadableStrings() {
        let error = USBTransferError(.io, operation: "libusb_get_string_descriptor_ascii", detail: "LIBUSB_ERROR_IO")
        let diagnosis = diagnose(.openFailed(error), stage: .rom)
        #expect(diagnosis.code == .stringsUnreadable)
    }

    // MARK: Board messages (GetPhase FF)

    @Test(arguments: [
        ("Layout line 7: invalid option 'X' in X)", DiagnosisCode.layoutRejected),
        ("Layout: duplicated phase 0x4 for part fsbl1 and fsbl2", .layoutRejected),
        ("FIP Header check failed for phase 3", .fipHeaderRejected),
        ("Wrong sequence number", .wrongSequence),
        ("mmc device 1 not found", .deviceInitFailed),
        ("fsbl1 (0x1): not aligned address : 0x1001 on erase size 0x40000", .deviceInitFailed),
        ("rootfs (0x21):Couldn't find part 5 on device mmc 1", .deviceInitFailed),
        ("GPT partitionning fail: -5", .deviceInitFailed),
        ("userfs (0x22): MMC erase failed", .deviceInitFailed),
        ("OTP write issue -5", .otpUpdateFailed),
        ("PMIC update not supported", .otpUpdateFailed),
        ("Unspecified", .boardError),
        ("phase ID :3, alternate 1, address c7000000", .boardError),
    ])
    func boardMessages(message: String, expected: DiagnosisCode) {
        let diagnosis = diagnose(.boardReportedError(message + "\0\0"), stage: .uboot, phase: 0x10)
        #expect(diagnosis.code == expected)
        #expect(diagnosis.evidence.contains("GetPhase answered FF with: \"\(message)\""))
        #expect(!diagnosis.nextSteps.isEmpty)
    }

    @Test func deviceMessagesGetSpecificAdvice() {
        // Item 7: the advice follows what the tool did: DETACH sent after the error → U-Boot's
        // armed reset brings the ROM back; no DETACH → the user resets the board.
        let detached = diagnose(
            .boardReportedError("mmc device 1 not found"), stage: .uboot,
            timeline: [TimelineEntry(time: 1, .detachAfterError(from: .uboot))])
        #expect(detached.nextSteps.first?.contains("Device column") == true)
        #expect(detached.nextSteps.last?.contains("ROM DFU device appears again") == true)
        let stayed = diagnose(.boardReportedError("mmc device 1 not found"), stage: .uboot)
        #expect(stayed.nextSteps.last?.contains("the board stays in U-Boot: reset it") == true)
        #expect(stayed.nextSteps.last?.contains("ROM DFU device appears again") == false)
    }

    // MARK: Silence after DETACH

    @Test func tfaDetachWithNothingBackIsUBootNoUSB() async throws {
        let diagnosis = diagnose(try await Recorded.tfaSilence())
        #expect(diagnosis.code == .ubootNoUSB)
        #expect(diagnosis.evidence.contains("no USB add event at all after the DETACH"))
        let steps = diagnosis.nextSteps.joined(separator: "\n")
        #expect(steps.contains(#"&usbotg_hs { dr_mode = "peripheral"; u-boot,force-b-session-valid; };"#))
        #expect(steps.contains("<board>-u-boot.dtsi"))
        for marker in [
            "vdda1v1-supply", "vdda1v8-supply", "phy-supply", "Failed to load image id … (-80)",
            "Boot interface 6 not supported", "No USB device found", "udc_device_get_by_index failed",
        ] {
            #expect(steps.contains(marker), "missing \(marker)")
        }
        #expect(diagnosis.nextSteps.first?.contains("UART") == true)
        // The kernel log was not given: failed enumerations are not ruled out.
        #expect(diagnosis.alternatives.map(\.code) == [.enumerationErrors])
    }

    @Test func consoleLineNamesTheUBootCause() async throws {
        let console = [
            "NOTICE:  BL2: Booting BL33", "U-Boot 2023.10", "Can't get vdda1v1-supply regulator",
            "stm32prog: no USB device found",
        ]
        let diagnosis = diagnose(
            try await Recorded.tfaSilence(), kernel: ["usb 1-1: USB disconnect, device number 6"], console: console)
        #expect(diagnosis.code == .ubootNoUSB)
        #expect(diagnosis.cause.contains("supply is missing"))
        #expect(diagnosis.evidence.contains { $0.hasPrefix("console: Can't get vdda1v1-supply regulator") })
    }

    @Test func consoleEvidenceIsListedOnce() async throws {
        let diagnosis = diagnose(
            try await Recorded.tfaSilence(), console: ["No USB device found", "udc_device_get_by_index failed"])
        #expect(diagnosis.code == .ubootNoUSB)
        #expect(diagnosis.evidence.filter { $0.hasPrefix("console: No USB device found") }.count == 1)
        #expect(Set(diagnosis.evidence).count == diagnosis.evidence.count)
    }

    @Test func authenticationFailureOnTheConsole() async throws {
        let diagnosis = diagnose(
            try await Recorded.tfaSilence(), console: ["ERROR:   BL2: Failed to load image id 5 (-80)"])
        #expect(diagnosis.code == .ubootNoUSB)
        #expect(diagnosis.cause.contains("authenticate"))
    }

    @Test func kernelEnumerationErrorsWin() async throws {
        let kernel = [
            "[12.1] usb 1-2: device descriptor read/64, error -110",
            "[13.4] usb 1-2: device not accepting address 9, error -71",
        ]
        let diagnosis = diagnose(try await Recorded.tfaSilence(), kernel: kernel, environment: Scenario.virtualBoxGuest)
        #expect(diagnosis.code == .enumerationErrors)
        #expect(diagnosis.evidence.contains("kernel: [13.4] usb 1-2: device not accepting address 9, error -71"))
        #expect(diagnosis.nextSteps.first?.contains("USB 2") == true)
    }

    @Test func addedOnAnotherPortIsOtherPort() async throws {
        let diagnosis = diagnose(try await Recorded.otherPort())
        #expect(diagnosis.code == .otherPort)
        #expect(diagnosis.nextSteps.first?.contains("--port 1-3") == true)
        #expect(diagnosis.alternatives.map(\.code) == [.ubootNoUSB])
    }

    @Test func inAVMPassthroughComesFirstWithUBootAsAlternative() async throws {
        let diagnosis = diagnose(try await Recorded.tfaSilence(), environment: Scenario.virtualBoxGuest)
        #expect(diagnosis.code == .vmPassthroughLost)
        #expect(diagnosis.cause.contains("this VirtualBox VM"))
        #expect(diagnosis.nextSteps.first?.contains("stm32mp-flash vm-filter --for virtualbox") == true)
        #expect(diagnosis.nextSteps.first?.contains("--vendorid 0483 --productid df11") == true)
        let alternative = try #require(diagnosis.alternatives.first)
        #expect(alternative.code == .ubootNoUSB)
        #expect(alternative.howToTell.contains("host's own device list"))
    }

    @Test func inWSLTheRecipeIsUsbipd() async throws {
        let diagnosis = diagnose(try await Recorded.tfaSilence(), environment: Scenario.wslGuest)
        #expect(diagnosis.code == .vmPassthroughLost)
        #expect(
            diagnosis.nextSteps.first?.contains(
                "usbipd policy add --effect Allow --operation AutoBind --hardware-id 0483:df11") == true)
    }

    @Test("a board that already re-enumerated in this run does not rank passthrough first")
    func earlierReenumerationDemotesPassthrough() async throws {
        let diagnosis = diagnose(
            try await Recorded.tfaSilenceAfterReenumeration(), environment: Scenario.virtualBoxGuest)
        #expect(diagnosis.code == .ubootNoUSB)
        #expect(diagnosis.alternatives.map(\.code).contains(.vmPassthroughLost))
        #expect(diagnosis.evidence.contains { $0.hasPrefix("the board already re-enumerated in this run") })
    }

    @Test("a wait that ran out names its option and says the board came later")
    func lateBoardNamesTheOption() async throws {
        let diagnosis = diagnose(try await Recorded.ubootSlow(grace: .seconds(10)))
        #expect(diagnosis.code == .deviceInitTimeout)
        #expect(diagnosis.evidence.contains { $0.contains("within 1 s (--reenumeration-timeout) after the DETACH") })
        #expect(diagnosis.evidence.contains { $0.hasPrefix("the board did enumerate 5 s after the DETACH") })
        #expect(diagnosis.nextSteps.first?.contains("--reenumeration-timeout 15") == true)
    }

    @Test("a wait that ran out says nothing came in the grace time either")
    func nothingLateIsSaid() async throws {
        let failure = try await Recorded.failure(
            "mp15-sdcard", fault: .noUBoot, timeouts: TransitionTimeouts(lateArrivalGrace: .seconds(10)))
        let diagnosis = diagnose(failure)
        #expect(diagnosis.code == .ubootNoUSB)
        #expect(diagnosis.evidence.contains { $0.contains("(--uboot-timeout)") })
        #expect(diagnosis.evidence.contains("nothing enumerated in the 10 s listened after the wait ended either"))
    }

    @Test func aConsoleLineBeatsThePassthroughGuess() async throws {
        let diagnosis = diagnose(
            try await Recorded.tfaSilence(), environment: Scenario.virtualBoxGuest,
            console: ["udc_device_get_by_index failed"])
        #expect(diagnosis.code == .ubootNoUSB)
    }

    @Test func romDetachWithNothingBackIsFSBLNotStarted() async throws {
        let diagnosis = diagnose(
            try await Recorded.romSilence(), kernel: ["usb 1-1: USB disconnect, device number 5"])
        #expect(diagnosis.code == .fsblNotStarted)
        #expect(diagnosis.nextSteps.first?.contains("tf-a-<board>-usb.stm32") == true)
    }

    @Test func storageBuildOfTFAOnTheConsole() async throws {
        let diagnosis = diagnose(
            try await Recorded.romSilence(),
            console: ["ERROR:   Boot interface 6 not supported", "PANIC at PC : 0x2ffe1234"])
        #expect(diagnosis.code == .fsblNotStarted)
        #expect(diagnosis.cause.contains("storage boot"))
    }

    @Test func ubootDetachAfterLayoutIsDeviceInitTimeout() async throws {
        let diagnosis = diagnose(try await Recorded.ubootSlow(), kernel: ["usb 1-1: USB disconnect, device number 7"])
        #expect(diagnosis.code == .deviceInitTimeout)
        #expect(diagnosis.alternatives.isEmpty)
    }

    @Test func fullSpeedLinkIsOfferedAsAlternativeToSilence() async throws {
        let diagnosis = diagnose(try await Recorded.fullSpeedTFASilence(), kernel: ["usb 1-1: USB disconnect"])
        #expect(diagnosis.code == .ubootNoUSB)
        #expect(diagnosis.alternatives.map(\.code) == [.fullSpeedLink])
    }

    // MARK: Identity after DETACH

    @Test func romAfterDetachToUBootIsRomCameBack() async throws {
        let diagnosis = diagnose(
            try await Recorded.romCameBack(), kernel: ["usb 1-1: reset high-speed USB device number 8 using xhci_hcd"])
        #expect(diagnosis.code == .romCameBack)
        #expect(diagnosis.evidence.contains("kernel: usb 1-1: reset high-speed USB device number 8 using xhci_hcd"))
        #expect(diagnosis.alternatives.map(\.code) == [.powerSupply])
    }

    @Test func overCurrentMakesItAPowerProblem() async throws {
        let diagnosis = diagnose(try await Recorded.romCameBack(), kernel: ["usb usb1-port1: over-current condition"])
        #expect(diagnosis.code == .powerSupply)
    }

    @Test func romAfterROMDetachIsFSBLNotStarted() async throws {
        let failure = Recorded.with(try await Recorded.romSilence(), reason: .unexpectedIdentity(.rom))
        #expect(diagnose(failure).code == .fsblNotStarted)
    }

    @Test(arguments: [BoardStage.ubootPlainDFU, .fastboot, .unknown])
    func otherFirmwareIsUnexpectedStage(stage: BoardStage) async throws {
        let diagnosis = diagnose(Recorded.with(try await Recorded.tfaSilence(), reason: .unexpectedIdentity(stage)))
        #expect(diagnosis.code == .unexpectedStage)
        #expect(diagnosis.cause.contains(stage.displayName))
    }

    // MARK: Transfers

    @Test func deviceGoneMidPhaseIsDisconnected() async throws {
        let failure = try await Recorded.vanished()
        let diagnosis = diagnose(failure)
        #expect(diagnosis.code == .disconnected)
        let phase = try #require(failure.phase)
        #expect(diagnosis.evidence.contains { $0.contains("during phase \(phaseHex(phase))") })
        #expect(diagnosis.alternatives.map(\.code) == [.powerSupply])
    }

    @Test func disconnectWithOverCurrentIsPower() {
        let diagnosis = diagnose(
            .transferFailed(USBTransferError(.noDevice, operation: "DFU_DNLOAD")), stage: .uboot, phase: 0x21,
            kernel: ["usb usb1-port2: over-current change"])
        #expect(diagnosis.code == .powerSupply)
        #expect(diagnosis.evidence.contains("kernel: usb usb1-port2: over-current change"))
    }

    @Test func transferTimeout() async throws {
        let failure = Recorded.with(
            try await Recorded.vanished(),
            reason: .transferFailed(USBTransferError(.timeout, operation: "DFU_GETSTATUS")))
        #expect(diagnose(failure).code == .transferTimeout)
    }

    @Test func stallWithoutMessageIsTransferError() async throws {
        let failure = Recorded.with(
            try await Recorded.vanished(), reason: .transferFailed(USBTransferError(.stall, operation: "DFU_DNLOAD")))
        #expect(diagnose(failure).code == .transferError)
    }

    @Test func transferTroubleOnAFullSpeedLinkBlamesTheLink() async throws {
        let diagnosis = diagnose(
            Recorded.with(
                try await Recorded.fullSpeedTFASilence(),
                reason: .transferFailed(USBTransferError(.timeout, operation: "DFU_DNLOAD")), stage: .tfa, phase: 0x03))
        #expect(diagnosis.code == .fullSpeedLink)
        #expect(diagnosis.alternatives.map(\.code) == [.transferTimeout])
    }

    @Test func accessDeniedMidRunIsPermission() {
        #expect(diagnose(.transferFailed(USBTransferError(.access, operation: "libusb_open"))).code == .usbPermission)
    }

    @Test func romStopsAnsweringAfterFSBLOnMP15() async throws {
        let recorded = try await Recorded.tfaSilence()
        let timeline = Recorded.prefix(recorded) {
            if case .sendDone(0x01, _, _, .rom) = $0 { true } else { false }
        }
        let diagnosis = diagnose(
            .transferFailed(USBTransferError(.stall, operation: "DFU_UPLOAD GetPhase")), stage: .rom, phase: 0x01,
            timeline: timeline)
        #expect(diagnosis.code == .fsblNotStarted)
        #expect(diagnosis.alternatives.map(\.code) == [.transferError])
    }

    // MARK: Phases and session end

    @Test func repeatedFSBLIsFSBLNotStarted() {
        #expect(diagnose(.phaseRepeated(0x01), stage: .rom, phase: 0x01).code == .fsblNotStarted)
    }

    @Test func repeatedPartitionIsPhaseRepeated() {
        let diagnosis = diagnose(.phaseRepeated(0x03), stage: .tfa, phase: 0x03)
        #expect(diagnosis.code == .phaseRepeated)
        #expect(diagnosis.evidence.contains("the board asked for phase 0x03 again right after receiving it"))
    }

    @Test func phaseWithoutFile() {
        let diagnosis = diagnose(.phaseWithoutFile(0x02), stage: .tfa)
        #expect(diagnosis.code == .phaseWithoutFile)
        #expect(diagnosis.nextSteps.first?.contains("DDR firmware") == true)
    }

    @Test func missingOTPAlternate() async throws {
        let diagnosis = diagnose(Recorded.with(try await Recorded.ubootSlow(), reason: .missingAlternate(0xF2)))
        #expect(diagnosis.code == .missingAlternate)
        #expect(diagnosis.nextSteps.first?.contains("OTP") == true)
        #expect(diagnosis.evidence.contains { $0.hasPrefix("alternates at the last open: @FlashLayout/0x00/") })
    }

    @Test func incomplete() {
        let diagnosis = diagnose(.incomplete([0x21, 0x22]), stage: .uboot)
        #expect(diagnosis.code == .incomplete)
        #expect(diagnosis.evidence.contains("never requested: 0x21, 0x22"))
    }

    @Test func protocolError() {
        #expect(diagnose(.protocolError("GetPhase reply of 3 bytes")).code == .protocolError)
    }

    @Test func cancelled() {
        let diagnosis = diagnose(.cancelled, stage: .uboot, phase: 0x21)
        #expect(diagnosis.code == .cancelled)
        #expect(diagnosis.evidence.contains("cancelled during phase 0x21"))
    }

    // MARK: Shape of every diagnosis

    @Test func evidenceStartsWithTheFailureAndTheTimeline() async throws {
        let diagnosis = diagnose(try await Recorded.tfaSilence(), environment: Scenario.virtualBoxGuest)
        #expect(diagnosis.evidence.first == "failure: [TF-A, phase 0x03] the board did not come back within 30 s")
        #expect(
            diagnosis.evidence.contains {
                $0.hasPrefix("timeline: t=")
                    && $0.contains(" detachSent [TF-A]: expecting U-Boot stm32prog within 30 s")
            })
        #expect(
            diagnosis.evidence.contains {
                $0.hasPrefix("running in this VirtualBox VM (/sys/class/dmi/id/product_name")
            })
        #expect(diagnosis.text.contains("More: docs/troubleshooting.md#vm-passthrough-lost"))
    }

    @Test func everyCodeHasAOneLineSummary() {
        for code in DiagnosisCode.allCodes {
            #expect(!code.summary.isEmpty && !code.summary.contains("\n"), "\(code.rawValue)")
            #expect(code.rawValue == code.rawValue.lowercased() && !code.rawValue.contains(" "))
        }
        #expect(Set(DiagnosisCode.allCodes.map(\.rawValue)).count == DiagnosisCode.allCodes.count)
    }
}
