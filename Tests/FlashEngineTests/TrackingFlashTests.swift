import BoardTracking
import Diagnostics
import FlashEngine
import FlashLayout
import Testing
import Timekeeping
import USBModel
import VirtualBoard

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

    @Test("two boards flashed at once, one lease each, on one tracker")
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
                    let flasher = Flasher(
                        lease: lease, request: FlashRequest(plan: rig.plan, layoutPath: rig.layoutPath))
                    let summary = try await flasher.run()
                    #expect(summary.board.port == rig.board.port)
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
