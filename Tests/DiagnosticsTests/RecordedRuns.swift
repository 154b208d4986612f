import BoardTracking
import DFU
import FlashCLI
import FlashEngine
import FlashLayout
import Foundation
import TestSupport
import Timekeeping
import USBModel
import VirtualBoard
import VirtualBoardTestSupport

/// Diagnosis fixtures in the form the engine really produces: each is the failure (with its typed
/// timeline) of a real engine run on the virtual board with a fault scenario, recorded once per
/// test process. Tests add the host evidence (kernel log, console, environment) around it.
enum Recorded {
    /// The generated example layouts (mke2fs once per process).
    static let examples: Result<TemporaryDirectory, any Error> = Result {
        let directory = try TemporaryDirectory(prefix: "stm32mp-diagnosis")
        _ = try ExampleSetGenerator(outputDirectory: directory.path).generate()
        return directory
    }

    /// Runs `layout` on a virtual board; the run must fail.
    static func failure(
        _ layout: String, fault: FaultScenario = .none, timing: BoardTiming = .zero,
        timeouts: TransitionTimeouts = TransitionTimeouts(lateArrivalGrace: .zero),
        configure: @escaping (inout BoardConfiguration) -> Void = { _ in }
    ) async throws -> FlashFailure {
        let folder = try examples.get().path
        let path = folder + "/\(layout).tsv"
        let check = LayoutChecker.check(path: path)
        let plan = try PartitionPlanner.plan(check.lines, options: PlanOptions(layoutDirectory: folder)).get()
        let soc: VirtualSoC = layout.hasPrefix("mp13") ? .mp13 : layout.hasPrefix("mp25") ? .mp25 : .mp15
        let bench = try VirtualBoardBench { configuration in
            configuration.soc = soc
            configuration.storage = [.sdCard("mmc0", size: 64 << 20), .eMMC("mmc1", size: 64 << 20)]
            configuration.timing = timing
            configuration.fault = fault
            configure(&configuration)
        }
        let flasher = Flasher(bus: bench.bus, request: FlashRequest(plan: plan, timeouts: timeouts, layoutPath: path))
        do {
            _ = try await flasher.run()
        } catch {
            return error
        }
        throw RecordingError(description: "\(layout) with \(fault.rawValue) succeeded; a failure was expected")
    }

    /// MP15: TF-A took the FIP and detached; U-Boot never enumerated.
    static func tfaSilence() async throws -> FlashFailure { try await failure("mp15-sdcard", fault: .noUBoot) }
    /// MP13: the ROM → TF-A re-enumeration worked; then U-Boot never enumerated.
    static func tfaSilenceAfterReenumeration() async throws -> FlashFailure {
        try await failure("mp13-sdcard", fault: .noUBoot)
    }
    /// MP13: a storage TF-A was sent; nothing came back after the ROM's DETACH.
    static func romSilence() async throws -> FlashFailure {
        try await failure("mp13-sdcard", fault: .bootInterfaceUnsupported)
    }
    /// MP15: U-Boot's enumeration 2 comes 5 s after the DETACH, the wait is 1 s.
    static func ubootSlow(grace: Duration = .zero) async throws -> FlashFailure {
        var timing = BoardTiming.zero
        timing.ubootReenumeration = .seconds(5)
        return try await failure(
            "mp15-sdcard", timing: timing,
            timeouts: TransitionTimeouts(ubootReenumeration: .seconds(1), lateArrivalGrace: grace))
    }
    /// MP15: the ROM came back after the DETACH to U-Boot.
    static func romCameBack() async throws -> FlashFailure {
        try await failure("mp15-sdcard", fault: .resetAfterDetach)
    }
    /// MP15: U-Boot enumerated on another port with another serial.
    static func otherPort() async throws -> FlashFailure {
        try await failure("mp15-sdcard", fault: .movesPortNewSerial)
    }
    /// MP15: the board vanished in the middle of a partition.
    static func vanished() async throws -> FlashFailure {
        try await failure("mp15-sdcard", fault: .vanishMidPartition)
    }
    /// MP15 on a full-speed link, U-Boot never enumerating.
    static func fullSpeedTFASilence() async throws -> FlashFailure {
        try await failure("mp15-sdcard", fault: .noUBoot) { $0.speed = .full }
    }

    /// The same failure with another reason, stage or phase (the timeline stays the engine's).
    static func with(
        _ recorded: FlashFailure, reason: FlashFailure.Reason, stage: BoardStage? = nil, phase: UInt8? = nil
    ) -> FlashFailure {
        FlashFailure(
            reason, stage: stage ?? recorded.stage, phase: phase ?? recorded.phase, timeline: recorded.timeline)
    }

    /// The timeline up to and including the first entry `stop` accepts.
    static func prefix(_ failure: FlashFailure, through stop: (TimelineEvent) -> Bool) -> [TimelineEntry] {
        guard let end = failure.timeline.firstIndex(where: { stop($0.event) }) else { return failure.timeline }
        return Array(failure.timeline[...end])
    }
}

struct RecordingError: Error, CustomStringConvertible {
    let description: String
}
