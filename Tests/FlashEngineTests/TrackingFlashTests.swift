import BoardTracking
import DfuSe
import Diagnostics
import FlashEngine
import FlashLayout
import TestSupport
import Testing
import Timekeeping
import USBModel
import VirtualBoard
import VirtualMCU

/// The engine over the board tracker: the udev/libusb race, identities that only GetPhase can
/// tell, several boards in one process.
@Suite("Flashing over a board lease")
struct TrackingFlashTests {
    @Test(
        "a device list that lags the add event by 80 ms loses no board", arguments: ["mp13-sdcard", "mp25-sdcard"])
    func listLagDoesNotLoseTheBoard(layout: String) async throws {
        let rig = try SimulatedFlash(layout: layout, listLag: .milliseconds(80))
        let summary: FlashSummary
        do { summary = try await rig.run() } catch {
            Issue.record("\(error.timeline.map(\.description).joined(separator: "\n"))")
            return
        }
        #expect(summary.partitions == rig.plan.requestOrder)
        let retries = summary.timeline.filter {
            if case .openFailed(let error, _, _) = $0.event { error.kind == .notFound } else { false }
        }
        #expect(!retries.isEmpty, "the race was not exercised")
        #expect(
            summary.timeline.contains {
                if case .opened(_, _, _, let attempts) = $0.event { attempts > 1 } else { false }
            })
    }

    /// The command alternate's name STALLs once per stage for longer than a string read retries
    /// (`alternate-name-stalls`): each stage's open fails once and the lease opens it again.
    @Test(
        "an alternate name that cannot be read is enumeration trouble: the lease opens the stage again",
        arguments: ["mp15-sdcard", "mp25-sdcard"])
    func unreadableAlternateNameIsOpenedAgain(layout: String) async throws {
        let rig = try SimulatedFlash(layout: layout, fault: .alternateNameStalls)
        let summary = try await rig.run()
        #expect(summary.partitions == rig.plan.requestOrder)
        let retried = summary.timeline.filter {
            if case .openFailed(let error, _, _) = $0.event {
                error.operation.contains("the name of DFU alternate setting") && error.kind == .stall
            } else {
                false
            }
        }
        #expect(!retried.isEmpty, "the fault was not exercised")
        let opened = summary.timeline.compactMap {
            if case .opened(_, _, let alternates, let attempts) = $0.event { (alternates, attempts) } else { nil }
        }
        #expect(opened.allSatisfy { $0.1 > 1 }, "every stage needed a second open: \(opened.map(\.1))")
        #expect(opened.allSatisfy { $0.0.contains { $0.lowercased().contains("/0xf1/") } })
    }

    /// A name that never reads: the run fails naming the alternate and the device, at the first
    /// open and after a re-enumeration alike (never "the board did not come back").
    @Test(
        "an alternate name that never reads fails with strings-unreadable, naming the alternate and the port",
        arguments: [FirmwareStage.rom, .uboot])
    func alternateNameThatNeverReads(stage: FirmwareStage) async throws {
        let rig = try SimulatedFlash(layout: "mp15-sdcard", fault: .alternateNameStalls) {
            $0.alternateNameFailures = .max
            $0.alternateNameStallStages = [stage]
        }
        do {
            _ = try await rig.run()
            Issue.record("flashed a board whose command alternate has no readable name")
        } catch {
            guard case .openFailed(let cause) = error.reason else {
                Issue.record("\(error)")
                return
            }
            #expect(cause.kind == .stall)
            #expect(cause.operation.hasPrefix("the name of DFU alternate setting "), "\(cause)")
            #expect(cause.operation.hasSuffix("of the device on \(rig.board.port)"), "\(cause)")
            #expect(error.stage == (stage == .rom ? .unknown : .tfa), "\(error)")
            #expect(Diagnoser.diagnose(Evidence(failure: error)).code == .stringsUnreadable)
        }
    }

    @Test("an ST TF-A that reuses the ROM's product string on MP13 is asked GetPhase, not taken for the ROM")
    func tfaWithTheROMsString() async throws {
        let rig = try SimulatedFlash(layout: "mp13-sdcard") { $0.tfaVariant = .stLegacy }
        let summary = try await rig.run()
        #expect(summary.partitions == rig.plan.requestOrder)
        #expect(
            summary.timeline.contains {
                if case .stageCorrected(.rom, .tfa) = $0.event { true } else { false }
            })
    }

    @Test("the ROM restarting after its DETACH is still fsbl-not-started, after GetPhase asked for the FSBL")
    func romRestartingIsStillTheROM() async throws {
        let rig = try SimulatedFlash(layout: "mp13-sdcard", fault: .bootInterfaceUnsupported)
        do {
            _ = try await rig.run()
            Issue.record("a storage TF-A flashed to the end")
        } catch {
            #expect(Diagnoser.diagnose(Evidence(failure: error)).code == .fsblNotStarted)
        }
    }

    @Test(
        "an add event heard before a DETACH is never the board's return: the flash follows every stage",
        arguments: ["mp13-sdcard", "mp25-sdcard"])
    func staleAddBeforeDetach(layout: String) async throws {
        var timing = BoardTiming.zero
        timing.detachToDisconnect = .milliseconds(10)  // Each stage stays a moment after DETACH.
        timing.romToTFA = .milliseconds(100)
        timing.tfaReconnect = .milliseconds(100)
        timing.tfaToUBoot = .milliseconds(100)
        timing.ubootReenumeration = .milliseconds(100)
        let rig = try SimulatedFlash(layout: layout, timing: timing)
        let bus = VirtualUSBBus(clock: SimulatedClock())
        let lease = try await BoardTracker(bus: bus).lease(.port(rig.board.port))
        // The board's add is queued for the lease, which finds the board by scanning first: the
        // add stays unread until the ROM's DETACH (udev heard after libusb's list had the device).
        bus.plug(rig.board)
        let summary = try await Flasher(
            lease: lease, request: FlashRequest(plan: rig.plan, layoutPath: rig.layoutPath)
        ).run()
        #expect(summary.partitions == rig.plan.requestOrder)
        try rig.checkWrittenAsPlanned()
    }

    /// Real time (two boards on one simulated clock would wait on each other): every wait is a
    /// hang guard, as this runs beside the whole suite on a loaded machine.
    @Test("two boards flashed at once, one lease each, on one tracker", .timeLimit(.minutes(15)))
    func twoBoardsOneTracker() async throws {
        let first = try SimulatedFlash(layout: "mp13-sdcard") {
            $0.port = PortPath(bus: 1, ports: [1])
            $0.serial = "000000000000000000000001"
        }
        let second = try SimulatedFlash(layout: "mp15-sdcard") {
            $0.port = PortPath(bus: 1, ports: [2])
            $0.serial = "000000000000000000000002"
        }
        let bus = VirtualUSBBus(clock: SystemClock(), boards: [first.board, second.board])
        let tracker = BoardTracker(bus: bus)
        try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for rig in [first, second] {
                let lease = try await tracker.lease(.port(rig.board.port))
                group.addTask {
                    defer { Task { await lease.release() } }
                    // Both flashes read their partitions back (the default, sampled), as a
                    // several-board run does.
                    let guards = TransitionTimeouts(
                        romToTFA: .seconds(600), tfaReconnect: .seconds(600), tfaToUBoot: .seconds(600),
                        ubootReenumeration: .seconds(600), boardArrival: .seconds(600))
                    let flasher = Flasher(
                        lease: lease,
                        request: FlashRequest(plan: rig.plan, timeouts: guards, layoutPath: rig.layoutPath))
                    let summary = try await flasher.run()
                    #expect(summary.board.port == rig.board.port)
                    #expect(summary.checks.contains { $0.method == .sampled && $0.bytesRead > 0 })
                    _ = try rig.checkWrittenAsPlanned()
                    return summary.partitions
                }
            }
            var finished = 0
            for try await partitions in group {
                #expect(!partitions.isEmpty)
                finished += 1
            }
            #expect(finished == 2)
        }
    }
}

/// Issue 9 item 8: an STM32 MCU bootloader that says "DFU in FS Mode" like the MP ROM.
@Suite("STM32 MCU bootloaders are not taken for the STM32MP ROM")
struct MCUBootloaderRefusalTests {
    func run(_ selection: BoardSelection) async throws -> FlashFailure? {
        let folder = try TemporaryDirectory()
        let rig = try SimulatedFlash(layout: "mp15-sdcard")
        let mcu = try VirtualMCU(configuration: MCUConfiguration(family: .g0, memoryDirectory: folder.path))
        let bus = VirtualUSBBus(clock: SimulatedClock(), boards: [mcu])
        let flasher = Flasher(bus: bus, request: FlashRequest(plan: rig.plan, selection: selection))
        do {
            _ = try await flasher.run()
            return nil
        } catch {
            return error
        }
    }

    @Test(arguments: [BoardSelection.any, .port(PortPath(bus: 1, ports: [1]))])
    func flashRefusesIt(selection: BoardSelection) async throws {
        let failure = try #require(try await run(selection), "flashing an MCU bootloader succeeded")
        guard case .unsupportedDevice(let identity, let kind, let reason) = failure.reason else {
            Issue.record("\(failure)")
            return
        }
        #expect(identity.product == "DFU in FS Mode")
        #expect(kind == "STM32 MCU system bootloader")
        #expect(reason.contains("not an STM32MP board"))
        let diagnosis = Diagnoser.diagnose(Evidence(failure: failure))
        #expect(diagnosis.code == .unsupportedDevice)
        #expect(failure.timeline.allSatisfy { if case .sendStarted = $0.event { false } else { true } })
    }
}
