public import DFU
import FlashLayout
import ImageSources
public import Logging
import Timekeeping
public import USBModel

/// Runs `FlashStateMachine`'s actions against a `USBBus` (real USB or the virtual board): finds
/// and opens the board, reads GetPhase, streams files, sends DETACH and follows the board across
/// re-enumerations by port path first and serial second. Everything it observes goes into a
/// timeline that a failure carries, for the diagnosis.
///
/// One `Flasher` runs once, on one task.
public final class Flasher: Sendable {
    private let bus: any USBBus
    private let request: FlashRequest
    private let emit: @Sendable (FlashEvent) -> Void
    private let dfuTimeouts: DFUTimeouts
    private let recorder: TimelineRecorder

    /// - Parameters:
    ///   - logger: receives every timeline entry at `debug` (what `flash --verbose` shows).
    public init(
        bus: any USBBus, request: FlashRequest, dfuTimeouts: DFUTimeouts = .init(),
        logger: Logger = Logger(label: "stm32mp-flash.engine", factory: { _ in SwiftLogNoOpLogHandler() }),
        events: @escaping @Sendable (FlashEvent) -> Void = { _ in }
    ) {
        self.bus = bus
        self.request = request
        self.emit = events
        self.dfuTimeouts = dfuTimeouts
        recorder = TimelineRecorder(clock: bus.clock, logger: logger)
    }

    /// Flashes the board.
    /// - Returns: the summary, only when the board said END and every selected partition was sent.
    /// - Throws: `FlashFailure` with the timeline of everything observed.
    public func run() async throws(FlashFailure) -> FlashSummary {
        var run = Run(flasher: self)
        do {
            return try await run.execute()
        } catch let failure as FlashFailure {
            throw failure
        } catch is CancellationError {
            throw run.failure(.cancelled)
        } catch let error as DFUError {
            throw run.failure(run.reason(for: error))
        } catch let error as USBTransferError {
            throw run.failure(.transferFailed(error))
        } catch {
            throw run.failure(.protocolError("\(error)"))
        }
    }

    /// The mutable state of one run; lives on the calling task only.
    private struct Run {
        let flasher: Flasher
        var machine: FlashStateMachine
        var port: PortPath?
        var device: DFUDevice?
        /// The last identity opened (kept after the END DETACH closes the device).
        var board: USBDeviceIdentity?
        var phase: UInt8?
        var results: [PhaseResult] = []
        var transfers = 0
        let started: Duration

        init(flasher: Flasher) {
            self.flasher = flasher
            machine = FlashStateMachine(plan: flasher.request.plan, timeouts: flasher.request.timeouts)
            started = flasher.bus.clock.now
        }

        var bus: any USBBus { flasher.bus }
        var plan: PartitionPlan { flasher.request.plan }
        var recorder: TimelineRecorder { flasher.recorder }

        func failure(_ reason: FlashFailure.Reason) -> FlashFailure {
            FlashFailure(reason, stage: machine.stage, phase: phase, timeline: recorder.entries)
        }

        mutating func execute() async throws -> FlashSummary {
            try await bus.startWatching()
            let found = try await findBoard()
            port = found
            let opened = try await open(port: found)
            var action = machine.boardOpened(snapshot(opened))
            while true {
                switch action {
                case .readPhase:
                    let before = machine.stage
                    action = machine.phaseRead(try await readPhase())
                    if machine.stage != before {
                        recorder.add(
                            .note, stage: machine.stage,
                            detail: "GetPhase shows \(machine.stage.displayName), not \(before.displayName)")
                        flasher.emit(.stageConfirmed(machine.stage))
                    }
                case .send(let id, let mayLeave):
                    try await send(id, deviceMayLeave: mayLeave)
                    action = machine.phaseSent()
                case .detachAndAwait(let expecting, let timeout):
                    action = try await detachAndAwait(expecting: expecting, timeout: timeout)
                case .detachAtEnd:
                    flasher.emit(.end)
                    recorder.add(.detachSent, stage: machine.stage, detail: "END")
                    try await current().detach()
                    await closeCurrent()
                    action = machine.endDetached()
                case .fail(let reason):
                    if case .boardReportedError(let message) = reason { noteLayoutLine(message) }
                    throw failure(reason)
                case .succeed:
                    guard let board else { throw failure(.protocolError("no board at END")) }
                    return FlashSummary(
                        board: board, phases: results, duration: bus.clock.now - started, controlTransfers: transfers,
                        timeline: recorder.entries, partitions: machine.sent.filter { plan.requestOrder.contains($0) })
                }
            }
        }

        func current() throws -> DFUDevice {
            guard let device else { throw failure(.protocolError("no open board")) }
            return device
        }

        // MARK: Finding and opening the board

        func isSTM32MPDFU(_ identity: USBDeviceIdentity) -> Bool {
            identity.vendorID == 0x0483 && identity.productID == 0xDF11
        }

        func matches(_ identity: USBDeviceIdentity) -> Bool {
            guard isSTM32MPDFU(identity) else { return false }
            switch flasher.request.selection {
            case .any: return true
            case .port(let wanted): return identity.port == wanted
            case .serial(let wanted): return identity.serial == wanted
            }
        }

        /// The selected board's port, waiting for it to appear (with a countdown) if needed.
        mutating func findBoard() async throws -> PortPath {
            let clock = bus.clock
            let deadline = clock.now + flasher.request.timeouts.boardArrival
            while true {
                let candidates = try await bus.dfuDevices().filter(matches)
                if candidates.count == 1 { return candidates[0].port }
                if candidates.count > 1 { throw failure(.severalBoards(candidates)) }
                let remaining = deadline - clock.now
                guard remaining > .zero else { throw failure(.noBoard(waited: flasher.request.timeouts.boardArrival)) }
                flasher.emit(.waitingForBoard(expecting: nil, remaining: remaining))
                if let event = try await bus.nextEvent(until: min(deadline, clock.now + .seconds(1))) {
                    recorder.add(event.action == .add ? .added : .removed, device: event.device)
                }
            }
        }

        /// Opens the DFU function on `port` and records who answered.
        mutating func open(port: PortPath) async throws -> DFUDevice {
            let transport: any USBControlTransport
            do {
                transport = try await bus.open(port: port)
            } catch let error as USBTransferError {
                throw failure(.openFailed(error))
            }
            let opened: DFUDevice
            do {
                opened = try await DFUDevice.open(transport, clock: bus.clock, timeouts: flasher.dfuTimeouts)
            } catch let error as DFUError {
                await transport.close()
                throw failure(
                    .openFailed(
                        error.transferError ?? USBTransferError(.io, operation: error.operation, detail: "\(error)")))
            }
            device = opened
            board = opened.identity
            let stage = BoardStage.classify(
                vendorID: opened.identity.vendorID, productID: opened.identity.productID,
                product: opened.identity.product)
            let alternates = opened.alternates.compactMap(\.string).joined(separator: " ")
            recorder.add(.opened, stage: stage, device: opened.identity, detail: alternates)
            flasher.emit(.board(opened.identity, stage: stage))
            return opened
        }

        func snapshot(_ device: DFUDevice) -> BoardSnapshot {
            BoardSnapshot(
                stage: BoardStage.classify(
                    vendorID: device.identity.vendorID, productID: device.identity.productID,
                    product: device.identity.product),
                phases: Set(device.alternates.compactMap { $0.name?.phaseID }))
        }

        mutating func closeCurrent() async {
            if let device {
                transfers += device.controlTransferCount
                await device.transport.close()
            }
            device = nil
        }

        // MARK: Phases

        mutating func readPhase() async throws -> GetPhaseReply {
            let before = machine.stage
            let reply: GetPhaseReply
            do {
                reply = try await current().getPhase()
            } catch let error as DFUError {
                throw failure(reason(for: error))
            }
            recorder.add(.phase, stage: before, detail: describe(reply))
            return reply
        }

        mutating func send(_ id: UInt8, deviceMayLeave: Bool) async throws {
            phase = id
            let device = try current()
            let stage = machine.stage
            let source: any ByteSource
            let name: String
            var image: (prepared: PreparedImage, reader: ImageReader)?
            if id == 0 {
                source = MemoryByteSource(plan.payload.bytes)
                name = "flashlayout"
            } else if let file = plan.files[id] {
                do {
                    if let prepared = flasher.request.images[id] {
                        let reader = try ImageReader(
                            path: prepared.path, compression: prepared.compression, size: prepared.size)
                        image = (prepared, reader)
                        source = WholeImageSource(reader: reader)
                    } else {
                        source = try FileByteSource(path: file.path)
                    }
                } catch let error as ImageSourceError {
                    throw failure(.badImage(error))
                } catch {
                    throw failure(.protocolError("cannot read \(file.path): \(error)"))
                }
                name =
                    plan.bootStages.first { $0.line.id == id }?.line.name ?? plan.partition(id: id)?.partition.line.name
                    ?? phaseHex(id)
            } else {
                throw failure(.phaseWithoutFile(id))
            }
            if let image, ImageSending.usesRanges(image.prepared, stage: stage, plan: plan, phase: id) {
                try await sendRanges(id, name: name, image: image.prepared, reader: image.reader)
                return
            }
            if let image, image.prepared.selection != .whole {
                recorder.add(
                    .note, stage: stage,
                    detail:
                        "\(phaseHex(id)) \(name): sent whole; ranges go only to MMC partitions of U-Boot's second enumeration"
                )
            }
            let total = source.count
            flasher.emit(.phaseStarted(phase: id, name: name, bytes: total, stage: stage))
            recorder.add(.sendStarted, stage: stage, detail: "\(phaseHex(id)) \(name) \(total) bytes")
            let report = try await transferring(id, total: total) { progress in
                try await device.download(source, phase: id, deviceMayLeave: deviceMayLeave, progress: progress)
            }
            finished(
                PhaseResult(
                    phase: id, name: name, stage: stage, bytes: report.bytes, duration: report.duration,
                    controlTransfers: report.controlTransfers),
                detail: "\(phaseHex(id)) \(report.bytes) bytes in \(milliseconds(report.duration)) ms")
        }

        /// Runs a transfer with a progress event every 1 % (at least 64 KiB). A DFU error is explained
        /// by the board's own message when it has one; an image error is the image's.
        mutating func transferring<Report>(
            _ id: UInt8, total: Int64, _ body: (@escaping @Sendable (Int64) -> Void) async throws -> Report
        ) async throws -> Report {
            let emit = flasher.emit
            let gate = ProgressGate(step: max(total / 100, 64 * 1024))
            do {
                return try await body { sent in
                    if gate.shouldReport(sent, total: total) { emit(.progress(phase: id, sent: sent, total: total)) }
                }
            } catch let error as DFUError {
                throw failure(await explainSendFailure(error))
            } catch let error as ImageSourceError {
                throw failure(.badImage(error))
            }
        }

        /// A phase was sent: keep its result, note it, tell the user.
        mutating func finished(_ result: PhaseResult, detail: String) {
            results.append(result)
            recorder.add(.sendDone, stage: result.stage, detail: detail)
            flasher.emit(.phaseFinished(result))
        }

        /// A partition sent as the ranges of its map (or data extents): only those bytes go out.
        mutating func sendRanges(_ id: UInt8, name: String, image: PreparedImage, reader: ImageReader) async throws {
            let device = try current()
            let stage = machine.stage
            let total = image.bytesToSend
            let how = image.map.map { "map \($0.path)" } ?? "data extents (--skip-holes)"
            flasher.emit(.phaseStarted(phase: id, name: name, bytes: total, stage: stage))
            recorder.add(
                .sendStarted, stage: stage,
                detail:
                    "\(phaseHex(id)) \(name) \(total) of \(image.size) bytes in \(image.extents.count) ranges (\(how))")
            let clock = bus.clock
            let report = try await transferring(id, total: total) { progress in
                try await ImageSending.sendRanges(
                    device: device, phase: id, image: image, reader: reader, clock: clock, progress: progress)
            }
            if let from = report.contiguousFrom {
                recorder.add(
                    .note, stage: stage,
                    detail:
                        "\(phaseHex(id)) \(name): \(report.beyondAddressLimit) ranges lie beyond the 4 GiB the command offset can address; sent as one contiguous run from offset \(from), holes included"
                )
            }
            finished(
                PhaseResult(
                    phase: id, name: name, stage: stage, bytes: report.bytes, duration: report.duration,
                    controlTransfers: report.controlTransfers),
                detail:
                    "\(phaseHex(id)) \(report.bytes) bytes in \(report.segments) ranges in \(milliseconds(report.duration)) ms"
            )
        }

        /// A failed download: ask the board why (GetPhase 0xFF carries U-Boot's or TF-A's first
        /// error), else report the USB error.
        mutating func explainSendFailure(_ error: DFUError) async -> FlashFailure.Reason {
            recorder.add(.transferError, stage: machine.stage, detail: "\(error)")
            if let transfer = error.transferError, transfer.kind == .noDevice { return .transferFailed(transfer) }
            if let device, let reply = try? await device.getPhase() {
                recorder.add(.phase, stage: machine.stage, detail: describe(reply))
                if reply.phase == 0xFF {
                    let message = reply.message ?? "Unspecified"
                    noteLayoutLine(message)
                    return .boardReportedError(message)
                }
            }
            return reason(for: error)
        }

        func reason(for error: DFUError) -> FlashFailure.Reason {
            if let transfer = error.transferError { return .transferFailed(transfer) }
            return .protocolError("\(error)")
        }

        // MARK: Re-enumeration

        mutating func detachAndAwait(expecting: BoardStage, timeout: Duration) async throws -> FlashStateMachine.Action
        {
            let from = machine.stage
            let previous = try current().identity
            recorder.add(
                .detachSent, stage: from,
                detail: "expecting \(expecting.displayName) within \(Int(timeout.inSeconds)) s")
            flasher.emit(.detached(from: from, expecting: expecting, timeout: timeout))
            try await current().detach()
            await closeCurrent()
            let clock = bus.clock
            let detachedAt = clock.now
            let deadline = detachedAt + timeout
            while clock.now < deadline {
                // Wake at least once a second to tell the user how long is left.
                guard let event = try await bus.nextEvent(until: min(deadline, clock.now + .seconds(1))) else {
                    if clock.now < deadline {
                        flasher.emit(.waitingForBoard(expecting: expecting, remaining: deadline - clock.now))
                    }
                    continue
                }
                let identity = event.device
                recorder.add(event.action == .add ? .added : .removed, device: identity)
                guard event.action == .add, isSTM32MPDFU(identity) || identity.vendorID == 0x0483 else { continue }
                let samePort = identity.port == port
                let sameSerial =
                    previous.serial.map { !$0.isEmpty && !$0.allSatisfy { $0 == "0" } && $0 == identity.serial }
                    ?? false
                guard samePort || sameSerial else {
                    recorder.add(
                        .otherPort, device: identity,
                        detail:
                            "a DFU device appeared on \(identity.port) while the board on \(port.map(\.description) ?? "?") was away"
                    )
                    flasher.emit(.otherPort(identity))
                    continue
                }
                if !samePort {
                    recorder.add(
                        .note, device: identity,
                        detail: "the board came back on port \(identity.port) (same serial); following it")
                    port = identity.port
                }
                do {
                    let opened = try await open(port: identity.port)
                    let to = snapshot(opened).stage
                    flasher.emit(
                        .reenumerated(from: from, to: to, device: opened.identity, after: clock.now - detachedAt))
                    return machine.boardOpened(snapshot(opened))
                } catch let failure as FlashFailure {
                    // A device that vanishes again while we open it (enumeration trouble): keep waiting.
                    recorder.add(.transferError, device: identity, detail: "\(failure.reason)")
                    if case .openFailed(let error) = failure.reason, error.kind == .access { throw failure }
                }
            }
            return machine.reconnectTimedOut(after: clock.now - detachedAt)
        }

        // MARK: Helpers

        func describe(_ reply: GetPhaseReply) -> String {
            switch reply.phase {
            case 0xFF: return "FF error: \(reply.message ?? "")"
            case 0xFE: return "FE END"
            default:
                let address = String(reply.address, radix: 16, uppercase: true)
                return "\(phaseHex(reply.phase)) address 0x\(address) offset \(reply.offset)"
                    + (reply.needsDetach ? " detach requested" : "")
            }
        }

        /// U-Boot numbers lines of what we sent; say which line of the user's file that is.
        func noteLayoutLine(_ message: String) {
            guard message.hasPrefix("Layout line ") else { return }
            let digits = message.dropFirst("Layout line ".count).prefix { $0.isNumber }
            guard let payloadLine = Int(digits), let source = plan.payload.sourceLine(forPayloadLine: payloadLine)
            else { return }
            recorder.add(
                .note, stage: machine.stage,
                detail: "U-Boot's layout line \(payloadLine) is line \(source) of \(flasher.request.layoutPath)")
        }
    }
}

/// Whole milliseconds, for timeline details.
func milliseconds(_ duration: Duration) -> Int { Int((duration.inSeconds * 1000).rounded()) }

/// Thread-safe append-only timeline, stamped with the bus clock.
final class TimelineRecorder: Sendable {
    private let clock: any FlashClock
    private let origin: Duration
    private let logger: Logger
    private let storage = LockedBox<[TimelineEntry]>([])

    init(clock: any FlashClock, logger: Logger) {
        self.clock = clock
        self.logger = logger
        origin = clock.now
    }

    func add(
        _ kind: TimelineEntry.Kind, stage: BoardStage? = nil, device: USBDeviceIdentity? = nil, detail: String? = nil
    ) {
        let time = (clock.now - origin).inSeconds
        storage.withLock {
            $0.append(TimelineEntry(time: time, kind: kind, stage: stage, device: device, detail: detail))
        }
        logger.debug(
            "\(kind.rawValue)\(stage.map { " [\($0.displayName)]" } ?? "")\(device.map { " \($0.port) \($0.vendorProduct) \($0.product ?? "")" } ?? "")\(detail.map { ": \($0)" } ?? "")",
            metadata: ["t": "\((time * 1000).rounded() / 1000)"])
    }

    var entries: [TimelineEntry] { storage.withLock { $0 } }
}

/// Decides when a progress callback is worth an event (every `step` bytes, and at the end).
final class ProgressGate: Sendable {
    private let step: Int64
    private let last = LockedBox<Int64>(-1)

    init(step: Int64) { self.step = max(1, step) }

    func shouldReport(_ sent: Int64, total: Int64) -> Bool {
        last.withLock { last in
            guard sent == total || last < 0 || sent - last >= step else { return false }
            last = sent
            return true
        }
    }
}
