import ArgumentParser
import BoardTracking
import BootImages
import Diagnostics
import FlashEngine
import FlashLayout
import FoundationEssentials
import Logging
import StationRecords
import Synchronization
import TerminalText
import Timekeeping
import USBModel
import VirtualBoard

/// `stm32mp-flash flash LAYOUT`: the whole job, on real USB or on the built-in virtual board.
struct FlashCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flash",
        abstract: "Flash a board from a FlashLayout: ROM code → TF-A → U-Boot stm32prog, following GetPhase.",
        discussion: """
            Success is printed only when the board said END and every selected partition was sent. \
            On failure, one diagnosis code, its cause, what was seen and what to change \
            (docs/troubleshooting.md). Each partition is read back after it is written (--verify). A board \
            already in U-Boot stm32prog from an interrupted run continues where its content stops \
            matching (--no-resume starts over). Exit status: 0 done, 1 failed, 2 usage errors, \
            130 Ctrl-C, 143 SIGTERM.
            """)

    @Argument(
        help: ArgumentHelp("The FlashLayout file (.tsv); not needed with --list-scenarios.", valueName: "layout"),
        completion: .file(extensions: ["tsv"]))
    var layoutArgument: String?

    /// The layout; `validate()` guarantees it outside `--list-scenarios`.
    var layout: String { layoutArgument ?? "" }

    @Flag(help: "Flash the built-in virtual board instead of real USB.")
    var simulate = false

    @Option(
        help: ArgumentHelp("Virtual board chip: mp15, mp13 or mp25 (default: from the layout).", valueName: "soc"),
        completion: .list(VirtualSoC.allCases.map(\.rawValue)))
    var soc: String?

    @Option(
        name: .customLong("sim-dir"),
        help: ArgumentHelp("Where the virtual board keeps its storage images.", valueName: "dir"),
        completion: .directory)
    var simulationDirectory = "virtual-board"

    @Option(
        name: .customLong("sim-scenario"),
        help: ArgumentHelp("A fault to inject on the virtual board (see --list-scenarios).", valueName: "name"),
        completion: .list(FaultScenario.allCases.map(\.rawValue)))
    var scenario = "none"

    @Flag(help: "List the virtual board's fault scenarios and exit.")
    var listScenarios = false

    @Flag(
        help:
            "Run the virtual board's timing model in real time (default: simulated time, instant; several boards run in real time with the model 10 times faster)."
    )
    var realtime = false

    @Option(
        name: .customLong("sim-tfa-buffer-base"),
        help: ArgumentHelp(
            "With --simulate: the virtual TF-A's FIP download buffer starts here (hex), as a TF-A built with another DWL_BUFFER_BASE.",
            valueName: "address"))
    var simTFABufferBase: String?

    @Flag(
        name: .customLong("sim-replace-images"),
        help: "Recreate virtual board images whose size differs from this layout's devices (default: refuse).")
    var simReplaceImages = false

    @Option(
        name: .customLong("port"),
        help: ArgumentHelp(
            "The board's USB port path, e.g. 1-2.3; repeat it to flash several boards at once, one per port.",
            valueName: "path"))
    var ports: [String] = []

    /// The one port of a single-board run.
    var port: String? { ports.count == 1 ? ports.first : nil }

    @Flag(
        help:
            "Flash every STM32MP board present in the ROM code, and those that appear during --wait-timeout, at once.")
    var all = false

    @Option(
        help: ArgumentHelp(
            "With --simulate: this many virtual boards on ports 1-1.1 … 1-1.N, flashed at once.", valueName: "n"))
    var boards = 1

    @Option(help: ArgumentHelp("The board's USB serial number.", valueName: "serial"))
    var serial: String?

    @Option(help: ArgumentHelp("Seconds to wait for a board to appear.", valueName: "seconds"))
    var waitTimeout: Double = 30

    @Option(
        help: ArgumentHelp(
            "Seconds to wait for TF-A after the ROM detaches (and for TF-A to reconnect after the DDR firmware on MP2).",
            valueName: "seconds"))
    var tfaTimeout: Double = 5

    @Option(help: ArgumentHelp("Seconds to wait for U-Boot after TF-A detaches.", valueName: "seconds"))
    var ubootTimeout: Double = 30

    @Option(
        help: ArgumentHelp(
            "Seconds to wait between U-Boot's two enumerations (erases happen there).", valueName: "seconds"))
    var reenumerationTimeout: Double = 120

    @Option(
        help: ArgumentHelp(
            "After a wait above ran out, seconds to keep listening, only to tell whether a longer wait would have worked.",
            valueName: "seconds"))
    var lateGrace: Double = 10

    @OptionGroup var geometry: DeviceGeometryOptions

    @Option(
        help: ArgumentHelp(
            "Read each partition back after writing it: full, sampled (first and last MiB and 1 MiB in every 16 MiB) or none.",
            valueName: "mode"))
    var verify: String = "sampled"

    @Flag(help: "On a board already in U-Boot stm32prog, start from the first partition instead of resuming.")
    var noResume = false

    @Option(
        help: ArgumentHelp(
            "U-Boot's DFU buffer in MiB (CONFIG_SYS_DFU_DATA_BUF_SIZE or dfu_bufsiz) for readback and resume.",
            valueName: "MiB"))
    var ubootBufferMib: Int = 8

    @Option(
        help: ArgumentHelp(
            "Where TF-A's USB download buffer for the FIP starts (hex, TF-A's DWL_BUFFER_BASE), for a TF-A built with another one than its default (0xC7000000 on MP15/MP13, 0x87000000 on MP2): a rerun after a cancel in TF-A then continues the FIP. The MP2 DDR firmware's buffer (SYSRAM) does not move.",
            valueName: "address"))
    var tfaBufferBase: String?

    @OptionGroup var images: ImageOptionsGroup

    @Flag(help: "Print JSON Lines events instead of text (docs/json.md).")
    var json = false

    @Option(
        help: ArgumentHelp(
            "Store the attempt in this SQLite database (see `station report`).", valueName: "file"),
        completion: .file(extensions: ["sqlite", "db"]))
    var db: String?

    @Flag(name: .shortAndLong, help: "Log every observation (USB events, GetPhase answers, DETACHes) to stderr.")
    var verbose = false

    @Flag(name: .shortAndLong, help: "No progress or step lines; only warnings, errors and the diagnosis.")
    var quiet = false

    @Option(
        help: ArgumentHelp(
            "How partitions reach the storage once U-Boot runs: dfu (default), fastboot (hand U-Boot a script that starts fastboot; UNCONFIRMED on hardware) or auto (fastboot when the layout allows it, else DFU).",
            valueName: "dfu|fastboot|auto"))
    var transport = "dfu"

    @Option(
        help: ArgumentHelp(
            "How --verify is done over fastboot, which cannot read back: crc32 (U-Boot reads each written range back after the flash and computes its CRC-32, which the host compares; UNCONFIRMED on hardware) or none (trust every flash's OKAY).",
            valueName: "crc32|none"))
    var fastbootVerify = "crc32"

    @Option(
        help: ArgumentHelp(
            "RAM address (hex) U-Boot's CRC stage reads into; default CONFIG_FASTBOOT_BUF_ADDR of ST's defconfigs (0xC0000000 on MP13/MP15, 0x84000000 on MP2).",
            valueName: "address"))
    var fastbootVerifyBuffer: String?

    func validate() throws {
        if layoutArgument == nil, !listScenarios { throw ValidationError("Missing expected argument '<layout>'") }
        if let soc, VirtualSoC(rawValue: soc) == nil {
            throw ValidationError("--soc takes mp15, mp13 or mp25, got '\(soc)'")
        }
        if FaultScenario(rawValue: scenario) == nil {
            throw ValidationError(
                "unknown --sim-scenario '\(scenario)'; known: "
                    + FaultScenario.allCases.map(\.rawValue).joined(separator: ", "))
        }
        if !ports.isEmpty && serial != nil { throw ValidationError("give --port or --serial, not both") }
        if all && (!ports.isEmpty || serial != nil) {
            throw ValidationError("--all takes every board: no --port or --serial")
        }
        if boards < 1 || boards > 30 { throw ValidationError("--boards takes 1 to 30, got \(boards)") }
        if boards > 1 && !simulate {
            throw ValidationError("--boards needs --simulate (real boards: --port … or --all)")
        }
        if Set(ports).count != ports.count { throw ValidationError("--port names the same port twice") }
        for port in ports where PortPath(port) == nil {
            throw ValidationError("--port takes a USB port path like 1-2.3, got '\(port)'")
        }
        if VerifyMode(rawValue: verify) == nil {
            throw ValidationError("--verify takes full, sampled or none, got '\(verify)'")
        }
        if ubootBufferMib < 1 { throw ValidationError("--uboot-buffer-mib takes a whole number of MiB ≥ 1") }
        if FlashTransport(rawValue: transport) == nil {
            throw ValidationError("--transport takes dfu, fastboot or auto, got '\(transport)'")
        }
        if FastbootVerifyMethod(rawValue: fastbootVerify) == nil {
            throw ValidationError("--fastboot-verify takes crc32 or none, got '\(fastbootVerify)'")
        }
        if let fastbootVerifyBuffer, Self.hexAddress(fastbootVerifyBuffer) == nil {
            throw ValidationError(
                "--fastboot-verify-buffer takes a hex address like 0xC0000000, got '\(fastbootVerifyBuffer)'")
        }
        for (option, value) in [("--tfa-buffer-base", tfaBufferBase), ("--sim-tfa-buffer-base", simTFABufferBase)] {
            if let value, Self.tfaBufferAddress(value) == nil {
                throw ValidationError(
                    "\(option) takes TF-A's DWL_BUFFER_BASE as a hex address like 0xC7000000 (32 bits, with room for the 16 MiB buffer above it), got '\(value)'"
                )
            }
        }
        if simTFABufferBase != nil && !simulate { throw ValidationError("--sim-tfa-buffer-base needs --simulate") }
        if let port, PortPath(port) == nil {
            throw ValidationError("--port takes a USB port path like 1-2.3, got '\(port)'")
        }
    }

    func run() async throws {
        if listScenarios {
            let width = FaultScenario.allCases.map(\.rawValue.count).max() ?? 0
            for scenario in FaultScenario.allCases {
                print(
                    scenario.rawValue + String(repeating: " ", count: width - scenario.rawValue.count + 2)
                        + scenario.summary)
            }
            return
        }
        // Human output goes to stderr, so its mode follows stderr; JSON Lines go to stdout.
        // Simulated time is one clock that jumps to each sleeper's deadline, right only with one
        // task driving it: with several boards one board's wait would run out while the others
        // work (seen as `other-port` in 40 % of 8-board runs), so they run in real time.
        let clock: any FlashClock = simulate && !realtime && !severalBoards ? SimulatedClock() : SystemClock()
        let output = FlashOutput(
            mode: json ? .json : Terminal.isInteractive(2) ? .interactive : .plain, quiet: quiet, clock: clock)
        do {
            try await flash(output: output, clock: clock)
        } catch let failed as SeveralBoardsFailed {
            throw ExitCode(failed.status)  // its last line (`failed`, per board) is written
        } catch {
            // docs/json.md: every run ends with exactly one `done` or `failed` line, also when it
            // stops before the board (a layout with errors, a usage error found after parsing).
            if json, !output.hasFinished { Self.reportPreflight(error, output: output, start: startFields(soc: nil)) }
            // Its messages are on stderr already.
            if error is FlashPreflightError { throw ExitCode.failure }
            throw error
        }
    }

    /// The `start` event's fields; `soc` is null until known (always in USB mode).
    func startFields(soc: String?) -> [String: JSONValue] {
        [
            "layout": .string(layout), "mode": .string(simulate ? "simulate" : "usb"),
            "soc": soc.map { .string($0) } ?? .null, "scenario": simulate ? .string(scenario) : .null,
        ]
    }

    /// `start` (when not written yet) and `failed` for a run that ended before the flasher ran.
    static func reportPreflight(_ error: any Error, output: FlashOutput, start: [String: JSONValue]) {
        if !output.hasStarted { output.json("start", start) }
        let (code, cause): (String, String) =
            switch error {
            case is ValidationError: ("usage", "the command line is not valid for this layout")
            case let preflight as FlashPreflightError: (preflight.code, preflight.cause)
            default: ("host-error", "the host could not prepare or record the run (see stderr)")
            }
        output.json(
            "failed",
            [
                "code": .string(code), "cause": .string(cause), "error": .string("\(error)"), "stage": .null,
                "phase": .null,
            ])
    }

    /// Locks the virtual board's storage folder and checks every image in it (links, sizes)
    /// before the first byte, so a folder this computer cannot use ends `host-file` up front.
    func prepareStorage(of board: VirtualBoard) throws {
        board.storage.replacesMismatchedImages = simReplaceImages
        do {
            try board.storage.prepareAll()
        } catch let error as StorageError {
            Terminal.error("error: " + TerminalText.escaped(error.description))
            throw FlashPreflightError(
                code: DiagnosisCode.hostFile.rawValue, cause: "the virtual board's storage folder cannot be used",
                message: error.description)
        }
    }

    /// Several boards at once, each its own concurrent flash (`flashSeveral`).
    var severalBoards: Bool { ports.count > 1 || all || boards > 1 }

    /// The whole run once the arguments are valid.
    func flash(output: FlashOutput, clock: any FlashClock) async throws {
        let plan = try prepare(output)
        if severalBoards {
            try await flashSeveral(plan: plan, clock: clock)
            return
        }
        let selection: BoardSelection =
            port.flatMap(PortPath.init).map { .port($0) } ?? serial.map { .serial($0) } ?? .any
        let request: FlashRequest
        do {
            request = try flashRequest(plan: plan, selection: selection)
        } catch {
            Terminal.error("error: " + TerminalText.escaped("\(error)"))
            throw ExitCode.failure
        }

        let bus: any USBBus
        var board: VirtualBoard?
        if simulate {
            let configuration = try simulationConfiguration(plan)
            let virtual = VirtualBoard(configuration: configuration)
            virtual.recordsTrace = false
            // Lock the folder and check every image (links, sizes) before the first byte.
            try prepareStorage(of: virtual)
            board = virtual
            bus = VirtualUSBBus(clock: clock, boards: [virtual])
            Interrupts.arm()
            if json {
                output.json("start", startFields(soc: configuration.soc.rawValue))
            } else {
                output.line(
                    "Flashing \(TerminalText.field(layout)) on the virtual \(configuration.soc.rawValue.uppercased()) board"
                        + (scenario == "none" ? "" : " (scenario: \(scenario))") + (realtime ? "" : ", simulated time"))
            }
        } else {
            bus = try SystemBus.make()
            Interrupts.arm()
            if json {
                output.json("start", startFields(soc: nil))
            } else {
                output.line("Flashing \(TerminalText.field(layout)) over USB")
            }
        }

        let logger = Logger(label: "stm32mp-flash") { _ in
            TerminalLogHandler(output: output, logLevel: verbose ? .debug : .warning)
        }
        let recording = try await beginRecording(plan: plan, port: port.flatMap(PortPath.init) ?? board?.port)
        // One tracker per process; this run takes one lease from it (a station takes several).
        let tracker = BoardTracker(bus: bus)
        let position = PositionTracker()
        let flasher = Flasher(
            tracker: tracker, request: request, logger: logger,
            events: {
                position.observe($0)
                recording?.observe($0)
                output.handle($0)
            })
        let json = json
        let arguments = CommandLine.arguments
        let forcedExit: @Sendable (Int32) -> Void = { _ in
            let position = position.current
            let sentence = WhereLeft.sentence(
                position, command: WhereLeft.command(arguments: arguments, position: position))
            if json {
                output.json("stopped", Self.stoppedFields(position, sentence: sentence, arguments: arguments))
                output.json(
                    "failed",
                    [
                        "code": .string("cancelled"), "cause": .string(DiagnosisCode.cancelled.summary),
                        "error": .string("cancelled (second signal: exit at once)"),
                        "stage": .string(position.stage.rawValue),
                        "phase": position.phase.map { .string(phaseHex($0)) } ?? .null,
                    ])
            } else {
                Terminal.error(sentence)
            }
        }
        let outcome: Result<FlashSummary, FlashFailure>
        do {
            outcome = .success(try await Self.run(flasher, onForcedExit: forcedExit))
        } catch {
            outcome = .failure(error)
        }
        switch outcome {
        case .success(let summary):
            board?.storage.closeAll()
            try await finishRecording(recording, .done)
            report(summary, plan: plan, board: board, output: output)
        case .failure(let failure):
            board?.storage.closeAll()
            let error = failure.blamingHost(of: board)
            let evidence = Evidence(
                failure: error, kernelLog: board?.kernelLog ?? KernelLog.usbLines(),
                environment: simulate ? HostEnvironment() : EnvironmentProbe.detect(),
                consoleLog: Self.unique(board?.consoleLog ?? []))
            let diagnosis = Diagnoser.diagnose(evidence)
            if case .cancelled = error.reason {
                try await finishRecording(recording, .cancelled, diagnosis)
                let position = error.position ?? position.current
                let sentence = WhereLeft.sentence(
                    position, command: WhereLeft.command(arguments: arguments, position: position))
                if json {
                    output.json("stopped", Self.stoppedFields(position, sentence: sentence, arguments: arguments))
                } else {
                    output.line("")
                    output.line(output.style(.red, "cancelled: ") + sentence)
                }
            } else {
                try await finishRecording(recording, .failed, diagnosis)
            }
            if json {
                output.json("diagnosis", diagnosis.jsonFields)
                output.json(
                    "failed",
                    [
                        "code": .string(diagnosis.code.rawValue), "cause": .string(diagnosis.cause),
                        "error": .string(error.description),
                        "stage": error.stage.map { .string($0.rawValue) } ?? .null,
                        "phase": error.phase.map { .string(phaseHex($0)) } ?? .null,
                    ])
            } else {
                output.important("")
                output.important(output.style(.red, "error: ") + TerminalText.escaped(error.description))
                output.important(TerminalText.escaped(diagnosis.text, keepNewlines: true))
            }
            if case .cancelled = error.reason {
                throw ExitCode(Interrupts.exitStatus(for: Interrupts.received.load(ordering: .sequentiallyConsistent)))
            }
            throw ExitCode.failure
        }
    }

    /// The attempt row for `--db`, written before the first byte goes out.
    func beginRecording(plan: PartitionPlan, port: PortPath?) async throws -> AttemptRecording? {
        guard let db else { return nil }
        do {
            let store = try RecordLocation.open(db)
            return try await AttemptRecording.begin(
                store: store, layout: try LayoutFingerprint(path: layout), plan: plan, port: port, serial: serial,
                soc: simulate ? (soc ?? Self.inferSoC(plan).rawValue) : nil)
        } catch {
            Terminal.error("error: \(error)")
            throw ExitCode.failure
        }
    }

    func finishRecording(
        _ recording: AttemptRecording?, _ result: AttemptResult, _ diagnosis: Diagnosis? = nil
    ) async throws {
        do {
            try await recording?.finish(result: result, diagnosis: diagnosis)
        } catch {
            Terminal.error("error: \(error)")
            throw ExitCode.failure
        }
    }

    /// Runs the flasher with SIGINT/SIGTERM turned into a clean `cancelled` failure. A run that got
    /// a signal never succeeds, even when the engine had just finished.
    static func run(_ flasher: Flasher, onForcedExit: @escaping @Sendable (Int32) -> Void = { _ in })
        async throws(FlashFailure) -> FlashSummary
    {
        let summary: FlashSummary
        do {
            summary = try await Interrupts.cancellingOnInterrupt(onForcedExit: onForcedExit) { try await flasher.run() }
        } catch let failure as FlashFailure {
            throw failure
        } catch {
            throw FlashFailure(.cancelled)
        }
        if Interrupts.received.load(ordering: .sequentiallyConsistent) != 0 {
            throw FlashFailure(
                .cancelled, stage: .uboot, timeline: summary.timeline,
                position: BoardPosition(stage: .uboot, port: summary.board.port))
        }
        return summary
    }

    /// The `stopped` event of a cancelled run: where the board was left and the command that
    /// continues (before its `failed` line).
    static func stoppedFields(_ position: BoardPosition, sentence: String, arguments: [String]) -> [String: JSONValue] {
        [
            "stage": .string(position.stage.rawValue), "phase": position.phase.map { .string(phaseHex($0)) } ?? .null,
            "name": position.name.map { .string($0) } ?? .null, "offset": .number(Double(position.offset)),
            "total": position.total.map { .number(Double($0)) } ?? .null,
            "port": position.port.map { .string($0.description) } ?? .null,
            "command": .string(WhereLeft.command(arguments: arguments, position: position)),
            "message": .string(sentence),
        ]
    }

    /// Checks the layout (errors stop here) and builds the plan.
    func prepare(_ output: FlashOutput) throws -> PartitionPlan {
        let options = try geometry.planOptions(layoutDirectory: parentDirectory(of: layout))
        let check = LayoutChecker.check(path: layout, options: LayoutCheckOptions(plan: options))
        try geometry.requireUsedDevices(check.lines)
        // A Binary that exists both ways as different files: flashing the wrong one is silent
        // and permanent, so flash needs --binaries-from to pick (check only warns).
        let blocking = check.diagnostics.filter {
            $0.severity == .error || ($0.code == DiagnosticCode.shadowedBinary.rawValue && geometry.binaryBase == nil)
        }
        if !blocking.isEmpty {
            if json, !output.hasStarted { output.json("start", startFields(soc: nil)) }
            for diagnostic in blocking {
                var shown = diagnostic
                shown.severity = .error
                if json {
                    output.json("diagnostic", Self.diagnosticFields(shown))
                } else {
                    Terminal.error(DiagnosticPrinter.render(shown, path: layout, color: Terminal.useColor(2)))
                }
            }
            let shown = TerminalText.escaped(layout)
            if check.diagnostics.contains(where: { $0.code == DiagnosticCode.shadowedBinary.rawValue }),
                geometry.binaryBase == nil
            {
                Terminal.error(
                    "\(shown): a Binary exists next to the layout and in the working directory as different files; pick one with --binaries-from layout (STM32CubeProgrammer's choice) or --binaries-from cwd"
                )
            }
            Terminal.error("\(shown): not flashing a layout with errors (stm32mp-flash check \(shown))")
            throw FlashPreflightError(
                code: "invalid-layout", cause: "the layout has errors; nothing was sent",
                message: "\(blocking.count) error(s) in \(layout) (stm32mp-flash check \(layout))")
        }
        switch PartitionPlanner.plan(check.lines, options: options) {
        case .success(let plan): return plan
        case .failure(let error):
            let message =
                "\(layout)\(error.line.map { ":\($0)" } ?? ""): error: U-Boot would reject this device: \(error.message) [device-check]"
            Terminal.error(TerminalText.escaped(message))
            throw FlashPreflightError(
                code: "invalid-layout", cause: "U-Boot would reject a device of this layout; nothing was sent",
                message: message)
        }
    }

    /// A `check --json` diagnostic as the fields of a `diagnostic` event.
    static func diagnosticFields(_ diagnostic: LayoutDiagnostic) -> [String: JSONValue] {
        [
            "line": .number(Double(diagnostic.line)), "column": .number(Double(diagnostic.column)),
            "severity": .string(diagnostic.severity.rawValue), "code": .string(diagnostic.code),
            "message": .string(diagnostic.message),
        ]
    }

    /// The virtual board for this layout: its chip, and one storage device per layout device.
    func simulationConfiguration(_ plan: PartitionPlan) throws -> BoardConfiguration {
        let chip = soc.flatMap(VirtualSoC.init(rawValue:)) ?? Self.inferSoC(plan)
        let sizes = try DeviceGeometryOptions.parse(geometry.deviceSizes, option: "--device-size")
        var storage: [StorageDeviceConfiguration] = []
        for device in plan.devices where device.target.kind != .ram {
            let name = device.target.description
            let size = sizes[name] ?? (4 << 30)
            if device.target.kind == .mmc, device.geometry.bootPartitionSize != nil {
                storage.append(
                    .eMMC(name, size: size, bootPartitionSize: device.geometry.bootPartitionSize ?? (4 << 20)))
            } else if device.target.kind == .mmc {
                storage.append(.sdCard(name, size: size))
            } else {
                storage.append(StorageDeviceConfiguration(name: name, size: size, eraseSize: device.geometry.eraseSize))
            }
        }
        if storage.isEmpty { storage = [.sdCard("mmc0")] }
        var configuration = BoardConfiguration(
            soc: chip, storageDirectory: simulationDirectory, storage: storage, timing: BoardTiming(),
            fault: FaultScenario(rawValue: scenario) ?? .none)
        configuration.tfaBufferBase = simTFABufferBase.flatMap(Self.tfaBufferAddress)
        // The simulated U-Boot's fastboot flashes the layout's MMC (as a FIP built for it would).
        if let mmc = plan.devices.first(where: {
            $0.target.kind == .mmc && $0.partitions.contains { $0.line.isRequested }
        }) {
            configuration.fastboot.mmcDevice = mmc.target.index
        }
        return configuration
    }

    /// Lines in first-seen order without repeats (a firmware retrying prints the same line twice).
    static func unique(_ lines: [String]) -> [String] {
        var seen: Set<String> = []
        return lines.filter { seen.insert($0).inserted }
    }

    /// MP25 when the layout has a DDR-firmware line; else from the FSBL's STM32 header.
    static func inferSoC(_ plan: PartitionPlan) -> VirtualSoC {
        if plan.bootStages.contains(where: { $0.line.id == 0x02 }) { return .mp25 }
        if let fsbl = plan.bootStages.first(where: { $0.line.id == 0x01 })?.file,
            let report = try? BootImageInspector.inspect(path: fsbl)
        {
            if report.chipHint == [.mp13] { return .mp13 }
            if report.chipHint == [.mp2] { return .mp25 }
        }
        return .mp15
    }

    func report(_ summary: FlashSummary, plan: PartitionPlan, board: VirtualBoard?, output: FlashOutput) {
        let bytes = summary.phases.reduce(Int64(0)) { $0 + $1.bytes }
        let images =
            board.map { board in
                board.storage.devices.flatMap { device -> [String] in
                    var paths = [board.storage.path(device: device.name)]
                    if device.bootPartitionSize != nil {
                        paths += [1, 2].map { board.storage.path(device: device.name, hardwarePartition: $0) }
                    }
                    return paths
                }
            } ?? []
        if json {
            output.json(
                "done",
                [
                    "seconds": .number(summary.duration.inSeconds), "bytes": .number(Double(bytes)),
                    "partitions": .array(summary.partitions.map { .string(phaseHex($0)) }),
                    "transfers": .number(Double(summary.controlTransfers)),
                    "images": .array(images.map { .string($0) }),
                    "checks": .array(summary.checks.map { .object(FlashOutput.checkFields($0)) }),
                    "skipped": .array((summary.resume?.skipped ?? []).map { .string(phaseHex($0)) }),
                    "skippedBytes": .number(Double(summary.resume?.skippedBytes ?? 0)),
                ])
            return
        }
        output.line("")
        output.line(
            output.style(.green, "Done:")
                + " \(summary.partitions.count) partition(s), \(ByteSize.format(UInt64(bytes))) in \(FlashOutput.formatSeconds(summary.duration))"
                + (board != nil && !realtime ? " of simulated time" : ""))
        for result in summary.phases where plan.requestOrder.contains(result.phase) {
            output.line(
                "  \(phaseHex(result.phase)) \(output.pad(result.name, 12)) \(output.pad(ByteSize.format(UInt64(result.bytes)), 10)) \(output.pad(FlashOutput.formatSeconds(result.duration), 8)) \(FlashOutput.formatRate(result.megabytesPerSecond))"
            )
        }
        if let resume = summary.resume, !resume.skipped.isEmpty {
            output.line(
                "  resumed: skipped \(resume.skipped.map(phaseHex).joined(separator: ", ")) "
                    + "(\(ByteSize.format(UInt64(resume.skippedBytes))) already on the board, checked by readback)")
        }
        let verified = summary.checks.filter { $0.method == .full || $0.method == .sampled }
        if !verified.isEmpty {
            output.line(
                "  verified by readback: "
                    + verified.map { "\(phaseHex($0.phase)) (\($0.method.rawValue))" }.joined(separator: ", "))
        }
        if !images.isEmpty { output.line("Virtual board storage: " + images.joined(separator: " ")) }
    }
}

/// A run that stops before the board: the layout has errors or U-Boot would reject a device.
/// `code` is the `failed` event's code (docs/json.md, "Before the board").
struct FlashPreflightError: Error, CustomStringConvertible {
    var code: String
    var cause: String
    var message: String
    var description: String { message }
}

/// The real USB bus (libusb + libudev); see SystemUSBBus.
enum SystemBus {
    static func make() throws -> any USBBus {
        try SystemUSBBus()
    }
}
