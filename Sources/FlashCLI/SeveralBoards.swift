import ArgumentParser
import BoardTracking
import FlashEngine
import FlashLayout
import Glibc
import StationRecords
import Synchronization
import TerminalText
import Timekeeping
import USBModel
import VirtualBoard

extension FlashCommand {
    /// The request for one board, from the command line's timeouts and options.
    func flashRequest(plan: PartitionPlan, selection: BoardSelection) throws -> FlashRequest {
        let timeouts = TransitionTimeouts(
            romToTFA: .seconds(tfaTimeout), tfaReconnect: .seconds(tfaTimeout), tfaToUBoot: .seconds(ubootTimeout),
            ubootReenumeration: .seconds(reenumerationTimeout), boardArrival: .seconds(waitTimeout),
            lateArrivalGrace: .seconds(max(0, lateGrace)))
        var request = FlashRequest(
            plan: plan, selection: selection, timeouts: timeouts, layoutPath: layout,
            verify: VerifyMode(rawValue: verify) ?? .sampled, resume: !noResume,
            ubootBufferSize: Int64(ubootBufferMib) << 20, transport: FlashTransport(rawValue: transport) ?? .dfu)
        request.fastbootVerify = FastbootVerifyMethod(rawValue: fastbootVerify) ?? .crc32
        request.fastbootVerifyBuffer = fastbootVerifyBuffer.flatMap(Self.hexAddress)
        request.tfaBufferBase = tfaBufferBase.flatMap(Self.tfaBufferAddress)
        // Compressed Binaries and block maps: every board sends the same decoded, mapped bytes.
        request.images = try images.prepare(plan: plan)
        return request
    }

    /// `0xC0000000` or `c0000000`.
    static func hexAddress(_ text: String) -> UInt64? {
        UInt64(text.hasPrefix("0x") || text.hasPrefix("0X") ? String(text.dropFirst(2)) : text, radix: 16)
    }

    /// A TF-A download buffer start: 32 bits, with the 16 MiB buffer below 4 GiB.
    static func tfaBufferAddress(_ text: String) -> UInt32? {
        guard let value = hexAddress(text), value + (16 << 20) <= 1 << 32 else { return nil }
        return UInt32(value)
    }

    /// `--port P --port Q …`, `--all`, `--simulate --boards N`: every board its own concurrent
    /// flash on its own lease from one tracker, keyed by port; a board that fails or vanishes
    /// ends only its own attempt. Exit 0 only when every board is done.
    func flashSeveral(plan: PartitionPlan, clock: any FlashClock) async throws {
        let mode: FlashOutputMode = json ? .json : Terminal.isInteractive(2) ? .interactive : .plain
        let output = MultiBoardOutput(mode: mode)
        var virtualBoards: [PortPath: VirtualBoard] = [:]
        let bus: any USBBus
        if simulate {
            var base = try simulationConfiguration(plan)
            // Real time (see `run()`), the timing model 10 times faster unless --realtime.
            if !realtime { base.timing = base.timing.scaled(by: 10) }
            for index in 1...boards {
                var configuration = base
                configuration.port = PortPath(bus: 1, ports: [1, index])
                configuration.storageDirectory = simulationDirectory + "/\(configuration.port)"
                mkdir(simulationDirectory, 0o755)
                mkdir(configuration.storageDirectory, 0o755)
                configuration.serial = String(base.serial.prefix(20)) + hex4(UInt16(index)).uppercased()
                let board = VirtualBoard(configuration: configuration)
                board.recordsTrace = false
                try prepareStorage(of: board)
                virtualBoards[configuration.port] = board
            }
            bus = VirtualUSBBus(
                clock: clock, boards: virtualBoards.keys.sorted(by: portOrder).map { virtualBoards[$0]! })
        } else {
            bus = try SystemBus.make()
        }
        let tracker = BoardTracker(bus: bus)
        let store: RecordStore?
        let fingerprint: LayoutFingerprint
        let request: FlashRequest
        do {
            store = try db.map { try RecordLocation.open($0) }
            fingerprint = try LayoutFingerprint(path: layout)
            request = try flashRequest(plan: plan, selection: .any)
        } catch {
            Terminal.error("error: \(error)")
            throw ExitCode.failure
        }
        let settings = BoardJobSettings(
            tracker: tracker, layout: fingerprint, plan: plan, request: request,
            store: store, status: nil, output: output, simulated: simulate)

        let explicit = ports.compactMap(PortPath.init)
        let initial: [PortPath]
        if !explicit.isEmpty {
            initial = explicit
        } else if simulate {
            initial = virtualBoards.keys.sorted(by: portOrder)
        } else {
            initial = try await tracker.devices()
                .filter { $0.kind.family == .stm32mp && $0.kind.stage == .rom && !$0.leased }
                .map(\.identity.port).sorted(by: portOrder)
        }
        Interrupts.arm()
        if json {
            output.json(
                "start",
                [
                    "layout": .string(layout), "mode": .string(simulate ? "simulate" : "usb"),
                    "ports": .array(initial.map { .string($0.description) }),
                ])
        } else {
            output.line(
                "Flashing \(TerminalText.field(layout)) on \(initial.count) board(s)"
                    + (all && !simulate ? " (and any that appear within \(Int(waitTimeout)) s)" : ""))
        }
        let watchForMore = all && !simulate
        let boardsByPort = virtualBoards
        let waitSeconds = waitTimeout
        let outcomes = try await Interrupts.cancellingOnInterrupt {
            await withTaskGroup(of: BoardOutcome.self) { group in
                var started = Set<PortPath>()
                for port in initial {
                    started.insert(port)
                    let job = BoardJob(settings: settings, port: port, virtualBoard: boardsByPort[port])
                    group.addTask { await job.run() }
                }
                if watchForMore, let events = try? await bus.subscribe() {
                    let deadline = bus.clock.now + .seconds(waitSeconds)
                    while !Task.isCancelled, let event = try? await events.next(until: deadline) {
                        guard event.action == .add, !started.contains(event.device.port) else { continue }
                        let kind = tracker.families.classify(event.device)
                        guard kind.family == .stm32mp, kind.stage == .rom else { continue }
                        started.insert(event.device.port)
                        let job = BoardJob(settings: settings, port: event.device.port, virtualBoard: nil)
                        group.addTask { await job.run() }
                    }
                }
                var outcomes: [BoardOutcome] = []
                for await outcome in group { outcomes.append(outcome) }
                return outcomes.sorted { portOrder($0.port, $1.port) }
            }
        }
        for board in virtualBoards.values { board.storage.closeAll() }
        report(outcomes, output: output)
        let signal = Interrupts.received.load(ordering: .sequentiallyConsistent)
        if signal != 0 { throw SeveralBoardsFailed(status: Interrupts.exitStatus(for: signal)) }
        if outcomes.isEmpty || outcomes.contains(where: { $0.result != .done }) { throw SeveralBoardsFailed() }
    }

    /// The summary table (text) or the last JSON line: `done` when every board is done, else `failed`.
    func report(_ outcomes: [BoardOutcome], output: MultiBoardOutput) {
        let done = outcomes.filter { $0.result == .done }.count
        if json {
            let boards: [JSONValue] = outcomes.map { outcome in
                .object([
                    "port": .string(outcome.port.description), "serial": outcome.serial.map { .string($0) } ?? .null,
                    "result": .string(outcome.result.rawValue), "code": outcome.code.map { .string($0) } ?? .null,
                    "seconds": .number((outcome.seconds * 1000).rounded() / 1000),
                ])
            }
            let fields: [String: JSONValue] = [
                "boards": .array(boards), "done": .number(Double(done)),
                "failed": .number(Double(outcomes.count - done)),
            ]
            // A signal never ends in success, even when every board had already finished.
            let interrupted = Interrupts.received.load(ordering: .sequentiallyConsistent) != 0
            if done == outcomes.count && done > 0 && !interrupted {
                output.json("done", fields)
            } else {
                let (code, cause) =
                    interrupted
                    ? ("cancelled", "interrupted by a signal; \(done) of \(outcomes.count) boards done")
                    : outcomes.isEmpty
                        ? ("no-board", "no STM32MP board in the ROM code was found")
                        : ("boards-failed", "\(outcomes.count - done) of \(outcomes.count) boards failed")
                output.json("failed", fields.merging(["code": .string(code), "cause": .string(cause)]) { $1 })
            }
            return
        }
        output.line("")
        output.line("PORT      SERIAL                    RESULT     CODE                    SECONDS")
        func pad(_ text: String, _ width: Int) -> String {
            text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
        }
        for outcome in outcomes {
            output.line(
                pad(outcome.port.description, 10) + pad(TerminalText.escaped(outcome.serial ?? "–"), 26)
                    + pad(outcome.result.rawValue, 11)
                    + pad(outcome.code ?? "", 24) + FlashOutput.formatSeconds(.seconds(outcome.seconds)))
        }
        output.line("\(done) of \(outcomes.count) board(s) done" + (outcomes.isEmpty ? ": no board found" : ""))
        if Interrupts.received.load(ordering: .sequentiallyConsistent) != 0 {
            output.line("cancelled: interrupted by a signal; rerun the same command to flash the boards not done")
        }
    }
}

/// Port paths in the order of their numbers (`1-1.2` before `1-1.10`).
func portOrder(_ a: PortPath, _ b: PortPath) -> Bool {
    ([a.bus] + a.ports).lexicographicallyPrecedes([b.bus] + b.ports)
}

/// A several-boards run ended with a board not done, or by a signal; everything is reported
/// already. `status`: the exit status (1, or 128 + the signal).
struct SeveralBoardsFailed: Error {
    var status: Int32 = 1
}
