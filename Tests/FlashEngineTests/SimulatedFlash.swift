import FlashCLI
import FlashEngine
import FlashLayout
import Foundation
import TestSupport
import Testing
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
        examples folder: String? = nil, deviceSizes: [String: UInt64] = [:],
        configure: (inout BoardConfiguration) -> Void = { _ in }
    ) throws {
        let examples = try folder ?? Self.exampleSet.get().path
        layoutPath = examples + "/\(name).tsv"
        let check = LayoutChecker.check(path: layoutPath)
        precondition(!check.hasErrors, "\(check.diagnostics)")
        plan = try PartitionPlanner.plan(
            check.lines, options: PlanOptions(deviceSizes: deviceSizes, layoutDirectory: examples)
        ).get()
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
        ubootBuffer: Int64 = 8 << 20, transport: FlashTransport = .dfu,
        fastbootVerify: FastbootVerifyMethod = .crc32, fastbootVerifyChunk: Int64 = 32 << 20,
        tfaBufferBase: UInt32? = nil, onEvent: @escaping @Sendable (FlashEvent) -> Void = { _ in }
    ) async throws(FlashFailure) -> FlashSummary {
        let events = self.events
        var request = FlashRequest(
            plan: plan, timeouts: timeouts, layoutPath: layoutPath, verify: verify, resume: resume,
            ubootBufferSize: ubootBuffer, transport: transport)
        request.fastbootVerify = fastbootVerify
        request.fastbootVerifyChunk = fastbootVerifyChunk
        request.tfaBufferBase = tfaBufferBase
        let flasher = Flasher(
            bus: bus,
            request: request,
            events: {
                events.append($0)
                onEvent($0)
            })
        return try await flasher.run()
    }

    /// Every requested file byte-identical where the board's own plan (its real geometry) puts
    /// it, and the GPT on each device as `stm32prog` would write it (read with sfdisk). Returns
    /// the board's plans of the devices.
    @discardableResult
    func checkWrittenAsPlanned() throws -> [DevicePlan] {
        var plans: [DevicePlan] = []
        for device in plan.devices where device.partitions.contains(where: { $0.line.isRequested }) {
            let storage = try #require(board.storage.device(named: device.target.description))
            let geometry = DeviceGeometry(
                size: storage.size, eraseSize: storage.eraseSize, bootPartitionSize: storage.bootPartitionSize)
            let boardPlan = try DevicePlanner.plan(
                LayoutDevice(target: device.target, lines: device.partitions.map(\.line)), geometry: geometry
            ).get()
            plans.append(boardPlan)
            for partition in boardPlan.partitions where partition.line.isRequested {
                let file = try #require(plan.files[partition.line.id])
                let expected = Array(try Data(contentsOf: URL(fileURLWithPath: file.path)))
                let written = try readBytes(image(device, partition), offset: partition.offset, length: expected.count)
                #expect(written == expected, "\(partition.line.name) differs on \(device.target)")
            }
            if boardPlan.writesGPT {
                let table = try Sfdisk.read(board.storage.path(device: device.target.description))
                let inGPT = boardPlan.partitions.filter { $0.gptNumber != nil }
                #expect(table.partitions.count == inGPT.count)
                for (entry, planned) in zip(table.partitions, inGPT) {
                    #expect(entry.name == planned.line.name)
                    #expect(entry.start * 512 == planned.offset)
                    #expect(entry.size * 512 == planned.size)
                    #expect(entry.type == planned.gptTypeGUID)
                    if let fixed = planned.gptUniqueGUID { #expect(entry.uuid == fixed) }
                }
            }
        }
        return plans
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
