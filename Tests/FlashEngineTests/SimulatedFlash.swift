import FlashCLI
import FlashEngine
import FlashLayout
import Foundation
import TestSupport
import Timekeeping
import USBModel
import VirtualBoard
import VirtualBoardTestSupport

/// A generated example set plus a virtual board on a simulated clock: the rig every end-to-end
/// engine test uses.
final class SimulatedFlash: @unchecked Sendable {
    let bench: VirtualBoardBench
    let layoutPath: String
    let plan: PartitionPlan
    let events = EventLog()

    var board: VirtualBoard { bench.board }
    var bus: VirtualUSBBus { bench.bus }

    /// Shared example binaries: generating them (mke2fs) once per process keeps tests fast. The
    /// folder lives as long as the process.
    static let exampleSet: Result<TemporaryDirectory, any Error> = Result {
        let directory = try TemporaryDirectory(prefix: "stm32mp-examples")
        _ = try ExampleSetGenerator(outputDirectory: directory.path).generate()
        return directory
    }

    init(
        layout name: String, fault: FaultScenario = .none, timing: BoardTiming = .zero, listLag: Duration = .zero,
        examples folder: String? = nil,
        configure: (inout BoardConfiguration) -> Void = { _ in }
    ) throws {
        let examples = try folder ?? Self.exampleSet.get().path
        layoutPath = examples + "/\(name).tsv"
        let check = LayoutChecker.check(path: layoutPath)
        precondition(!check.hasErrors, "\(check.diagnostics)")
        plan = try PartitionPlanner.plan(check.lines, options: PlanOptions(layoutDirectory: examples)).get()
        let soc: VirtualSoC = name.hasPrefix("mp13") ? .mp13 : name.hasPrefix("mp25") ? .mp25 : .mp15
        bench = try VirtualBoardBench(listLag: listLag) { configuration in
            configuration.soc = soc
            configuration.storage = [.sdCard("mmc0", size: 64 << 20), .eMMC("mmc1", size: 64 << 20)]
            configuration.timing = timing
            configuration.fault = fault
            configure(&configuration)
        }
    }

    func run(
        timeouts: TransitionTimeouts = .init(), verify: VerifyMode = .sampled, resume: Bool = true,
        ubootBuffer: Int64 = 8 << 20, onEvent: @escaping @Sendable (FlashEvent) -> Void = { _ in }
    ) async throws(FlashFailure) -> FlashSummary {
        let events = self.events
        let flasher = Flasher(
            bus: bus,
            request: FlashRequest(
                plan: plan, timeouts: timeouts, layoutPath: layoutPath, verify: verify, resume: resume,
                ubootBufferSize: ubootBuffer),
            events: {
                events.append($0)
                onEvent($0)
            })
        return try await flasher.run()
    }

    /// The storage image holding a planned partition.
    func image(_ device: DevicePlan, _ partition: PlannedPartition) -> String {
        board.storage.path(device: device.target.description, hardwarePartition: partition.hardwarePartition)
    }
}

/// Events collected from a run.
final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [FlashEvent] = []

    func append(_ event: FlashEvent) { lock.withLock { storage.append(event) } }
    var all: [FlashEvent] { lock.withLock { storage } }
}

/// Reads `length` bytes at `offset` of a file.
func readBytes(_ path: String, offset: UInt64, length: Int) throws -> [UInt8] {
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.seek(toOffset: offset)
    return Array(try handle.read(upToCount: length) ?? Data())
}
