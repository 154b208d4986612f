import BoardTracking
import Diagnostics
import FlashEngine
import FlashLayout
import Testing
import Timekeeping
import USBModel
import VirtualBoard

/// What each virtual-board fault must end in: a diagnosis code, or success where the host is
/// expected to cope (a retry, following the board by port).
let scenarioOutcomes: [(FaultScenario, String?)] = [
    (.noUBoot, "uboot-no-usb"),
    (.layoutRejected, "layout-rejected"),
    (.fipHeaderBad, "fip-header-rejected"),
    (.writeError, "board-error"),
    (.resetAfterDetach, "rom-came-back"),
    (.getStatusStall, "transfer-error"),
    (.vanishMidPartition, "disconnected"),
    (.vanishAfterFSBL, "fsbl-not-started"),
    (.bootInterfaceUnsupported, "fsbl-not-started"),
    (.enumerationErrors, "enumeration-errors"),
    (.transientStrings, nil),
    // One open of each stage cannot read the command alternate's name: the lease opens again.
    (.alternateNameStalls, nil),
    (.serialChanges, nil),
    (.movesPort, nil),
    (.movesPortNewSerial, "other-port"),
    // Every request succeeds: only the readback (flash --verify, sampled by default) catches it.
    (.storesWrongBytes, "verify-mismatch"),
    // Faults of the fast path only: the DFU transport never sends a script.
    (.scriptRejected, nil),
    (.noFastboot, nil),
    (.fastbootOtherMMC, nil),
    (.fsblRejected, "fsbl-rejected"),
]

@Suite("virtual-board faults end in their own diagnosis")
struct FaultScenarioTests {
    @Test("every scenario is covered")
    func complete() {
        let covered = Set(scenarioOutcomes.map(\.0)).union([.none])
        #expect(Set(FaultScenario.allCases) == covered)
    }

    @Test("outcome per scenario", arguments: ["mp15-sdcard", "mp13-sdcard"], scenarioOutcomes.map { $0.0.rawValue })
    func outcome(layout: String, scenarioName: String) async throws {
        let scenario = try #require(FaultScenario(rawValue: scenarioName))
        let expected = scenarioOutcomes.first { $0.0 == scenario }?.1
        let rig = try SimulatedFlash(layout: layout, fault: scenario, timing: BoardTiming())
        do {
            let summary = try await rig.run()
            #expect(expected == nil, "succeeded, but \(scenarioName) must end in \(expected ?? "")")
            #expect(summary.partitions == rig.plan.requestOrder)
        } catch {
            let diagnosis = Diagnoser.diagnose(
                Evidence(failure: error, kernelLog: rig.board.kernelLog, consoleLog: rig.board.consoleLog))
            #expect(diagnosis.code.rawValue == expected, "\(scenarioName): \(error) → \(diagnosis.code.rawValue)")
            #expect(!rig.events.all.contains(.end), "END must not be reported on a failed run")
        }
        #expect(rig.board.protocolViolations.isEmpty, "\(rig.board.protocolViolations)")
    }

    @Test("a board that comes back on another port with its serial is followed there")
    func followsBySerial() async throws {
        let rig = try SimulatedFlash(layout: "mp15-sdcard", fault: .movesPort)
        let summary = try await rig.run()
        #expect(summary.board.port.description == "1-3")
        #expect(
            summary.timeline.contains {
                if case .followed(let device, let from) = $0.event {
                    return device.port.description == "1-3" && from.description == "1-2"
                }
                return false
            })
    }

    @Test("a new device on another port with another serial is reported, not taken")
    func otherPortReported() async throws {
        let rig = try SimulatedFlash(layout: "mp15-sdcard", fault: .movesPortNewSerial)
        await #expect(throws: FlashFailure.self) { try await rig.run() }
        #expect(
            rig.events.all.contains {
                if case .otherPort(let device) = $0 { return device.port.description == "1-3" }; return false
            })
    }
}

@Suite("§E rows produced end to end on the in-memory bus")
struct HostObservableFailureTests {
    @Test("no board at all: the wait times out with no-board")
    func noBoard() async throws {
        let rig = try SimulatedFlash(layout: "mp15-sdcard")
        let emptyBus = VirtualUSBBus(clock: SimulatedClock())
        let flasher = Flasher(
            bus: emptyBus,
            request: FlashRequest(plan: rig.plan, timeouts: TransitionTimeouts(boardArrival: .seconds(10))))
        do {
            _ = try await flasher.run()
            Issue.record("flashing without a board succeeded")
        } catch {
            #expect(error.reason == .noBoard(waited: .seconds(10)))
            #expect(Diagnoser.diagnose(Evidence(failure: error)).code.rawValue == "no-board")
        }
    }

    @Test("U-Boot's device init fails on the board's real geometry: device-init-failed, message verbatim")
    func deviceInitFailed() async throws {
        // The plan assumes no device size; the board's SD card is only 16 MiB, so userfs at
        // 0x1184400 lies past its end and U-Boot refuses the device between its enumerations.
        let rig = try SimulatedFlash(layout: "mp15-sdcard") { $0.storage = [.sdCard("mmc0", size: 16 << 20)] }
        do {
            _ = try await rig.run()
            Issue.record("succeeded on a device too small for the layout")
        } catch {
            guard case .boardReportedError(let message) = error.reason else {
                Issue.record("unexpected failure \(error)")
                return
            }
            #expect(message.hasPrefix("userfs (0x12): invalid address 0x1184400 (max="))
            let diagnosis = Diagnoser.diagnose(Evidence(failure: error, consoleLog: rig.board.consoleLog))
            #expect(diagnosis.code.rawValue == "device-init-failed")
            // Item 7: the advice says U-Boot resets the board; the tool sent the DETACH that makes
            // the armed reset happen, and the virtual U-Boot did reset.
            #expect(
                error.timeline.contains {
                    if case .detachAfterError(BoardStage.uboot) = $0.event { true } else { false }
                })
            #expect(rig.board.consoleLog.contains("resetting ..."), "\(rig.board.consoleLog)")
            #expect(diagnosis.nextSteps.contains { $0.contains("The tool sent the DETACH after reading this error") })
        }
    }
}
