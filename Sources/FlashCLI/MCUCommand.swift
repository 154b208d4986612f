import ArgumentParser
import BoardTracking
import DfuSe
import Diagnostics
import FoundationEssentials
import Glibc
import MCUEngine
import MCUImages
import Synchronization
import TerminalText
import Timekeeping
import USBModel
import VirtualBoard
import VirtualMCU

/// `stm32mp-flash mcu …`: STM32 microcontrollers in their system bootloader (DfuSe, AN3156).
struct MCUCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcu",
        abstract: "Program STM32 microcontrollers in their USB DFU system bootloader (DfuSe, AN3156).",
        discussion: """
            MCU bootloaders enumerate as 0483:df11 like the STM32MP stages; these commands speak ST's \
            DfuSe extensions to them. See docs/mcu.md. Exit status: 0 done, 1 failed, 2 usage errors, 130/143 stopped by SIGINT/SIGTERM.
            """,
        subcommands: [
            MCUInfoCommand.self, MCUWriteCommand.self, MCUReadCommand.self, MCUEraseCommand.self,
            MCUOptionBytesCommand.self, MCUUnprotectCommand.self, MCULeaveCommand.self,
        ])
}

/// Options every `mcu` subcommand shares: which device, or which virtual MCU.
struct MCUOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The MCU's USB port path, e.g. 1-2.3.", valueName: "path"))
    var port: String?

    @Option(
        help: ArgumentHelp(
            "The MCU's USB serial number (many bootloaders report one constant serial: prefer --port).",
            valueName: "serial"))
    var serial: String?

    @Option(help: ArgumentHelp("Seconds to wait for an MCU to appear.", valueName: "seconds"))
    var waitTimeout: Double = 5

    @Flag(help: "Use a built-in virtual MCU instead of real USB.")
    var simulate = false

    @Option(
        help: ArgumentHelp(
            "Virtual MCU family: \(MCUFamily.all.map(\.id).joined(separator: ", ")).", valueName: "family"))
    var mcu = "f746"

    @Option(
        name: .customLong("sim-dir"),
        help: ArgumentHelp("Where the virtual MCU keeps its flash and option bytes between runs.", valueName: "dir"))
    var simulationDirectory = "virtual-board"

    @Option(
        name: .customLong("sim-scenario"),
        help: ArgumentHelp(
            "A fault of the virtual MCU: \(MCUScenario.allCases.map(\.rawValue).joined(separator: ", ")).",
            valueName: "name"))
    var scenario = "none"

    @Flag(help: "Print JSON Lines events instead of text (docs/json.md).")
    var json = false

    @Flag(
        name: .shortAndLong,
        help: "No progress or step lines; only the result data, warnings, errors and the diagnosis.")
    var quiet = false

    func validate() throws {
        if port != nil && serial != nil { throw ValidationError("give --port or --serial, not both") }
        if let port, PortPath(port) == nil {
            throw ValidationError("--port takes a USB port path like 1-2.3, got '\(port)'")
        }
        if MCUFamily.named(mcu) == nil {
            throw ValidationError("--mcu takes \(MCUFamily.all.map(\.id).joined(separator: ", ")), got '\(mcu)'")
        }
        if MCUScenario(rawValue: scenario) == nil {
            throw ValidationError(
                "unknown --sim-scenario '\(scenario)'; known: \(MCUScenario.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
    }

    var selection: MCUSelection {
        port.flatMap(PortPath.init).map { .port($0) } ?? serial.map { .serial($0) } ?? .any
    }
}

/// Runs one MCU command: the bus (real or virtual) and the process's board tracker, the output,
/// the diagnosis on failure and the final `done`/`failed` line.
struct MCURunner {
    let options: MCUOptions
    let command: String
    let output: FlashOutput
    private(set) var virtual: VirtualMCU?
    let bus: any USBBus
    /// One tracker per process: the command takes its MCU through a lease, like `flash` its board.
    let tracker: BoardTracker

    init(_ options: MCUOptions, command: String) throws {
        self.options = options
        self.command = command
        output = FlashOutput(
            mode: options.json ? .json : Terminal.isInteractive(1) ? .interactive : .plain, quiet: options.quiet)
        if options.simulate {
            let family = MCUFamily.named(options.mcu)!
            let configuration = MCUConfiguration(
                family: family, scenario: MCUScenario(rawValue: options.scenario)!,
                memoryDirectory: options.simulationDirectory)
            let mcu: VirtualMCU
            do { mcu = try VirtualMCU(configuration: configuration) } catch {
                Terminal.error("error: \(error)")
                throw ExitCode.failure
            }
            virtual = mcu
            bus = VirtualUSBBus(clock: SimulatedClock(), boards: [mcu])
        } else {
            bus = try SystemBus.make()
        }
        tracker = BoardTracker(bus: bus)
    }

    func session() -> MCUSession {
        var session = MCUSession(tracker: tracker, selection: options.selection) { [output] event in
            MCURunner.render(event, output)
        }
        session.arrivalTimeout = .milliseconds(Int64(options.waitTimeout * 1000))
        return session
    }

    /// Runs `body`; prints `done` with its fields, or the diagnosis and `failed`.
    func run(_ body: @escaping @Sendable (MCUSession) async throws(MCUFailure) -> [String: JSONValue]) async throws {
        Interrupts.arm()
        if options.json {
            var fields: [String: JSONValue] = [
                "command": .string(command), "mode": .string(options.simulate ? "simulate" : "usb"),
            ]
            if options.simulate {
                fields["mcu"] = .string(options.mcu)
                fields["scenario"] = .string(options.scenario)
            }
            output.json("start", fields)
        } else if options.simulate {
            output.line(
                "Virtual \(MCUFamily.named(options.mcu)!.name)"
                    + (options.scenario == "none" ? "" : " (scenario: \(options.scenario))")
                    + ", memory in \(options.simulationDirectory)")
        }
        let session = session()
        let start = bus.clock.now
        let json = options.json
        let forcedExit: @Sendable (Int32) -> Void = { [output, command] _ in
            if json {
                output.json(
                    "failed",
                    [
                        "code": .string(DiagnosisCode.cancelled.rawValue),
                        "cause": .string(DiagnosisCode.cancelled.summary),
                        "error": .string("cancelled (second signal: exit at once)"), "operation": .string(command),
                    ])
            } else {
                Terminal.error("cancelled (second signal): the MCU may be left with sectors erased or half written")
            }
        }
        do {
            var fields = try await Interrupts.cancellingOnInterrupt(onForcedExit: forcedExit) {
                () async throws -> [String: JSONValue] in
                do { return try await body(session) } catch { throw error }
            }
            // A signal never ends in success, even when the last step had already finished.
            if Interrupts.received.load(ordering: .sequentiallyConsistent) != 0 {
                throw MCUFailure(.cancelled, facts: MCUFacts(), operation: command)
            }
            if let failures = virtual?.hostFailures, !failures.isEmpty {
                Terminal.error("error: " + failures.joined(separator: "; "))
                throw ExitCode.failure
            }
            fields["seconds"] = .number((bus.clock.now - start).inSeconds)
            if options.json { output.json("done", fields) }
        } catch let failure as MCUFailure {
            report(failure)
            throw Self.exitCode(failure)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            let failure = MCUFailure(.cancelled, facts: MCUFacts(), operation: command)
            report(failure)
            throw Self.exitCode(failure)
        }
    }

    /// 130 (SIGINT) or 143 (SIGTERM) when a signal stopped the command, 1 for any other failure.
    static func exitCode(_ failure: MCUFailure) -> ExitCode {
        let signal = Interrupts.received.load(ordering: .sequentiallyConsistent)
        if case .cancelled = failure.kind, signal != 0 { return ExitCode(Interrupts.exitStatus(for: signal)) }
        return .failure
    }

    func report(_ failure: MCUFailure) {
        // The input is at fault (a file that does not fit, an address outside the memories): an
        // error naming the addresses, no device diagnosis; JSON `failed` has `code: null`.
        switch failure.kind {
        case .plan, .unsupported:
            if options.json {
                output.json(
                    "failed",
                    [
                        "code": .null, "cause": .string(failure.description), "error": .string(failure.description),
                        "operation": .string(failure.operation),
                    ])
            } else {
                Terminal.error("error: \(failure.description)")
                if let advice = MCUDiagnoser.advisory(failure.facts) {
                    output.important(TerminalText.escaped(advice.text, keepNewlines: true))
                }
            }
            return
        default: break
        }
        let diagnosis = MCUDiagnoser.diagnose(failure)
        if options.json {
            output.json("diagnosis", diagnosis.jsonFields)
            output.json(
                "failed",
                [
                    "code": .string(diagnosis.code.rawValue), "cause": .string(diagnosis.cause),
                    "error": .string(failure.description), "operation": .string(failure.operation),
                ])
        } else {
            output.important("")
            output.important(output.style(.red, "error: ") + failure.description)
            output.important(TerminalText.escaped(diagnosis.text, keepNewlines: true))
        }
    }

    private static let lastProgress = Mutex<[String: Int]>([:])

    static func render(_ event: MCUEvent, _ output: FlashOutput) {
        let json = output.mode == .json
        switch event {
        case .found(let identity, let kind):
            if json {
                output.json("found", deviceFields(identity, kind))
            } else {
                output.line(
                    "\(identity.port): \(describe(kind)) \"\(shown(identity.product))\" serial \(shown(identity.serial))"
                )
            }
        case .erasing(let sector, let index, let count):
            if json {
                output.json(
                    "erase",
                    ["address": .string(address(UInt64(sector.address))), "size": .number(Double(sector.size))])
            } else if index == 0 {
                output.line("Erasing \(count) sector(s) from \(address(UInt64(sector.address)))")
            }
        case .progress(let phase, let bytes, let total):
            // About every 10 % (JSON: at least every 64 KiB step of 1 %), and at the end.
            let step = max(total / (json ? 100 : 10), json ? 65_536 : 1)
            let due = lastProgress.withLock { last -> Bool in
                let previous = last[phase] ?? -1
                let now = bytes / max(step, 1)
                guard bytes == total || now != previous / max(step, 1) || previous < 0 else { return false }
                last[phase] = bytes == total ? -1 : bytes
                return true
            }
            guard due else { return }
            if json {
                output.json(
                    "progress",
                    ["phase": .string(phase), "bytes": .number(Double(bytes)), "total": .number(Double(total))])
            } else if bytes == total {
                output.line("  \(phase): \(bytes) bytes")
            }
        case .verified(let bytes):
            if json {
                output.json("verified", ["bytes": .number(Double(bytes))])
            } else {
                output.line("Verified \(bytes) bytes")
            }
        case .waitingForReset(let step):
            if json {
                output.json("reset", ["after": .string(step)])
            } else {
                output.line("The MCU resets after \(step); waiting for it to enumerate again…")
            }
        case .reenumerated(let identity):
            if json {
                output.json(
                    "reenumeration",
                    [
                        "port": .string(identity.port.description),
                        "product": identity.product.map { .string($0) } ?? .null,
                        "serial": identity.serial.map { .string($0) } ?? .null,
                    ])
            } else {
                output.line("\(identity.port): back as \"\(shown(identity.product))\"")
            }
        }
    }

    static func describe(_ kind: MCUKind) -> String {
        switch kind {
        case .systemBootloader(let family, let version):
            "STM32 system bootloader v\(MCUKind.versionText(version))" + (family.map { " (\($0.name))" } ?? "")
        case .applicationDFU(let family):
            "application DFU (not ST's bootloader)" + (family.map { " on \($0.name)" } ?? "")
        }
    }

    static func deviceFields(_ identity: USBDeviceIdentity, _ kind: MCUKind?) -> [String: JSONValue] {
        [
            "port": .string(identity.port.description), "vidpid": .string(identity.vendorProduct),
            "product": identity.product.map { .string($0) } ?? .null,
            "serial": identity.serial.map { .string($0) } ?? .null,
            "kind": kind.map { .string($0.name) } ?? .null, "family": kind?.family.map { .string($0.id) } ?? .null,
            "bootloaderVersion": kind.flatMap { kind -> JSONValue? in
                if case .systemBootloader(_, let version) = kind { return .string(MCUKind.versionText(version)) }
                return nil
            } ?? .null,
        ]
    }
}

/// The decoded option-byte fields: [{`name`, `value`, `meaning`}].
func decodedJSON(_ facts: MCUFacts) -> JSONValue {
    .array(
        facts.decodedOptionBytes.map {
            .object(["name": .string($0.name), "value": .number(Double($0.value)), "meaning": .string($0.meaning)])
        })
}

/// A USB string for a terminal: control characters escaped, long ones shortened.
func shown(_ text: String?) -> String { text.map { TerminalText.field($0) } ?? "?" }

/// `0x08000000`, decimal, or with a K/M suffix (`512K`).
func parseNumber(_ text: String, option: String) throws -> UInt64 {
    var body = Substring(text.trimmingWhitespace)
    var scale: UInt64 = 1
    for (suffix, value) in [("KiB", 1024), ("MiB", 1 << 20), ("K", 1024), ("M", 1 << 20)] as [(String, UInt64)]
    where body.hasSuffix(suffix) {
        scale = value
        body = body.dropLast(suffix.count)
        break
    }
    let parsed: UInt64? =
        body.lowercased().hasPrefix("0x") ? UInt64(body.dropFirst(2), radix: 16) : UInt64(body)
    guard let parsed, parsed.multipliedReportingOverflow(by: scale).overflow == false else {
        throw ValidationError("\(option) takes a number like 0x08000000, 65536 or 64K, got '\(text)'")
    }
    return parsed * scale
}

func hexString(_ bytes: [UInt8]) -> String {
    bytes.map { b in
        let s = String(b, radix: 16, uppercase: true)
        return s.count < 2 ? "0" + s : s
    }.joined(separator: " ")
}

// MARK: - Subcommands

struct MCUInfoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "What the MCU is: bootloader or application DFU, family, version, commands, memories, option bytes.")

    @OptionGroup var options: MCUOptions

    func run() async throws {
        let runner = try MCURunner(options, command: "info")
        let output = runner.output
        try await runner.run { session throws(MCUFailure) in
            let facts = try await session.info()
            return MCUInfoCommand.present(facts, output)
        }
    }

    static func present(_ facts: MCUFacts, _ output: FlashOutput) -> [String: JSONValue] {
        var fields: [String: JSONValue] = facts.identity.map { MCURunner.deviceFields($0, facts.kind) } ?? [:]
        fields["commands"] = facts.commands.map { .array($0.map { .string(String(format2: $0)) }) } ?? .null
        fields["alternates"] = .array(
            facts.alternates.enumerated().map { index, name in
                var object: [String: JSONValue] = [
                    "alternate": .number(Double(index)), "name": name.map { .string($0) } ?? .null,
                ]
                if let map = name.flatMap(DfuSeMemoryMap.init) {
                    object["start"] = .string(address(UInt64(map.start)))
                    object["size"] = .number(Double(map.totalSize))
                    object["sectors"] = .number(Double(map.sectors.count))
                }
                return .object(object)
            })
        fields["optionBytes"] = facts.optionBytes.map { .string(hexString($0)) } ?? .null
        fields["optionBytesError"] = facts.optionBytesFailure.map { .string($0.description) } ?? .null
        fields["decoded"] = decodedJSON(facts)
        fields["uid"] = facts.uid.map { .string(hexString($0)) } ?? .null
        fields["expectedSerial"] = facts.expectedSerial.map { .string($0) } ?? .null
        fields["serialMatchesUID"] = facts.expectedSerial == nil ? .null : .bool(!facts.serialMismatch)
        fields["notes"] = .array(MCUInfoCommand.notes(facts).map { .string($0) })
        fields["deviceID"] = facts.deviceID.map { .string($0.description) } ?? .null
        fields["deviceIDSource"] = facts.deviceID.map { .string($0.source.rawValue) } ?? .null
        fields["series"] = facts.deviceID.map { .string($0.series) } ?? .null
        let warning = MCUInfoCommand.warning(facts)
        if output.mode == .json {
            output.json("info", fields)
            if let warning { output.json("diagnosis", warning.jsonFields) }
            return [:]
        }
        if let id = facts.deviceID {
            output.important("  device ID: \(id) (\(id.series), from the memory map)")
        } else {
            output.important("  device ID: unknown (the memory map names no single product line)")
        }
        if let commands = facts.commands {
            output.important(
                "  DfuSe commands (Get): \(hexString(commands))"
                    + (commands.contains(0x92) ? "" : "  (no Read Unprotect)"))
        }
        for (index, name) in facts.alternates.enumerated() {
            var line = "  alt \(index): \(name.map { TerminalText.field($0) } ?? "(unreadable)")"
            if let map = name.flatMap(DfuSeMemoryMap.init) {
                line += "  → \(address(UInt64(map.start)))–\(address(map.end - 1)), \(map.sectors.count) sector(s)"
            }
            output.important(line)
        }
        if let block = facts.optionBytes {
            output.important("  option bytes: \(hexString(block))")
            for field in facts.decodedOptionBytes { output.important("    \(field.name) = \(field.meaning)") }
        } else if let failure = facts.optionBytesFailure {
            output.important("  option bytes: could not be read (\(failure.description))")
        }
        if let uid = facts.uid {
            output.important("  UID: \(hexString(uid))")
            if let expected = facts.expectedSerial {
                output.important(
                    "  serial: \(facts.serialMismatch ? "does NOT follow the UID rule (expected \(expected))" : "follows the UID rule")"
                )
            }
        }
        for note in notes(facts) { output.important("  note: \(note)") }
        if let warning {
            output.important("")
            output.important(TerminalText.escaped(warning.text, keepNewlines: true))
        }
        return [:]
    }

    /// Family notes (H5 OBK, H7 SMPS/LDO), and a constant serial.
    static func notes(_ facts: MCUFacts) -> [String] {
        var notes = facts.family?.notes ?? []
        if let flash = facts.alternates.compactMap({ $0 }).first(where: { $0.contains("Internal Flash") }) {
            notes += MCUFamily.seriesNotes(flashString: flash)
        }
        if facts.identity?.serial == "STM32FxSTM32" {
            notes.append(
                "This bootloader reports the constant serial STM32FxSTM32: tell boards apart by --port, not --serial.")
        }
        return notes
    }

    /// A diagnosis worth showing although the command worked (an application DFU, a wrong clock).
    static func warning(_ facts: MCUFacts) -> Diagnosis? { MCUDiagnoser.advisory(facts) }
}

struct MCUWriteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "write",
        abstract:
            "Write a .bin (needs --address), Intel HEX, DfuSe .dfu or ELF file; erase only the sectors written; verify."
    )

    @Argument(help: "The firmware file.")
    var file: String

    @Option(help: ArgumentHelp("Where a raw binary goes, e.g. 0x08000000.", valueName: "address"))
    var address: String?

    @Flag(help: "Skip reading back and comparing.")
    var noVerify = false

    @OptionGroup var options: MCUOptions

    func run() async throws {
        let at = try address.map { try parseNumber($0, option: "--address") }
        let image: MCUImage
        do { image = try MCUImage.load(path: file, address: at) } catch {
            Terminal.error(error.description)
            throw ExitCode.failure
        }
        let runner = try MCURunner(options, command: "write")
        let output = runner.output
        let verify = !noVerify
        output.line("\(file): \(image.format.rawValue), \(image.byteCount) bytes in \(image.segments.count) segment(s)")
        try await runner.run { session throws(MCUFailure) in
            let report = try await session.write(image, verify: verify)
            output.line(
                output.style(.green, "Done:")
                    + " \(report.bytes) bytes written\(report.verified ? " and verified" : ""), \(report.erased.count) sector(s) erased, \(report.controlTransfers) control transfers"
            )
            return [
                "bytes": .number(Double(report.bytes)), "verified": .bool(report.verified),
                "erased": .array(report.erased.map { .string(DfuSe.address(UInt64($0.address))) }),
                "transfers": .number(Double(report.controlTransfers)),
            ]
        }
    }
}

struct MCUReadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "read", abstract: "Read memory into a file.")

    @Option(help: ArgumentHelp("First address, e.g. 0x08000000.", valueName: "address"))
    var address: String

    @Option(help: ArgumentHelp("How many bytes (64K, 0x10000, 65536).", valueName: "bytes"))
    var length: String

    @Option(help: ArgumentHelp("The file to write (replaced if it exists).", valueName: "file"))
    var output: String

    @OptionGroup var options: MCUOptions

    func run() async throws {
        let start = try parseNumber(address, option: "--address")
        let count = try parseNumber(length, option: "--length")
        guard count > 0, count <= 64 << 20 else { throw ValidationError("--length must be 1 byte to 64 MiB") }
        let runner = try MCURunner(options, command: "read")
        let path = output
        let out = runner.output
        try await runner.run { session throws(MCUFailure) in
            let bytes = try await session.read(address: start, length: Int(count))
            do { try FileTree.write(bytes, to: path) } catch {
                throw MCUFailure(.unsupported("\(error)"), facts: MCUFacts(), operation: "read")
            }
            out.line(
                out.style(.green, "Done:") + " \(bytes.count) bytes from \(DfuSe.address(start)) written to \(path)")
            return [
                "bytes": .number(Double(bytes.count)), "output": .string(path),
                "address": .string(DfuSe.address(start)),
            ]
        }
    }
}

struct MCUEraseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "erase", abstract: "Mass erase, or erase the sectors a range touches.")

    @Flag(help: "Erase the whole flash.")
    var mass = false

    @Option(help: ArgumentHelp("First address of the range.", valueName: "address"))
    var address: String?

    @Option(help: ArgumentHelp("Length of the range.", valueName: "bytes"))
    var length: String?

    @OptionGroup var options: MCUOptions

    func validate() throws {
        guard mass != (address != nil || length != nil), mass || (address != nil && length != nil) else {
            throw ValidationError("give --mass, or --address and --length")
        }
    }

    func run() async throws {
        let range = try address.map {
            (try parseNumber($0, option: "--address"), try parseNumber(length ?? "0", option: "--length"))
        }
        let runner = try MCURunner(options, command: "erase")
        let out = runner.output
        try await runner.run { session throws(MCUFailure) in
            let sectors = try await session.erase(range: range.map { (address: $0.0, length: $0.1) })
            out.line(out.style(.green, "Done:") + (range == nil ? " mass erase" : " \(sectors.count) sector(s) erased"))
            return [
                "mass": .bool(range == nil),
                "erased": .array(sectors.map { .string(DfuSe.address(UInt64($0.address))) }),
            ]
        }
    }
}

struct MCUOptionBytesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "option-bytes",
        abstract: "Read the option bytes (decoded where documented), or write them (the chip resets).")

    @Option(help: ArgumentHelp("Write this whole option-byte block (binary file).", valueName: "file"))
    var write: String?

    @Option(help: ArgumentHelp("Change one field, e.g. RDP=0xAA (repeatable).", valueName: "NAME=VALUE"))
    var set: [String] = []

    @OptionGroup var options: MCUOptions

    func validate() throws {
        if write != nil && !set.isEmpty { throw ValidationError("give --write or --set, not both") }
    }

    func run() async throws {
        let changes = try set.map { item -> (name: String, value: UInt32) in
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let value = UInt32(exactly: try parseNumber(String(parts[1]), option: "--set"))
            else {
                throw ValidationError("--set takes NAME=VALUE, e.g. RDP=0xAA, got '\(item)'")
            }
            return (String(parts[0]), value)
        }
        var block: [UInt8]?
        if let write {
            do { block = try FileTree.read(write) } catch {
                Terminal.error("\(write): cannot read: \(error)")
                throw ExitCode.failure
            }
        }
        let runner = try MCURunner(options, command: "option-bytes")
        let out = runner.output
        let writing = block != nil || !changes.isEmpty
        try await runner.run { [block] session throws(MCUFailure) in
            if !writing {
                let facts = try await session.readOptionBytes()
                _ = MCUInfoCommand.present(facts, out)
                return ["optionBytes": .string(hexString(facts.optionBytes ?? []))]
            }
            let (before, after) = try await session.writeOptionBytes(block: block, changes: changes)
            out.line("Before: \(hexString(before))")
            out.line("After:  \(hexString(after.optionBytes ?? []))")
            return [
                "before": .string(hexString(before)),
                "after": after.optionBytes.map { .string(hexString($0)) } ?? .null,
                "decoded": decodedJSON(after),
            ]
        }
    }
}

struct MCUUnprotectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unprotect",
        abstract: "Read Unprotect (0x92): erases the whole flash and RAM, option bytes back to level 0, reset.")

    @Flag(help: "Confirm that everything on the MCU may be erased.")
    var yes = false

    @OptionGroup var options: MCUOptions

    func run() async throws {
        guard yes else {
            Terminal.error(
                "error: Read Unprotect erases the whole flash, the RAM and the option bytes; run again with --yes to do it"
            )
            throw ExitCode.failure
        }
        let runner = try MCURunner(options, command: "unprotect")
        let out = runner.output
        try await runner.run { session throws(MCUFailure) in
            let facts = try await session.unprotect()
            out.line(out.style(.green, "Done:") + " read protection removed; the flash is erased")
            return ["readProtected": facts.readProtected.map { .bool($0) } ?? .null]
        }
    }
}

struct MCULeaveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "leave", abstract: "Leave DFU and start the application (at --address's vector table).")

    @Option(help: ArgumentHelp("The vector table to start from, e.g. 0x08000000.", valueName: "address"))
    var address: String?

    @OptionGroup var options: MCUOptions

    func run() async throws {
        let at = try address.map { try parseNumber($0, option: "--address") }
        guard at.map({ $0 <= UInt64(UInt32.max) }) ?? true else { throw ValidationError("--address is beyond 32 bits") }
        let runner = try MCURunner(options, command: "leave")
        let out = runner.output
        try await runner.run { session throws(MCUFailure) in
            try await session.leave(address: at.map { UInt32($0) })
            out.line(out.style(.green, "Done:") + " the MCU left DFU")
            return ["address": at.map { .string(DfuSe.address($0)) } ?? .null]
        }
    }
}
