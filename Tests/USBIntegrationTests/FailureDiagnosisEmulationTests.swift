import Foundation
import Testing

/// The virtual board's failure scenarios served by the emulator, with the built `stm32mp-flash
/// flash --json` run unmodified against them over libusb and libudev: the failure, its diagnosis
/// code and the evidence cited, as a user on real USB would get them. The emulator runs in real
/// time: short CLI waits only where the scenario is about a wait running out (see `waits(for:)`).
@Suite struct FailureDiagnosisEmulationTests {
    @Test func tfaDetachWithNothingAfterIsUBootWithoutUSB() async throws {
        let directory = try ShortTemporaryDirectory()
        let run = try await flashUnderEmulator(scenario: "no-uboot", in: directory)
        let failed = try run.expectFailure()
        #expect(failed.stage == "tfa" && failed.phase == "0x03", "\(run.output)")
        let diagnosis = try #require(run.diagnosis, "\(run.output)")
        // The CLI's environment probe reads the real /.dockerenv and /proc under the emulator: in a
        // VM or container it puts passthrough first, with U-Boot's silence as the alternative.
        if try await cliSeesPassthrough(in: directory) {
            #expect(failed.code == "vm-passthrough-lost", "\(run.output)")
            #expect(diagnosis.alternatives?.map(\.code) == ["uboot-no-usb"], "\(run.output)")
        } else {
            #expect(failed.code == "uboot-no-usb", "\(run.output)")
        }
        #expect(diagnosis.code == failed.code)
        let evidence = diagnosis.evidence ?? []
        #expect(
            evidence.contains("nothing came back within 5 s (--uboot-timeout) after the DETACH sent to TF-A"),
            "\(evidence)")
        // The time listened is measured (3 s asked; a loaded host may round it to 4 s or more).
        #expect(
            evidence.contains {
                $0.hasPrefix("nothing enumerated in the ") && $0.hasSuffix(" s listened after the wait ended either")
                    && Int($0.dropFirst(26).prefix { $0 != " " }).map { $0 >= 3 } == true
            }, "\(evidence)")
        #expect(evidence.contains("no USB add event at all after the DETACH"), "\(evidence)")
        #expect(evidence.contains { $0.hasPrefix("timeline:") && $0.contains("removed 1-1 0483:df11") }, "\(evidence)")
    }

    @Test func usbResetAfterDetachBringsTheROMBack() async throws {
        let directory = try ShortTemporaryDirectory()
        let run = try await flashUnderEmulator(scenario: "reset-after-detach", trace: true, in: directory)
        let failed = try run.expectFailure()
        #expect(failed.code == "rom-came-back" && failed.stage == "rom", "\(run.output)")
        // The board reset itself: the host never reset the port after the DETACH.
        #expect(run.boardConsole.contains("resetting ..."), "\(run.result.stderr.suffix(2000))")
        #expect(!run.result.stderr.contains("[violation]"), "\(run.result.stderr.suffix(2000))")
        let evidence = try #require(run.diagnosis?.evidence, "\(run.output)")
        #expect(evidence.contains("came back as ROM code after the DETACH sent to U-Boot stm32prog"), "\(evidence)")
        // The ROM's return is in the timeline, heard as its add event or, when a rescan lists the
        // new device before udev delivers that event (a race on a loaded host), found by the rescan.
        #expect(
            evidence.contains {
                let heard = $0.contains(" added 1-1 0483:df11 ") || $0.contains(" rescan 1-1 0483:df11 ")
                return $0.hasPrefix("timeline:") && heard && $0.contains("\"DFU in HS Mode @Device ID /0x500")
            }, "\(evidence)")
        // No GetPhase reply was an error, so the diagnosis must not blame one.
        #expect(!evidence.contains { $0.hasPrefix("GetPhase reported an error") }, "\(evidence)")
        #expect(!failed.cause.contains("after reporting an error"), "\(failed.cause)")
    }

    /// Item 1: TF-A STALLs the FIP's zero-length DNLOAD and stays in dfuERROR; the status is
    /// cleared before GetPhase is read, so the run quotes TF-A's own text.
    @Test func fipRejectedByTFAQuotesItsText() async throws {
        let directory = try ShortTemporaryDirectory()
        let run = try await flashUnderEmulator(scenario: "fip-header-bad", in: directory)
        let failed = try run.expectFailure()
        #expect(
            failed.code == "fip-header-rejected" && failed.stage == "tfa" && failed.phase == "0x03", "\(run.output)")
        let evidence = try #require(run.diagnosis?.evidence, "\(run.output)")
        #expect(evidence.contains("GetPhase answered FF with: \"FIP Header check failed for phase 3\""), "\(evidence)")
    }

    /// Item 7: after GetPhase reports U-Boot's error in its second enumeration, the tool sends the
    /// DETACH, so the reset U-Boot armed happens (the advice says the ROM comes back).
    @Test func errorReadInEnumerationTwoIsFollowedByTheArmedReset() async throws {
        let directory = try ShortTemporaryDirectory()
        let run = try await flashUnderEmulator(scenario: "write-error", trace: true, in: directory)
        let failed = try run.expectFailure()
        #expect(failed.code == "board-error" && failed.stage == "uboot", "\(run.output)")
        #expect(run.boardConsole.contains("resetting ..."), "\(run.result.stderr.suffix(2000))")
    }

    /// Item 2: the ROM answers errVERIFY at the FSBL's manifestation; the run ends `fsbl-rejected`
    /// with the board's status as evidence, and says what the file holds.
    @Test func fsblRefusedByTheROMHasItsOwnCode() async throws {
        let directory = try ShortTemporaryDirectory()
        let run = try await flashUnderEmulator(scenario: "fsbl-rejected", in: directory)
        let failed = try run.expectFailure()
        #expect(failed.code == "fsbl-rejected" && failed.stage == "rom" && failed.phase == "0x01", "\(run.output)")
        #expect(failed.error.contains("dfuERROR, bStatus 0x07 (errVERIFY)"), "\(failed.error)")
        let evidence = try #require(run.diagnosis?.evidence, "\(run.output)")
        #expect(
            evidence.contains {
                $0.contains(
                    "the ROM answered GETSTATUS with dfuERROR, bStatus 0x07 (errVERIFY) after the zero-length DNLOAD")
            }, "\(evidence)")
        // The example FSBL is intact and unsigned: the signature check of a closed chip is what is left.
        #expect(
            evidence.contains { $0.contains("STM32 header v1 (STM32MP15)") && $0.contains("not signed") }, "\(evidence)"
        )
        #expect(failed.cause.contains("not signed, so a closed (secure-boot) chip refuses it"), "\(failed.cause)")
    }

    /// Item 9: an MP13 layout on the emulated MP15: refused before the FSBL goes out.
    @Test func fsblForAnotherChipIsRefusedBeforeSending() async throws {
        let directory = try ShortTemporaryDirectory()
        let run = try await flashUnderEmulator(scenario: "none", layout: "mp13-sdcard", in: directory)
        let failed = try run.expectFailure()
        #expect(failed.code == "fsbl-wrong-chip" && failed.stage == "rom", "\(run.output)")
        #expect(failed.error.contains("STM32 header v2 (STM32MP13) but the board is an STM32MP15"), "\(failed.error)")
        #expect(!run.events.contains { $0.event == "phase-start" }, "\(run.output)")
        let evidence = try #require(run.diagnosis?.evidence, "\(run.output)")
        #expect(evidence.contains { $0.contains("@Device ID /0x500") }, "\(evidence)")
    }

    @Test func rejectedLayoutQuotesTheBoardsMessageVerbatim() async throws {
        let directory = try ShortTemporaryDirectory()
        let run = try await flashUnderEmulator(scenario: "layout-rejected", trace: true, in: directory)
        let failed = try run.expectFailure()
        #expect(failed.code == "layout-rejected" && failed.stage == "uboot" && failed.phase == "0x00", "\(run.output)")
        // What U-Boot printed on its console is what GetPhase carried to the host.
        let message = try #require(
            run.boardConsole.first { $0.hasPrefix("Error: Layout line") }?.dropFirst("Error: ".count),
            "\(run.boardConsole)")
        #expect(failed.error.hasSuffix("the board reported: " + message), "\(failed.error)")
        #expect(failed.cause.hasSuffix(": " + message), "\(failed.cause)")
        let evidence = try #require(run.diagnosis?.evidence, "\(run.output)")
        #expect(evidence.contains("GetPhase answered FF with: \"\(message)\""), "\(evidence)")
    }

    /// U-Boot enumerates on the next port of the same hub with the board's serial: the run
    /// follows it there and finishes. On 1-2.4 the neighbour is the hub's fifth port.
    @Test(arguments: [("1-1", "1-2"), ("1-2.4", "1-2.5")])
    func boardMovingToTheNextPortIsFollowedBySerial(port: String, movedPort: String) async throws {
        let directory = try ShortTemporaryDirectory()
        let run = try await flashUnderEmulator(scenario: "moves-port", port: port, in: directory)
        #expect(run.result.status == 0, "\(run.output)")
        #expect(run.events.last?.event == "done", "\(run.output)")
        #expect(run.events.contains { $0.event == "end" })
        #expect(!run.events.contains { $0.event == "failed" || $0.event == "other-port" }, "\(run.output)")
        let boards = run.events.filter { $0.event == "board" }
        let rom = try #require(boards.first, "\(run.output)")
        #expect(rom.stage == "rom" && rom.port == port)
        let uboot = boards.filter { $0.stage == "uboot" }
        #expect(uboot.count == 2, "U-Boot enumerates twice: \(run.output)")
        #expect(uboot.allSatisfy { $0.port == movedPort && $0.serial == rom.serial }, "\(run.output)")
        let reenumerations = run.events.filter { $0.event == "reenumeration" && $0.to == "uboot" }
        #expect(reenumerations.map(\.port) == [movedPort, movedPort], "\(run.output)")
    }

    /// Every stage STALLs its command alternate's name 12 times after it enumerates: the kernel's
    /// read and the host's 10 attempts of one string read fail, so the first open of each stage
    /// cannot name that alternate. The lease opens the stage again (real libusb, the same
    /// `StringRetryPolicy`) and the flash ends `done`; before, the alternate stayed nameless and
    /// GetPhase had no alternate for phase 0xF1.
    @Test func unreadableCommandAlternateNameIsReadOnTheNextOpen() async throws {
        let directory = try ShortTemporaryDirectory()
        let run = try await flashUnderEmulator(scenario: "alternate-name-stalls", in: directory)
        #expect(run.result.status == 0, "\(run.output)")
        #expect(run.events.last?.event == "done", "\(run.output)")
        #expect(!run.events.contains { $0.event == "failed" }, "\(run.output)")
        #expect(run.events.contains { $0.event == "board" && $0.stage == "uboot" }, "\(run.output)")
    }

    /// The hub the board sits on has the port U-Boot moves to, in sysfs and in its hub descriptor.
    @Test func hubAboveTheBoardHasTheNextPort() async throws {
        let directory = try ShortTemporaryDirectory()
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            ["--port", "1-2.4", "--", "sh", "-c", "cat /sys/bus/usb/devices/1-2/maxchild; lsusb -v -d 05e3:0608"],
            in: directory, timeout: 30)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.lines.first == "5", "\(result.stdout)")
        let ports = result.lines.first { $0.contains("nNbrPorts") }?.split(separator: " ").last
        #expect(ports == "5", "\(result.stdout)")
    }

    /// U-Boot comes up on the next port with another serial: nothing ties it to the board, so the
    /// run waits out the U-Boot timeout and names the device it saw on the other port.
    @Test func dfuDeviceOnAnotherPortWithAnotherSerialIsOtherPort() async throws {
        let directory = try ShortTemporaryDirectory()
        let run = try await flashUnderEmulator(scenario: "moves-port-new-serial", in: directory)
        let failed = try run.expectFailure()
        #expect(failed.code == "other-port" && failed.stage == "tfa", "\(run.output)")
        let board = try #require(run.events.first { $0.event == "board" })
        let other = try #require(run.events.first { $0.event == "other-port" }, "\(run.output)")
        #expect(board.port == "1-1" && other.port == "1-2")
        #expect(other.serial != nil && other.serial != board.serial, "\(run.output)")
        let diagnosis = try #require(run.diagnosis)
        #expect(
            diagnosis.evidence?.contains { $0.contains("a DFU device appeared on 1-2 while the board on 1-1 was away") }
                == true, "\(diagnosis.evidence ?? [])")
        #expect(diagnosis.alternatives?.map(\.code) == ["uboot-no-usb"])
        #expect(diagnosis.nextSteps?.contains { $0.contains("`--port 1-2`") } == true, "\(diagnosis.nextSteps ?? [])")
    }

    /// The in-memory simulator and the emulator (on the simulator's port, 1-2) end with the same
    /// `failed` line and the same diagnosis, where the host's kernel log and environment do not
    /// count (docs/virtual-board.md lists where they differ). Evidence differs in its times.
    @Test(arguments: ["moves-port-new-serial", "layout-rejected", "reset-after-detach"])
    func simulatorAndEmulatorGiveTheSameDiagnosis(scenario: String) async throws {
        let directory = try ShortTemporaryDirectory()
        let emulated = try await flashUnderEmulator(scenario: scenario, port: "1-2", in: directory)
        let simulatedResult = try await run(
            try builtExecutable("stm32mp-flash"),
            ["flash", "--simulate", "--sim-scenario", scenario, "--sim-dir", directory.file("simulated"), "--json"]
                + waits(for: scenario) + [directory.file("examples/mp15-sdcard.tsv")], in: directory, timeout: 300)
        let simulated = try FlashRun(result: simulatedResult)
        _ = try emulated.expectFailure()
        _ = try simulated.expectFailure()
        #expect(emulated.result.lines.last == simulated.result.lines.last)
        let (a, b) = (try #require(emulated.diagnosis), try #require(simulated.diagnosis))
        #expect(a.code == b.code && a.cause == b.cause)
        #expect(a.nextSteps == b.nextSteps)
    }
}

/// One `stm32mp-flash flash --json` run and its events.
private struct FlashRun {
    var result: ProcessResult
    var events: [FlashEvent]

    init(result: ProcessResult) throws {
        self.result = result
        events = try result.lines.map { try JSONDecoder().decode(FlashEvent.self, from: Data($0.utf8)) }
    }

    var output: String { result.stdout + "\n" + result.stderr.suffix(3000) }
    var diagnosis: FlashEvent? { events.last { $0.event == "diagnosis" } }

    /// What the board printed on its UART (`--trace` runs: the emulator's `[console]` lines).
    var boardConsole: [String] {
        result.stderr.split(separator: "\n").filter { $0.hasPrefix("[console] ") }.map {
            String($0.dropFirst("[console] ".count))
        }
    }

    /// Exit status 1, a `failed` event last with a code, a `diagnosis` event before it with the
    /// same code, and no `end` or `done`.
    func expectFailure() throws -> FailedEvent {
        #expect(result.status == 1, "\(output)")
        #expect(!events.contains { $0.event == "done" || $0.event == "end" }, "\(output)")
        let last = try #require(result.lines.last, "\(output)")
        let failed = try JSONDecoder().decode(FailedEvent.self, from: Data(last.utf8))
        #expect(failed.event == "failed", "\(last)")
        #expect(diagnosis?.code == failed.code, "\(output)")
        return failed
    }
}

/// Every field of the JSON Lines events these tests look at (docs/json.md).
private struct FlashEvent: Decodable {
    struct Alternative: Decodable {
        var code: String
    }
    var event: String
    var code: String?
    var cause: String?
    var evidence: [String]?
    var nextSteps: [String]?
    var alternatives: [Alternative]?
    var port: String?
    var serial: String?
    var stage: String?
    var to: String?
}

private struct FailedEvent: Decodable {
    var event: String
    var code: String
    var cause: String
    var error: String
    var stage: String?
    var phase: String?
}

/// Runs an example layout (made in `directory/examples`; MP15 SD card unless `layout` says) under
/// the emulator serving the virtual MP15 board on `port` with `scenario`.
///
/// Only the scenarios whose diagnosis is about a wait that ran out (`waitsOut`) get short waits;
/// the others get long ones that a loaded machine never reaches before the board's own answer, so
/// their outcome does not depend on timing. The run is killed only when it hangs.
private func flashUnderEmulator(
    scenario: String, port: String = "1-1", trace: Bool = false, layout: String = "mp15-sdcard",
    in directory: ShortTemporaryDirectory
) async throws -> FlashRun {
    let flash = try builtExecutable("stm32mp-flash")
    let examples = directory.file("examples")
    let made = try await run(flash, ["make-examples", "--out", examples], in: directory, timeout: 300)
    try #require(made.status == 0, "\(made.stderr)")
    let result = try await run(
        try builtExecutable("stm32mp-board-emulator"),
        ["--soc", "mp15", "--port", port, "--scenario", scenario] + (trace ? ["--trace"] : []) + [
            "--", flash, "flash", "--json",
        ] + waits(for: scenario) + [examples + "/\(layout).tsv"], in: directory, timeout: 300)
    return try FlashRun(result: result)
}

/// The scenarios that end because a wait ran out: their evidence names the wait.
private let waitsOut: Set<String> = ["no-uboot", "moves-port-new-serial"]

/// `flash` wait options for `scenario` (the same for the simulator and the emulator).
private func waits(for scenario: String) -> [String] {
    waitsOut.contains(scenario)
        ? ["--wait-timeout", "5", "--uboot-timeout", "5", "--reenumeration-timeout", "10", "--late-grace", "3"]
        : ["--wait-timeout", "120", "--uboot-timeout", "120", "--reenumeration-timeout", "120", "--late-grace", "3"]
}

/// Whether `stm32mp-flash`, run under the emulator, finds itself in a VM, WSL 2 or a container
/// (its `doctor --json` environment): the diagnosis of a silent board then changes.
private func cliSeesPassthrough(in directory: ShortTemporaryDirectory) async throws -> Bool {
    struct Doctor: Decodable {
        struct Environment: Decodable {
            var hypervisor: String?
            var wsl: String?
            var container: String?
        }
        var environment: Environment
    }
    let result = try await run(
        try builtExecutable("stm32mp-board-emulator"),
        ["--", try builtExecutable("stm32mp-flash"), "doctor", "--json"], in: directory, timeout: 30)
    let environment = try JSONDecoder().decode(Doctor.self, from: Data(result.stdout.utf8)).environment
    return environment.hypervisor != nil || environment.wsl == "wsl2" || environment.container != nil
}
