import BoardTracking
import Diagnostics
import FlashEngine
import FlashLayout
import FoundationEssentials
import Glibc
import Logging
import StationMonitor
import StationRecords
import Timekeeping
import USBModel
import VirtualBoard

/// How one board's attempt ended, for the summary table and the exit status.
struct BoardOutcome: Sendable {
    var port: PortPath
    var serial: String?
    var result: AttemptResult
    var code: String?
    var cause: String?
    var partitions: Int
    var bytes: Int64
    var seconds: Double
}

/// Everything the attempts of one run share: the tracker (one per process), the layout and its
/// plan, where records and status go. A station swaps the layout on SIGHUP by making a new one.
struct BoardJobSettings: Sendable {
    var tracker: BoardTracker
    var layout: LayoutFingerprint
    var plan: PartitionPlan
    /// The request every board gets, its selection set to the board's port.
    var request: FlashRequest
    var store: RecordStore?
    var status: StationStatus?
    var output: MultiBoardOutput
    var simulated: Bool
    /// `station --log-dir`: one text log per attempt in this folder.
    var logFolder: String? = nil
}

/// One board's attempt on one port: lease the port from the tracker, flash it with a `Flasher`,
/// diagnose a failure, record the attempt, report. Nothing here can disturb another port's
/// attempt: each has its own lease, flasher, record and output line.
struct BoardJob: Sendable {
    let settings: BoardJobSettings
    let port: PortPath
    /// The virtual board on this port (simulation), for its console and kernel log as evidence.
    let virtualBoard: VirtualBoard?

    func run() async -> BoardOutcome {
        let clock = SystemClock()
        let started = clock.now
        let output = settings.output
        output.started(port, serial: nil)
        settings.status?.started(port: port, serial: nil)
        var opened: AttemptRecording?
        if let store = settings.store {
            do {
                opened = try await AttemptRecording.begin(
                    store: store, layout: settings.layout, plan: settings.plan, port: port, serial: nil,
                    soc: virtualBoard.map { $0.configuration.soc.rawValue })
            } catch {
                // No record, no flash: a station that cannot record must not program boards.
                return finish(.failed, code: "records-unwritable", cause: "\(error)", started: started, clock: clock)
            }
        }
        let recording = opened
        let log = settings.logFolder.flatMap { AttemptLog(folder: $0, port: self.port, attempt: recording?.id) }
        defer { log?.close() }
        log?.output.line("layout \(settings.layout.path) (sha256 \(settings.layout.sha256))")
        log?.output.started(self.port, serial: nil)
        var request = settings.request
        request.selection = .port(port)
        let status = settings.status
        let port = self.port
        let logger = Logger(label: "stm32mp-flash.\(port)") { _ in SwiftLogNoOpLogHandler() }
        let outcome: Result<FlashSummary, FlashFailure>
        do {
            let lease = try await settings.tracker.lease(.port(port))
            let flasher = Flasher(
                lease: lease, request: request, logger: logger,
                events: { event in
                    recording?.observe(event)
                    status?.observe(port: port, event, now: UInt64(clock.now.inSeconds * 1e9))
                    output.handle(port, event)
                    log?.output.handle(port, event)
                })
            do {
                outcome = .success(try await flasher.run())
            } catch {
                outcome = .failure(error)
            }
            await lease.release()
        } catch {
            outcome = .failure(FlashFailure(.protocolError("cannot lease port \(port): \(error)")))
        }
        switch outcome {
        case .success(let summary):
            return await finishRecorded(
                recording, .done, diagnosis: nil, started: started, clock: clock,
                partitions: summary.partitions.count, bytes: summary.phases.reduce(0) { $0 + $1.bytes }, log: log)
        case .failure(let boardFailure):
            let failure = boardFailure.blamingHost(of: virtualBoard)
            let diagnosis = Diagnoser.diagnose(
                Evidence(
                    failure: failure, kernelLog: virtualBoard?.kernelLog ?? KernelLog.usbLines(),
                    environment: settings.simulated ? HostEnvironment() : EnvironmentProbe.detect(),
                    consoleLog: virtualBoard?.consoleLog ?? []))
            let result: AttemptResult
            if case .cancelled = failure.reason { result = .cancelled } else { result = .failed }
            log?.output.line("error: " + failure.description)
            log?.output.line(diagnosis.text)
            return await finishRecorded(
                recording, result, diagnosis: diagnosis, started: started, clock: clock, partitions: 0, bytes: 0,
                error: failure.description, log: log)
        }
    }

    private func finishRecorded(
        _ recording: AttemptRecording?, _ result: AttemptResult, diagnosis: Diagnosis?, started: Duration,
        clock: SystemClock, partitions: Int, bytes: Int64, error: String? = nil, log: AttemptLog? = nil
    ) async -> BoardOutcome {
        var code = diagnosis?.code.rawValue
        var cause = diagnosis?.cause
        do {
            try await recording?.finish(result: result, diagnosis: diagnosis)
        } catch {
            code = code ?? "records-unwritable"
            cause = (cause.map { $0 + "; " } ?? "") + "\(error)"
        }
        var outcome = finish(result, code: code, cause: cause, started: started, clock: clock)
        log?.output.finished(port, done: result == .done, code: code, cause: cause, seconds: outcome.seconds)
        outcome.partitions = partitions
        outcome.bytes = bytes
        if settings.output.mode == .json {
            var fields: [String: JSONValue] = [
                "port": .string(port.description), "serial": outcome.serial.map { .string($0) } ?? .null,
                "seconds": .number((outcome.seconds * 1000).rounded() / 1000),
            ]
            if result == .done {
                fields["bytes"] = .number(Double(bytes))
                fields["partitions"] = .number(Double(partitions))
                settings.output.json("board-done", fields)
            } else {
                fields["code"] = code.map { .string($0) } ?? .null
                fields["cause"] = cause.map { .string($0) } ?? .null
                fields["error"] = error.map { .string($0) } ?? .null
                settings.output.json("board-failed", fields)
            }
        }
        return outcome
    }

    private func finish(
        _ result: AttemptResult, code: String?, cause: String?, started: Duration, clock: SystemClock
    ) -> BoardOutcome {
        let seconds = (clock.now - started).inSeconds
        settings.status?.finished(port: port, result: result.rawValue, code: code, seconds: seconds)
        settings.output.finished(port, done: result == .done, code: code, cause: cause, seconds: seconds)
        return BoardOutcome(
            port: port, serial: settings.output.serial(port), result: result, code: code, cause: cause, partitions: 0,
            bytes: 0, seconds: seconds)
    }
}

/// `station --log-dir`: the text log of one attempt, `<UTC start>-<port>[-<record id>].log`, the
/// same lines the station writes to stderr for that board, plus the error and diagnosis in full.
final class AttemptLog: Sendable {
    let output: MultiBoardOutput
    private let fd: Int32

    /// nil (with a warning on stderr) when the file cannot be created: the flash goes on, its
    /// record and the journal still have it.
    init?(folder: String, port: PortPath, attempt: Int64?) {
        let stamp = Timestamp.format(Date()).replacing(":", with: "")
        let path = "\(folder)/\(stamp)-\(port)" + (attempt.map { "-\($0)" } ?? "") + ".log"
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            Terminal.error("warning: \(path): cannot create the attempt log: \(String(cString: strerror(errno)))")
            return nil
        }
        self.fd = fd
        output = MultiBoardOutput(mode: .plain, humanFD: fd)
    }

    func close() { Glibc.close(fd) }
}

extension FlashFailure {
    /// The virtual firmware saw a write error that this computer's file system caused (a full or
    /// read-only storage folder): the failure is `host-file` with the path and the OS reason, not
    /// the board's. Unchanged for a real board or when the storage folder had no trouble.
    func blamingHost(of board: VirtualBoard?) -> FlashFailure {
        guard let host = board?.storage.hostFailure else { return self }
        return FlashFailure(
            .hostFile(path: host.path, reason: host.reason), stage: stage, phase: phase, timeline: timeline,
            position: position)
    }
}
