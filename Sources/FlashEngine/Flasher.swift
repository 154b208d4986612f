public import BoardTracking
import BootImages
public import DFU
import Fastboot
import FlashLayout
import ImageSources
public import Logging
import Timekeeping
import UBootScript
public import USBModel

/// Drives the GetPhase protocol (`FlashStateMachine`'s actions) over a `BoardLease`: reads
/// GetPhase, streams files, sends DETACH; finding, opening and following the board across
/// re-enumerations is the lease's job. Everything observed goes into a timeline of typed values
/// that a failure carries, for the diagnosis.
///
/// One `Flasher` runs once, on one task. Several flashers, one lease each, may run at once on one
/// tracker (a station).
public final class Flasher: Sendable {
    private let source: LeaseSource
    let request: FlashRequest
    let emit: @Sendable (FlashEvent) -> Void
    let dfuTimeouts: DFUTimeouts
    private let recorder: TimelineRecorder
    private let clock: any FlashClock

    /// What the tracker knows boards to be.
    var families: BoardFamilies {
        switch source {
        case .lease(let lease): lease.tracker.families
        case .tracker(let tracker): tracker.families
        }
    }

    /// Where the lease comes from: given, or made from the request's selection on a new tracker.
    private enum LeaseSource: Sendable {
        case lease(BoardLease)
        case tracker(BoardTracker)
    }

    /// Flashes the board `lease` is for (the caller releases the lease).
    /// - Parameters:
    ///   - logger: receives every timeline entry at `debug` (what `flash --verbose` shows).
    public convenience init(
        lease: BoardLease, request: FlashRequest, dfuTimeouts: DFUTimeouts = .init(),
        logger: Logger = Logger(label: "stm32mp-flash.engine", factory: { _ in SwiftLogNoOpLogHandler() }),
        events: @escaping @Sendable (FlashEvent) -> Void = { _ in }
    ) {
        self.init(source: .lease(lease), request: request, dfuTimeouts: dfuTimeouts, logger: logger, events: events)
    }

    /// Flashes the board `request.selection` names on `bus`, with a tracker of its own (one board
    /// per process; a station shares one tracker and passes leases instead).
    public convenience init(
        bus: any USBBus, request: FlashRequest, dfuTimeouts: DFUTimeouts = .init(),
        logger: Logger = Logger(label: "stm32mp-flash.engine", factory: { _ in SwiftLogNoOpLogHandler() }),
        events: @escaping @Sendable (FlashEvent) -> Void = { _ in }
    ) {
        self.init(
            tracker: BoardTracker(bus: bus), request: request, dfuTimeouts: dfuTimeouts, logger: logger, events: events)
    }

    /// Flashes the board `request.selection` names, leased from `tracker` for the run.
    public convenience init(
        tracker: BoardTracker, request: FlashRequest, dfuTimeouts: DFUTimeouts = .init(),
        logger: Logger = Logger(label: "stm32mp-flash.engine", factory: { _ in SwiftLogNoOpLogHandler() }),
        events: @escaping @Sendable (FlashEvent) -> Void = { _ in }
    ) {
        self.init(source: .tracker(tracker), request: request, dfuTimeouts: dfuTimeouts, logger: logger, events: events)
    }

    private init(
        source: LeaseSource, request: FlashRequest, dfuTimeouts: DFUTimeouts, logger: Logger,
        events: @escaping @Sendable (FlashEvent) -> Void
    ) {
        self.source = source
        self.request = request
        emit = events
        self.dfuTimeouts = dfuTimeouts
        switch source {
        case .lease(let lease): clock = lease.tracker.bus.clock
        case .tracker(let tracker): clock = tracker.bus.clock
        }
        recorder = TimelineRecorder(clock: clock, logger: logger)
    }

    /// The same board again (a new run on `lease`), with this run's events and timeline.
    private init(retrying first: Flasher, lease: BoardLease, request: FlashRequest) {
        source = .lease(lease)
        self.request = request
        emit = first.emit
        dfuTimeouts = first.dfuTimeouts
        clock = first.clock
        recorder = first.recorder
    }

    /// Flashes the board.
    /// - Returns: the summary, only when the board said END and every selected partition was sent.
    /// - Throws: `FlashFailure` with the timeline of everything observed.
    public func run() async throws(FlashFailure) -> FlashSummary {
        let lease: BoardLease
        switch source {
        case .lease(let given):
            lease = given
        case .tracker(let tracker):
            do {
                lease = try await tracker.lease(request.selection.match)
            } catch {
                throw FlashFailure(.protocolError("cannot watch USB hot-plug events: \(error)"))
            }
        }
        var run = Run(flasher: self, lease: lease)
        defer {
            if case .tracker = source { Task { await lease.release() } }
        }
        do {
            return try await run.execute()
        } catch let failure as FlashFailure {
            if case .scriptRejected(let message) = failure.reason, request.transport == .auto {
                if await run.resetAfterRejectedScript(message) {
                    // The ROM is back: the whole run again, over DFU, on the same lease and timeline.
                    var again = request
                    again.transport = .dfu
                    return try await Flasher(retrying: self, lease: lease, request: again).run()
                }
            } else {
                guard case .cancelled = failure.reason else { throw failure }
                await run.leaveUsable()
            }
            // The same failure, with what the cleanup (or the reset) did in its timeline (the
            // diagnosis reads it).
            throw FlashFailure(
                failure.reason, stage: failure.stage, phase: failure.phase, timeline: run.recorder.entries,
                position: failure.position)
        } catch is CancellationError {
            await run.leaveUsable()
            throw run.failure(.cancelled)
        } catch let error as TrackingError {
            throw run.failure(run.reason(for: error))
        } catch let error as DFUError {
            throw run.failure(run.reason(for: error))
        } catch let error as USBTransferError {
            throw run.failure(.transferFailed(error))
        } catch {
            throw run.failure(.protocolError("\(error)"))
        }
    }

    /// The mutable state of one run; lives on the calling task only.
    struct Run {
        let flasher: Flasher
        let lease: BoardLease
        var machine: FlashStateMachine
        var device: DFUDevice?
        /// The last identity opened (kept after the END DETACH closes the device).
        var board: USBDeviceIdentity?
        var phase: UInt8?
        var results: [PhaseResult] = []
        var transfers = 0
        let started: Duration
        /// The phase being sent (nil between phases), its name and size, and the bytes the board
        /// accepted so far: where a cancelled run leaves the board.
        var sending: (id: UInt8, name: String, total: Int64)?
        let accepted = LockedBox<Int64>(0)
        /// Per partition: what was sent and how it was checked.
        var checks: [PartitionCheck] = []
        /// Set when the run started on a board already in enumeration 2.
        var resumeReport: ResumeReport?
        /// Partition → offset a resumed run restarts it at.
        var restartOffsets: [UInt8: Int64] = [:]
        /// Phase → identity of its Binary when it was sent (checked again before success).
        var identities: [UInt8: FileIdentity] = [:]
        /// The fast path's plan (nil: DFU only) and why the layout cannot take it. Its script
        /// gains the CRC stage when the board's family is known (`sendScript`).
        var fastbootPlan: FastbootPlan?
        let fastbootUnsuitable: String?
        /// The opened fastboot gadget while the fast path runs.
        var fastbootTransport: (any USBControlTransport)?
        /// The gadget of the second fastboot session (`--verify`'s results), once opened.
        var verifyTransport: (any USBControlTransport)?
        /// The serial of the stage before the last DETACH (fastboot must show the same).
        var previousSerial: String?
        /// The ROM refused an intact FSBL once and got it again (`sendFSBLOnceMoreIfTorn`).
        var fsblSentAgain = false
        /// TF-A's FIP buffer start when GetPhase showed one other than the default and no
        /// `--tfa-buffer-base` was given (for the command that continues a cancelled run).
        var tfaBufferBase: UInt32?

        init(flasher: Flasher, lease: BoardLease) {
            self.flasher = flasher
            self.lease = lease
            var fastbootPlan: FastbootPlan?
            var unsuitable: String?
            if flasher.request.transport != .dfu {
                do {
                    fastbootPlan = try FastbootPlan(flasher.request.plan)
                } catch {
                    unsuitable = error.reason
                }
            }
            self.fastbootPlan = fastbootPlan
            fastbootUnsuitable = unsuitable
            machine = FlashStateMachine(
                plan: flasher.request.plan, timeouts: flasher.request.timeouts, handOff: fastbootPlan != nil)
            started = flasher.clock.now
        }

        var clock: any FlashClock { flasher.clock }
        var plan: PartitionPlan { flasher.request.plan }
        var recorder: TimelineRecorder { flasher.recorder }

        func failure(_ reason: FlashFailure.Reason) -> FlashFailure {
            FlashFailure(reason, stage: machine.stage, phase: phase, timeline: recorder.entries, position: position)
        }

        mutating func execute() async throws -> FlashSummary {
            if let fastbootUnsuitable {
                if flasher.request.transport == .fastboot { throw failure(.fastbootUnsuitable(fastbootUnsuitable)) }
                recorder.add(.note("transport auto: DFU, because \(fastbootUnsuitable)", stage: nil))
                flasher.emit(.message("fastboot not used: \(fastbootUnsuitable); flashing over DFU"))
            }
            let recorder = recorder
            let emit = flasher.emit
            let arrivalDeadline = clock.now + flasher.request.timeouts.boardArrival
            _ = try await lease.arrival(until: arrivalDeadline) { observation in
                Self.record(observation, recorder: recorder, emit: emit, expecting: nil, boardPort: nil)
            }
            let opened = try await open(until: max(arrivalDeadline, clock.now + lease.timing.openWindow))
            var action = machine.boardOpened(snapshot(opened))
            if snapshot(opened).stage == .uboot, !BoardRecovery.partitionIDs(opened).isEmpty {
                try await startInEnumeration2(opened)
            }
            while true {
                try Task.checkCancellation()
                switch action {
                case .readPhase:
                    let before = machine.stage
                    let reply = try await readPhase()
                    action = machine.phaseRead(reply)
                    if machine.stage != before {
                        recorder.add(.stageCorrected(from: before, to: machine.stage))
                        flasher.emit(.stageConfirmed(machine.stage))
                    }
                    if case .send(let id, _) = action { try continueTFAPhase(id, reply: reply) }
                case .send(let id, let mayLeave):
                    try await sendFSBLOnceMoreIfTorn(id, deviceMayLeave: mayLeave)
                    action = machine.phaseSent()
                case .detachAndAwait(let expecting, let timeout):
                    action = try await detachAndAwait(expecting: expecting, timeout: timeout)
                case .detachAtEnd:
                    flasher.emit(.end)
                    recorder.add(.detachSent(from: machine.stage, wait: nil))
                    try await current().detach()
                    await closeCurrent()
                    action = machine.endDetached()
                case .sendScript:
                    try await sendScript()
                    action = machine.phaseSent()
                case .runFastboot:
                    if let flashed = try await runFastboot() {
                        action = machine.fastbootFinished(flashed: flashed)
                    } else {
                        action = machine.fastbootDeclined()
                    }
                case .awaitBoard(let expecting, let timeout):
                    action = try await detachAndAwait(expecting: expecting, timeout: timeout, sendDetach: false)
                case .fail(let reason):
                    if case .boardReportedError(let message) = reason {
                        noteLayoutLine(message)
                        await detachAfterBoardError()
                    }
                    throw failure(reason)
                case .succeed:
                    guard let board else { throw failure(.protocolError("no board at END")) }
                    try checkFilesUnchanged()
                    return FlashSummary(
                        board: board, phases: results, duration: clock.now - started, controlTransfers: transfers,
                        timeline: recorder.entries, partitions: machine.sent.filter { plan.requestOrder.contains($0) },
                        checks: checks, resume: resumeReport)
                }
            }
        }

        func current() throws -> DFUDevice {
            guard let device else { throw failure(.protocolError("no open board")) }
            return device
        }

        // MARK: Opening the board

        /// Opens the leased board (retrying until `deadline`) and records who answered. A device
        /// of another family (an MCU bootloader) is refused here.
        mutating func open(until deadline: Duration) async throws -> DFUDevice {
            let recorder = recorder
            let emit = flasher.emit
            let expecting = machine.expectedStage
            let boardPort = lease.port
            let opened = try await lease.open(until: deadline, dfuTimeouts: flasher.dfuTimeouts) { observation in
                Self.record(observation, recorder: recorder, emit: emit, expecting: expecting, boardPort: boardPort)
            }
            return try accept(opened)
        }

        /// Takes an opened board as the current one, or refuses a device of another family.
        mutating func accept(_ opened: OpenedBoard) throws -> DFUDevice {
            let identity = opened.device.identity
            guard let stage = opened.kind.stage else {
                Task { [transport = opened.device.transport] in await transport.close() }
                throw failure(
                    .unsupportedDevice(
                        identity, kind: opened.kind.displayName, reason: opened.kind.refusal ?? "not an STM32MP board"))
            }
            device = opened.device
            board = identity
            recorder.add(
                .opened(
                    identity, stage: stage, alternates: opened.device.alternates.compactMap(\.string),
                    attempts: opened.attempts))
            flasher.emit(.board(identity, stage: stage))
            return opened.device
        }

        /// A lease's observation into the timeline and, where the user should see it, an event.
        static func record(
            _ observation: TrackingObservation, recorder: TimelineRecorder, emit: @Sendable (FlashEvent) -> Void,
            expecting: BoardStage?, boardPort: PortPath?
        ) {
            switch observation {
            case .hotplug(let event): recorder.add(.hotplug(event.action, event.device))
            case .openFailed(let error, let port, let attempt):
                recorder.add(.openFailed(error, port: port, attempt: attempt))
            case .otherPort(let identity):
                recorder.add(.otherPort(identity, boardPort: boardPort))
                emit(.otherPort(identity))
            case .followed(let identity, let from): recorder.add(.followed(identity, from: from))
            case .foundByRescan(let identity): recorder.add(.foundByRescan(identity))
            case .waiting(let remaining): emit(.waitingForBoard(expecting: expecting, remaining: remaining))
            }
        }

        func reason(for error: TrackingError) -> FlashFailure.Reason {
            switch error {
            case .noBoard(let waited): .noBoard(waited: waited)
            case .severalBoards(let boards): .severalBoards(boards)
            case .leasedElsewhere(let port): .boardBusy(port)
            case .openFailed(let error): .openFailed(error)
            case .otherFamily(let identity, let kind):
                .unsupportedDevice(identity, kind: kind.displayName, reason: kind.refusal ?? "not an STM32MP board")
            }
        }

        func snapshot(_ device: DFUDevice) -> BoardSnapshot {
            BoardSnapshot(
                stage: flasher.families.classify(device.identity, alternates: device.alternates.compactMap(\.string))
                    .stage ?? .unknown,
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
            recorder.add(.phase(reply, stage: before))
            return reply
        }

        mutating func send(_ id: UInt8, deviceMayLeave: Bool) async throws {
            phase = id
            let device = try current()
            let stage = machine.stage
            if id == 0x01, stage == .rom { try checkFSBLFitsBoard() }
            let input = try openInput(id)
            if let image = input.image, ImageSending.usesRanges(image.prepared, stage: stage, plan: plan, phase: id) {
                try await sendRanges(id, input: input, image: image.prepared, reader: image.reader)
                try await check(id, input: input, stage: stage)
                return
            }
            if let image = input.image, image.prepared.selection != .whole {
                recorder.add(
                    .note(
                        "\(phaseHex(id)) \(input.name): sent whole; ranges go only to MMC partitions of U-Boot's second enumeration",
                        stage: stage))
            }
            let restart = restartOffsets.removeValue(forKey: id) ?? 0
            let total = input.source.count
            sending = (id, input.name, total)
            accepted.withLock { $0 = restart }
            flasher.emit(.phaseStarted(phase: id, name: input.name, bytes: total, stage: stage))
            recorder.add(.sendStarted(phase: id, name: input.name, bytes: total, stage: stage))
            if restart > 0 { recorder.add(.restartedAt(phase: id, offset: restart, stage: stage)) }
            let accepted = self.accepted
            let report = try await transferring(id, total: total) { progress in
                try input.source.hashPrefix(upTo: restart)
                let range: any ByteSource
                if restart >= total, stage == .tfa {
                    // TF-A holds the whole file (the run stopped before the zero-length DNLOAD): a
                    // download must carry data before it can end, and a byte past the FIP's end
                    // is never read.
                    range = MemoryByteSource([0])
                } else {
                    range = restart > 0 ? SliceByteSource(input.source, from: restart) : input.source
                }
                return try await device.download(range, phase: id, deviceMayLeave: deviceMayLeave) { sent in
                    accepted.withLock { $0 = min(total, restart + sent) }
                    progress(min(total, restart + sent))
                }
            }
            sending = nil
            finished(
                PhaseResult(
                    phase: id, name: input.name, stage: stage, bytes: report.bytes, duration: report.duration,
                    controlTransfers: report.controlTransfers))
            try await check(id, input: input, stage: stage)
        }

        /// Runs a transfer with a progress event every 1 % (at least 64 KiB). A DFU error is explained
        /// by the board's own message when it has one; a host read error names the file; an image
        /// error is the image's.
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
                let reason = await explainSendFailure(error)
                if case .boardReportedError = reason { await detachAfterBoardError() }
                throw failure(reason)
            } catch let error as FileReadError {
                throw failure(.hostFile(path: error.path, reason: error.reason))
            } catch let error as ImageSourceError {
                throw failure(.badImage(error))
            }
        }

        /// A phase was sent: keep its result, note it, tell the user.
        mutating func finished(_ result: PhaseResult) {
            results.append(result)
            recorder.add(
                .sendDone(phase: result.phase, bytes: result.bytes, duration: result.duration, stage: result.stage))
            flasher.emit(.phaseFinished(result))
        }

        /// A partition sent as the ranges of its map (or data extents): only those bytes go out.
        mutating func sendRanges(_ id: UInt8, input: FlashInput, image: PreparedImage, reader: ImageReader)
            async throws
        {
            let name = input.name
            let device = try current()
            let stage = machine.stage
            let total = image.bytesToSend
            let how = image.map.map { "map \($0.path)" } ?? "data extents (--skip-holes)"
            flasher.emit(.phaseStarted(phase: id, name: name, bytes: total, stage: stage))
            recorder.add(.sendStarted(phase: id, name: name, bytes: total, stage: stage))
            recorder.add(
                .note(
                    "\(phaseHex(id)) \(name): \(total) of \(image.size) bytes in \(image.extents.count) ranges (\(how))",
                    stage: stage))
            let clock = self.clock
            sending = (id, name, total)
            defer { sending = nil }
            let report = try await transferring(id, total: total) { progress in
                try await ImageSending.sendRanges(
                    device: device, phase: id, image: image, reader: reader, clock: clock, progress: progress)
            }
            if let from = report.contiguousFrom {
                recorder.add(
                    .note(
                        "\(phaseHex(id)) \(name): \(report.beyondAddressLimit) ranges lie beyond the 4 GiB the command offset can address; sent as one contiguous run from offset \(from), holes included",
                        stage: stage))
            }
            recorder.add(
                .note(
                    "\(phaseHex(id)) \(name): \(report.segments) downloads through the command alternate", stage: stage)
            )
            finished(
                PhaseResult(
                    phase: id, name: name, stage: stage, bytes: report.bytes, duration: report.duration,
                    controlTransfers: report.controlTransfers))
        }

        /// A failed download: ask the board why (GetPhase 0xFF carries U-Boot's or TF-A's first
        /// error), else report the USB error.
        mutating func explainSendFailure(_ error: DFUError) async -> FlashFailure.Reason {
            recorder.add(.transferError(error, stage: machine.stage))
            if let transfer = error.transferError, transfer.kind == .noDevice { return .transferFailed(transfer) }
            // After a STALL or dfuERROR: clear the status first, or TF-A refuses the GetPhase read
            // that carries its message (issue 9 item 1: `FIP Header check failed for phase N`).
            if let device { _ = try? await device.clearError() }
            if let device, let reply = try? await device.getPhase() {
                recorder.add(.phase(reply, stage: machine.stage))
                if reply.phase == 0xFF {
                    let message = reply.message ?? "Unspecified"
                    noteLayoutLine(message)
                    return .boardReportedError(message)
                }
            }
            // Item 2: the ROM's dfuERROR (errVERIFY at the manifestation) is its refusal of the FSBL.
            if machine.stage == .rom, phase == 0x01, case .deviceError(let state, let status) = error.kind {
                return .fsblRejected(fsblRejection(state, status: status))
            }
            return reason(for: error)
        }

        /// GetPhase has just reported U-Boot's error: send the DETACH, so that U-Boot leaves
        /// stm32prog. Reading the error armed a reset in its second enumeration (`stm32prog_cmd_read()`
        /// → `stm32prog_do_reset()`; `do_stm32prog()` resets once the gadget loop ends), so the board
        /// restarts into the ROM, ready for the next run; in the first enumeration it leaves without
        /// a reset. TF-A and the ROM are left as they are.
        mutating func detachAfterBoardError() async {
            guard machine.stage == .uboot, let device else { return }
            do {
                try await device.detach()
                recorder.add(.detachAfterError(from: .uboot))
            } catch {
                recorder.add(.note("the DETACH after the error failed: \(error)", stage: .uboot))
            }
            await closeCurrent()
        }

        func reason(for error: DFUError) -> FlashFailure.Reason {
            if let transfer = error.transferError { return .transferFailed(transfer) }
            return .protocolError("\(error)")
        }

        // MARK: The fast path

        /// Phase 0x00 of U-Boot's first enumeration: the hand-off script instead of the layout.
        mutating func sendScript() async throws {
            guard var fastbootPlan else { throw failure(.protocolError("no fastboot plan")) }
            phase = 0
            let device = try current()
            let request = flasher.request
            if request.fastbootVerify == .crc32 {
                let mp2 = ChipFamily.fromProduct(board?.product) == .mp2
                fastbootPlan.script.verify = FastbootVerification.stage(
                    fastbootPlan, files: plan.files, images: request.images, mode: request.verify,
                    chunk: request.fastbootVerifyChunk,
                    bufferAddress: request.fastbootVerifyBuffer ?? CRCReadbackStage.defaultBufferAddress(mp2: mp2))
                self.fastbootPlan = fastbootPlan
            }
            let image = fastbootPlan.script.image.bytes
            // `stm32prog`'s FlashLayout alternate is `ram <SYS_LOAD_ADDR> 0x40000`.
            guard image.count <= 0x40000 else {
                throw failure(
                    .fastbootUnsuitable(
                        "the hand-off script with its CRC stage is \(image.count) bytes, more than U-Boot's 256 KiB FlashLayout alternate; use --verify sampled or --fastboot-verify none"
                    ))
            }
            let stage = machine.stage
            let name = "fastboot hand-off script"
            flasher.emit(.phaseStarted(phase: 0, name: name, bytes: Int64(image.count), stage: stage))
            recorder.add(.sendStarted(phase: 0, name: name, bytes: Int64(image.count), stage: stage))
            recorder.add(.note("script: \(fastbootPlan.script.text)", stage: stage))
            let report: DownloadReport
            do {
                report = try await device.download(MemoryByteSource(image), phase: 0)
            } catch let error as DFUError {
                throw failure(await explainSendFailure(error))
            }
            let result = PhaseResult(
                phase: 0, name: name, stage: stage, bytes: report.bytes, duration: report.duration,
                controlTransfers: report.controlTransfers)
            results.append(result)
            recorder.add(.sendDone(phase: 0, bytes: report.bytes, duration: report.duration, stage: stage))
            flasher.emit(.phaseFinished(result))
        }

        /// The fastboot session on the opened gadget; returns the line Ids flashed, or nil when
        /// `--transport auto` declined the fast path after the probe (nothing written; the board
        /// was told `continue` and comes back in stm32prog).
        mutating func runFastboot() async throws -> [UInt8]? {
            guard let fastbootPlan, let transport = fastbootTransport else {
                throw failure(.protocolError("fastboot without an opened gadget"))
            }
            defer { fastbootTransport = nil }
            let bulk = try await claimFastboot(transport)
            var stage = fastbootStage(bulk)
            do {
                let maxDownload: Int
                do {
                    maxDownload = try await stage.probe()
                } catch let declined as FastbootStage.Failure {
                    // Nothing is written yet: `continue` lets the script's `stm32prog usb 0` run.
                    _ = try? await stage.command(.continueBoot, phase: nil)
                    guard flasher.request.transport == .auto else { throw declined }
                    await transport.close()
                    let why = FlashFailure(declined.reason).description
                    recorder.add(.note("transport auto: back to DFU: \(why)", stage: .fastboot))
                    flasher.emit(.message("fastboot cannot flash this layout here (\(why)); continuing over DFU"))
                    return nil
                }
                let sent = try await stage.run(maxDownload: maxDownload)
                results += sent
                var verified: [PartitionCheck] = []
                if let crcStage = fastbootPlan.script.verify {
                    stage = try await verifyOverFastboot(stage, crcStage, transport: transport)
                    verified = stage.verifiedChecks
                } else if flasher.request.verify != .none {
                    let text = "not read back: --fastboot-verify none trusts every flash's OKAY"
                    recorder.add(.note(text, stage: .fastboot))
                    flasher.emit(.message(text))
                }
                checks += sent.map { result in
                    verified.first { $0.phase == result.phase }
                        ?? PartitionCheck(
                            phase: result.phase, name: result.name, bytes: result.bytes, sha256: nil, method: .none,
                            bytesRead: 0)
                }
                try await stage.finish()
            } catch let stageFailure as FastbootStage.Failure {
                await closeFastboot(transport)
                phase = stageFailure.phase
                throw failure(stageFailure.reason)
            } catch let error as USBTransferError {
                await closeFastboot(transport)
                recorder.add(.note("fastboot transfer: \(error)", stage: .fastboot))
                throw failure(.transferFailed(error))
            }
            await closeFastboot(transport)
            return fastbootPlan.flashedIDs
        }

        /// Claims the fastboot interface (FF/42/03) of an opened gadget; closes it on failure.
        func claimFastboot(_ transport: any USBControlTransport) async throws -> any USBBulkTransport {
            guard let bulk = transport as? any USBBulkTransport else {
                await transport.close()
                throw failure(
                    .protocolError(
                        "U-Boot's fastboot gadget appeared (\(transport.identity.port)), but this USB host cannot do bulk transfers"
                    ))
            }
            let configuration = try await transport.configurationDescriptor()
            guard let interface = FastbootInterface.find(in: configuration) else {
                await transport.close()
                let seen = configuration.interfaces.map { alt in
                    "interface \(alt.interfaceNumber) class "
                        + [alt.interfaceClass, alt.interfaceSubClass, alt.interfaceProtocol].map {
                            String(hex4(UInt16($0)).suffix(2))
                        }.joined(separator: "/")
                }
                throw failure(
                    .protocolError(
                        "the device on \(transport.identity.port) has no fastboot interface (FF/42/03 with a bulk OUT and a bulk IN endpoint); it shows \(seen.isEmpty ? "no interfaces" : seen.joined(separator: ", "))"
                    ))
            }
            do {
                try await bulk.claimBulk(
                    interface: interface.interface, outEndpoint: interface.outEndpoint, inEndpoint: interface.inEndpoint
                )
            } catch let error as USBTransferError {
                await transport.close()
                self.recorder.add(
                    .note("fastboot: claiming interface \(interface.interface): \(error)", stage: .fastboot))
                throw failure(.transferFailed(error))
            }
            return bulk
        }

        /// The fastboot stage over an opened, claimed gadget.
        func fastbootStage(_ bulk: any USBBulkTransport) -> FastbootStage {
            let recorder = self.recorder
            let emit = flasher.emit
            guard let fastbootPlan else { preconditionFailure("fastboot without a plan") }
            return FastbootStage(
                client: FastbootClient(transport: bulk), plan: plan, fastboot: fastbootPlan,
                images: flasher.request.images,
                expectedSerial: previousSerial, clock: clock, emit: emit,
                note: { text in
                    recorder.add(.note(text, stage: .fastboot))
                    emit(.message(text))
                })
        }

        /// Closes the gadget the run holds now (the first session's, or the verify session's).
        mutating func closeFastboot(_ first: any USBControlTransport) async {
            await (verifyTransport ?? first).close()
            verifyTransport = nil
        }

        /// `--verify` over fastboot: `continue` ends the session, the script's CRC stage reads
        /// every written range back and computes its CRC-32, then starts fastboot again; the
        /// host computes the same CRCs from its files meanwhile and compares them over `getvar`.
        /// Returns the stage of the second session (its `verifiedChecks` set), which ends the run.
        mutating func verifyOverFastboot(
            _ stage: FastbootStage, _ crcStage: CRCReadbackStage, transport: any USBControlTransport
        ) async throws -> FastbootStage {
            let total = crcStage.checks.reduce(Int64(0)) { $0 + $1.length }
            let lines = Set(crcStage.checks.map(\.lineID)).count
            stage.note(
                "verify: continue; U-Boot reads back \(crcStage.checks.count) range\(crcStage.checks.count == 1 ? "" : "s") of \(lines) partition\(lines == 1 ? "" : "s") (\(total) bytes) and computes their CRC-32"
            )
            let recorder = recorder
            let emit = flasher.emit
            let boardPort = lease.port
            try await lease.departing { observation in
                Self.record(observation, recorder: recorder, emit: emit, expecting: nil, boardPort: boardPort)
            }
            let previous = transport.identity
            _ = try await stage.command(.continueBoot, phase: nil)
            await transport.close()
            // The board reads at least about as fast as the slowest storage we plan for writes.
            let deadline =
                clock.now + flasher.request.timeouts.boardArrival
                + .seconds(total / FastbootStage.slowestStorageBytesPerSecond)
            // The host's CRCs, while the board computes its own (a line's checks are adjacent).
            var expected: [UInt32] = []
            var source: (id: UInt8, path: String, bytes: any ByteSource)?
            for check in crcStage.checks {
                guard let file = plan.files[check.lineID] else { throw failure(.phaseWithoutFile(check.lineID)) }
                do {
                    if source?.id != check.lineID {
                        source = (check.lineID, file.path, try stage.sources(id: check.lineID, path: file.path).data)
                    }
                    if let bytes = source?.bytes {
                        expected.append(try FastbootVerification.crc(of: bytes, check.range))
                    }
                } catch let stageFailure as FastbootStage.Failure {
                    throw failure(stageFailure.reason)
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    throw failure(.hostFile(path: file.path, reason: "cannot be read again to verify: \(error)"))
                }
            }
            let returned = try await lease.reappearanceAfterHandOff(
                of: previous, until: deadline, dfuTimeouts: flasher.dfuTimeouts
            ) { observation in
                Self.record(observation, recorder: recorder, emit: emit, expecting: .fastboot, boardPort: boardPort)
            }
            switch returned {
            case .fastboot(let again):
                board = again.identity
                recorder.add(.opened(again.identity, stage: .fastboot, alternates: [], attempts: 1))
                flasher.emit(.board(again.identity, stage: .fastboot))
                let bulk = try await claimFastboot(again)
                verifyTransport = again
                var second = fastbootStage(bulk)
                second.verifiedChecks = try await second.verifySession(
                    crcStage, expected: expected, mode: flasher.request.verify)
                for record in second.verifiedChecks { flasher.emit(.verified(record)) }
                return second
            case .dfu(let opened):
                await opened.device.transport.close()
                throw failure(
                    .protocolError(
                        "after the verify stage U-Boot came back as \(opened.device.identity.product ?? "a DFU device") instead of fastboot: the CRCs were not read, nothing is verified"
                    ))
            case nil:
                throw failure(
                    .protocolError(
                        "U-Boot's fastboot did not come back after the verify stage (\(total) bytes to read back): the CRCs were not read, nothing is verified"
                    ))
            }
        }

        /// `--transport auto` after U-Boot rejected the hand-off script (it parsed it as a layout):
        /// DFU_DETACH, then a USB port reset, which makes U-Boot reset the board (MP13/MP15; MP25's
        /// DWC3 ignores it), and wait for the ROM. True when the ROM is back and the run can start
        /// over over DFU; one line says what happened either way.
        mutating func resetAfterRejectedScript(_ message: String) async -> Bool {
            guard let device, let previous = board, let resettable = device.transport as? any USBPortResetting else {
                return false
            }
            let why = "U-Boot cannot run the fastboot hand-off script (it read it as a FlashLayout: \(message))"
            let timeout = flasher.request.timeouts.boardArrival
            do {
                try await device.detach()
                try await resettable.resetPort()
                await closeCurrent()
                let recorder = recorder
                let emit = flasher.emit
                let port = lease.port
                guard
                    case .dfu(let opened) = try await lease.reappearanceAfterHandOff(
                        of: previous, until: clock.now + timeout, dfuTimeouts: flasher.dfuTimeouts,
                        observe: { Self.record($0, recorder: recorder, emit: emit, expecting: .rom, boardPort: port) }),
                    flasher.families.classify(opened.device.identity).stage == .rom
                else {
                    recorder.add(.note("transport auto: no ROM after the USB reset", stage: machine.stage))
                    flasher.emit(.message("\(why); a USB reset did not bring the ROM back: reset the board by hand"))
                    return false
                }
                await opened.device.transport.close()
            } catch {
                recorder.add(.note("transport auto: USB reset failed: \(error)", stage: machine.stage))
                flasher.emit(.message("\(why); the USB reset failed (\(error)): reset the board by hand"))
                return false
            }
            recorder.add(.note("transport auto: script rejected; reset over USB, starting over over DFU", stage: nil))
            flasher.emit(.message("\(why): reset the board over USB; flashing over DFU from the ROM"))
            return true
        }

        // MARK: Re-enumeration

        /// DETACH (unless the board was told to leave otherwise), then wait for it to come back.
        mutating func detachAndAwait(expecting: BoardStage, timeout: Duration, sendDetach: Bool = true) async throws
            -> FlashStateMachine.Action
        {
            let from = machine.stage
            guard let previous = device?.identity ?? board else { throw failure(.protocolError("no board to follow")) }
            let recorder = recorder
            let emit = flasher.emit
            let boardPort = lease.port
            if sendDetach {
                previousSerial = previous.serial
                // Events heard so far predate the DETACH: none of them is the board's return.
                try await lease.departing { observation in
                    Self.record(observation, recorder: recorder, emit: emit, expecting: nil, boardPort: boardPort)
                }
                let option = TransitionTimeouts.option(from: from, expecting: expecting)
                recorder.add(
                    .detachSent(from: from, wait: ReconnectWait(expecting: expecting, timeout: timeout, option: option))
                )
                flasher.emit(.detached(from: from, expecting: expecting, timeout: timeout))
                try await current().detach()
            }
            await closeCurrent()
            let detachedAt = clock.now
            let opened: OpenedBoard?
            if machine.handOff == .awaitingFastboot {
                let returned = try await lease.reappearanceAfterHandOff(
                    of: previous, until: detachedAt + timeout, dfuTimeouts: flasher.dfuTimeouts
                ) { observation in
                    Self.record(observation, recorder: recorder, emit: emit, expecting: expecting, boardPort: boardPort)
                }
                switch returned {
                case .fastboot(let transport):
                    fastbootTransport = transport
                    board = transport.identity
                    recorder.add(.opened(transport.identity, stage: .fastboot, alternates: [], attempts: 1))
                    flasher.emit(.board(transport.identity, stage: .fastboot))
                    flasher.emit(
                        .reenumerated(
                            from: from, to: .fastboot, device: transport.identity, after: clock.now - detachedAt))
                    return machine.boardOpened(BoardSnapshot(stage: .fastboot, phases: []))
                case .dfu(let board):
                    opened = board
                    if board.kind.stage == .uboot {
                        recorder.add(.note("stm32prog came back instead of fastboot", stage: .uboot))
                        flasher.emit(
                            .message(
                                "U-Boot did not start fastboot (not built in, or no cable detected) and went back to stm32prog: continuing over DFU"
                            ))
                    }
                case nil:
                    opened = nil
                }
            } else {
                opened = try await lease.reappearance(
                    of: previous, until: detachedAt + timeout, dfuTimeouts: flasher.dfuTimeouts
                ) { observation in
                    Self.record(observation, recorder: recorder, emit: emit, expecting: expecting, boardPort: boardPort)
                }
            }
            guard let opened else {
                let waited = clock.now - detachedAt
                await listenAfterTimeout(for: previous, detachedAt: detachedAt)
                return machine.reconnectTimedOut(after: waited)
            }
            let device = try accept(opened)
            let to = snapshot(device).stage
            flasher.emit(.reenumerated(from: from, to: to, device: device.identity, after: clock.now - detachedAt))
            return machine.boardOpened(snapshot(device))
        }

        /// The wait ran out: listen a little longer, only to say whether a longer wait would have
        /// worked (the run fails either way).
        func listenAfterTimeout(for previous: USBDeviceIdentity, detachedAt: Duration) async {
            let grace = flasher.request.timeouts.lateArrivalGrace
            guard grace > .zero else { return }
            let recorder = recorder
            let boardPort = lease.port
            let started = clock.now
            let late = try? await lease.lateArrival(of: previous, until: started + grace) { observation in
                Self.record(observation, recorder: recorder, emit: { _ in }, expecting: nil, boardPort: boardPort)
            }
            if let late {
                recorder.add(.lateArrival(late, afterDetach: clock.now - detachedAt))
            } else {
                recorder.add(.nothingLate(listened: clock.now - started))
            }
        }

        // MARK: Helpers

        /// U-Boot numbers lines of what we sent; say which line of the user's file that is.
        func noteLayoutLine(_ message: String) {
            guard message.hasPrefix("Layout line ") else { return }
            let digits = message.dropFirst("Layout line ".count).prefix { $0.isNumber }
            guard let payloadLine = Int(digits), let source = plan.payload.sourceLine(forPayloadLine: payloadLine)
            else { return }
            recorder.add(.layoutLine(payloadLine: payloadLine, sourceLine: source, path: flasher.request.layoutPath))
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

    func add(_ event: TimelineEvent) {
        let entry = TimelineEntry(time: (clock.now - origin).inSeconds, event)
        storage.withLock { $0.append(entry) }
        logger.debug("\(entry)")
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
