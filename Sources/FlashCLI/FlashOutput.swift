import BoardTracking
import Diagnostics
import FlashEngine
import FlashLayout
import FoundationEssentials
import Glibc
import Synchronization
import TerminalText
import Timekeeping
import USBModel

/// How `flash` talks to the person or program watching it.
enum FlashOutputMode {
    /// A redrawn progress bar on a terminal.
    case interactive
    /// One line per phase and transition (CI logs, pipes).
    case plain
    /// JSON Lines on stdout (docs/json.md).
    case json
}

/// When a plain log (stderr not a terminal) gets a progress line during a long phase: every
/// `step` percent of the phase or after `interval` of silence, whichever comes first, so a CI log
/// never goes quiet for long and never floods. Times come from the injected clock.
struct ProgressThrottle {
    var interval: Duration = .seconds(5)
    var stepPercent = 10
    private var lastTime: Duration = .zero
    private var lastStep = 0

    /// A phase starts at `now`: its first line comes after a step or an interval.
    mutating func start(at now: Duration) {
        lastTime = now
        lastStep = 0
    }

    /// True when a progress line is due for `sent` of `total` bytes at `now`. The end of the
    /// phase is not a progress line (the phase's own line says it).
    mutating func due(sent: Int64, total: Int64, now: Duration) -> Bool {
        guard total > 0, sent < total else { return false }
        let step = Int(sent * 100 / total) / stepPercent
        guard step > lastStep || now - lastTime >= interval else { return false }
        lastStep = max(lastStep, step)
        lastTime = now
        return true
    }
}

/// The one owner of the terminal while flashing: renders engine events in the chosen mode. The
/// engine calls it from its task; a mutex keeps lines whole.
final class FlashOutput: Sendable {
    let mode: FlashOutputMode
    private let color: Bool
    private let state = Mutex(State())

    private struct State {
        var barVisible = false
        var phaseName = ""
        var phaseStage: BoardStage = .unknown
        var lastDraw: Duration = .zero
        /// A DETACH is pending: the next identity is reported by the re-enumeration line.
        var awaitingBoard = false
        var throttle = ProgressThrottle()
        /// JSON: `start` and the final `done`/`failed` were written (each exactly once).
        var started = false
        var finished = false
        var warnedFullSpeed = false
    }

    /// The engine's clock (simulated time with `--simulate`): the progress throttle runs on it.
    private let clock: any FlashClock
    /// `--quiet`: no progress, no step lines; warnings, errors and the diagnosis still print.
    let quiet: Bool

    /// Several boards in one run: `port` and `serial` added to every JSON line of this board.
    let tags: BoardTags?

    /// Where human output goes: stderr, or a station's per-attempt log file.
    let humanFD: Int32

    init(
        mode: FlashOutputMode, quiet: Bool = false, clock: any FlashClock = SystemClock(), tags: BoardTags? = nil,
        humanFD: Int32 = 2
    ) {
        self.humanFD = humanFD
        self.tags = tags
        self.mode = mode
        self.quiet = quiet
        self.clock = clock
        color = mode == .interactive && Terminal.useColor(2)
    }

    /// True once `start` was written (JSON).
    var hasStarted: Bool { state.withLock { $0.started } }
    /// True once `done` or `failed` was written (JSON): nothing may follow.
    var hasFinished: Bool { state.withLock { $0.finished } }

    // MARK: JSON Lines

    /// Writes one JSON object per line, with `"event"` first for readability.
    func json(_ event: String, _ fields: [String: JSONValue]) {
        var object = fields
        object["event"] = .string(event)
        if let tags {
            let (port, serial) = tags.values
            object["port"] = .string(port)
            if object["serial"] == nil || object["serial"].map({ if case .null = $0 { true } else { false } }) == true {
                object["serial"] = serial.map { .string($0) } ?? .null
            }
        }
        let last = state.withLock { state -> Bool in
            if event == "start" { state.started = true }
            defer { if event == "done" || event == "failed" { state.finished = true } }
            return state.finished
        }
        // The contract (docs/json.md): `done`/`failed` is the last line, whatever else happens.
        guard !last else { return }
        writeOut(JSONValue.object(object).encoded(firstKey: "event") + "\n")
    }

    // MARK: Engine events

    func handle(_ event: FlashEvent) {
        switch mode {
        case .json: json(event)
        case .plain, .interactive: text(event)
        }
        switch event {
        case .board(let identity, _), .reenumerated(_, _, let identity, _): warnIfFullSpeed(identity)
        default: break
        }
    }

    private func json(_ event: FlashEvent) {
        switch event {
        case .waitingForBoard(let expecting, let remaining):
            json(
                "waiting",
                [
                    "expecting": expecting.map { .string($0.rawValue) } ?? .null,
                    "remaining": .number(remaining.inSeconds.rounded()),
                ])
        case .board(let identity, let stage):
            json("board", identityFields(identity).merging(["stage": .string(stage.rawValue)]) { $1 })
        case .stageConfirmed(let stage):
            json("stage", ["stage": .string(stage.rawValue)])
        case .phaseStarted(let phase, let name, let bytes, let stage):
            json(
                "phase-start",
                [
                    "phase": .string(phaseHex(phase)), "name": .string(name), "bytes": .number(Double(bytes)),
                    "stage": .string(stage.rawValue),
                ])
        case .progress(let phase, let sent, let total):
            json(
                "progress",
                ["phase": .string(phaseHex(phase)), "sent": .number(Double(sent)), "total": .number(Double(total))])
        case .phaseFinished(let result):
            json(
                "phase-done",
                [
                    "phase": .string(phaseHex(result.phase)), "name": .string(result.name),
                    "stage": .string(result.stage.rawValue),
                    "bytes": .number(Double(result.bytes)), "seconds": .number(result.duration.inSeconds),
                    "mbps": .number((result.megabytesPerSecond * 100).rounded() / 100),
                    "transfers": .number(Double(result.controlTransfers)),
                ])
        case .detached(let from, let expecting, let timeout):
            json(
                "detach",
                [
                    "from": .string(from.rawValue), "expecting": expecting.map { .string($0.rawValue) } ?? .null,
                    "timeout": .number(timeout.inSeconds),
                ])
        case .reenumerated(let from, let to, let device, let after):
            json(
                "reenumeration",
                identityFields(device).merging([
                    "from": .string(from.rawValue), "to": .string(to.rawValue), "seconds": .number(after.inSeconds),
                ]) { $1 })
        case .otherPort(let device):
            json("other-port", identityFields(device))
        case .end:
            json("end", [:])
        case .verified(let check):
            json("verified", Self.checkFields(check))
        case .resumed(let report):
            json(
                "resume",
                [
                    "skipped": .array(report.skipped.map { .string(phaseHex($0)) }),
                    "skippedBytes": .number(Double(report.skippedBytes)),
                    "restartPhase": report.restartPhase.map { .string(phaseHex($0)) } ?? .null,
                    "restartOffset": .number(Double(report.restartOffset)),
                ])
        case .recovered(let detail):
            json("recovered", ["detail": .string(detail)])
        case .message(let text):
            json("message", ["text": .string(text)])
        case .tfaBuffer(let start):
            json("message", ["text": .string(Self.tfaBufferText(start))])
        }
    }

    /// What a TF-A with its FIP buffer elsewhere than the default means for the user.
    static func tfaBufferText(_ start: UInt32) -> String {
        let address = "0x" + String(start, radix: 16, uppercase: true)
        return "TF-A's FIP buffer starts at \(address), not at its default: a TF-A built with another "
            + "DWL_BUFFER_BASE; a run stopped in the FIP continues with --tfa-buffer-base \(address)"
    }

    /// One partition's integrity record as JSON (`verified` events and `done.checks`).
    static func checkFields(_ check: PartitionCheck) -> [String: JSONValue] {
        [
            "phase": .string(phaseHex(check.phase)), "name": .string(check.name), "bytes": .number(Double(check.bytes)),
            "sha256": check.sha256.map { .string($0) } ?? .null, "verified": .string(check.method.rawValue),
            "bytesRead": .number(Double(check.bytesRead)),
        ]
    }

    /// Issue 9 item 4: a 12 Mbit/s link works but is many times slower; say so once, at the
    /// first sight of it, with the usual causes.
    private func warnIfFullSpeed(_ identity: USBDeviceIdentity) {
        let fullSpeed = identity.speed == .full || identity.product?.hasPrefix("DFU in FS Mode") == true
        guard fullSpeed, !state.withLock({ $0.warnedFullSpeed }) else { return }
        state.withLock { $0.warnedFullSpeed = true }
        let message = Self.fullSpeedWarning(port: identity.port.description)
        if mode == .json {
            json(
                "warning",
                [
                    "code": .string("full-speed-link"), "message": .string(message),
                    "port": .string(identity.port.description),
                ])
        } else {
            important(style(.yellow, "warning: ") + TerminalText.escaped(message))
        }
    }

    static func fullSpeedWarning(port: String) -> String {
        "the board on \(port) is on a USB full-speed link (12 Mbit/s, product 'DFU in FS Mode' or sysfs speed 12): "
            + "flashing works but takes roughly 10 to 30 times longer than at high speed (480 Mbit/s). "
            + "Usual causes: a USB 1.1 hub, KVM switch or monitor hub in between; a poor, long or charge-only-grade cable; "
            + "a VM that attaches the board to an emulated USB 1.1 (OHCI/UHCI) controller instead of EHCI/xHCI."
    }

    private func identityFields(_ identity: USBDeviceIdentity) -> [String: JSONValue] {
        [
            "port": .string(identity.port.description), "vidpid": .string(identity.vendorProduct),
            "product": identity.product.map { .string($0) } ?? .null,
            "serial": identity.serial.map { .string($0) } ?? .null,
        ]
    }

    private func text(_ event: FlashEvent) {
        switch event {
        case .waitingForBoard(let expecting, let remaining):
            let seconds = Int(remaining.inSeconds.rounded())
            let what =
                expecting.map { "waiting for \($0.displayName)" }
                ?? "waiting for a board in USB DFU mode (boot pins on USB, cable on the OTG port)"
            if mode == .interactive {
                drawBar("  \(what)… \(seconds) s left")
            } else if seconds % 10 == 0 {
                line("  \(what)… \(seconds) s left")
            }
        case .board(let identity, let stage):
            guard !state.withLock({ $0.awaitingBoard }) else { return }
            line(
                "\(style(.bold, stage.displayName)) on \(identity.port) — \(TerminalText.field(identity.product ?? "?")) serial \(TerminalText.field(identity.serial ?? "none"))"
            )
        case .stageConfirmed(let stage):
            line("  GetPhase says this is \(stage.displayName)")
        case .phaseStarted(let phase, let name, let bytes, let stage):
            let now = clock.now
            state.withLock {
                $0.phaseName = "\(phaseHex(phase)) \(TerminalText.field(name, limit: 32))"
                $0.phaseStage = stage
                $0.throttle.start(at: now)
            }
            if mode == .plain {
                line(
                    "  sending \(phaseHex(phase)) \(TerminalText.field(name, limit: 32)) (\(ByteSize.format(UInt64(bytes))))"
                )
            }
        case .progress(_, let sent, let total) where mode == .plain:
            let now = clock.now
            let (name, due) = state.withLock { state in
                (state.phaseName, state.throttle.due(sent: sent, total: total, now: now))
            }
            if due {
                line(
                    "  \(name): \(Int(sent * 100 / max(total, 1)))% (\(ByteSize.format(UInt64(sent))) of \(ByteSize.format(UInt64(total))))"
                )
            }
        case .progress(_, let sent, let total):
            guard mode == .interactive, !quiet else { return }
            let (name, due) = state.withLock { state -> (String, Bool) in
                let now = clock.now
                let due = now - state.lastDraw > .milliseconds(50) || sent == total
                if due { state.lastDraw = now }
                return (state.phaseName, due)
            }
            if due { drawBar(Self.bar(name: name, sent: sent, total: total, width: Terminal.width())) }
        case .phaseFinished(let result):
            line(
                "  \(style(.green, "✓")) \(phaseHex(result.phase)) \(pad(TerminalText.field(result.name, limit: 32), 12)) \(pad(ByteSize.format(UInt64(result.bytes)), 10)) \(Self.formatSeconds(result.duration)) \(Self.formatRate(result.megabytesPerSecond))"
            )
        case .detached(let from, let expecting, let timeout):
            state.withLock { $0.awaitingBoard = true }
            line(
                "  DETACH: \(from.displayName) hands over; waiting up to \(Int(timeout.inSeconds)) s for \(expecting?.displayName ?? "the board")"
            )
        case .reenumerated(_, let to, let device, let after):
            state.withLock { $0.awaitingBoard = false }
            line(
                "\(style(.bold, to.displayName)) on \(device.port) after \(Self.formatSeconds(after)) — \(TerminalText.field(device.product ?? "?")) serial \(TerminalText.field(device.serial ?? "none"))"
            )
        case .otherPort(let device):
            line(
                "  note: a DFU device appeared on another port (\(device.port), \(TerminalText.field(device.product ?? "?"))): a hub or VM may have moved the board"
            )
        case .end:
            line("  board reports END: every selected partition is programmed")
        case .verified(let check):
            line(
                "    read back \(ByteSize.format(UInt64(check.bytesRead))) (\(check.method.rawValue)): equal to the Binary"
            )
        case .resumed(let report):
            line(
                "  resuming: \(report.skipped.count) partition(s) already on the board ("
                    + "\(ByteSize.format(UInt64(report.skippedBytes))), checked by readback)"
                    + (report.restartPhase.map {
                        ", continuing with \(phaseHex($0))"
                            + (report.restartOffset > 0 ? " at byte \(report.restartOffset)" : "")
                    } ?? ", nothing left to send"))
        case .recovered(let detail):
            line("  recovered the board: \(detail)")
        case .message(let text):
            line("  \(text)")
        case .tfaBuffer(let start):
            line("  \(Self.tfaBufferText(start))")
        }
    }

    // MARK: Rendering

    /// `[████████░░░░] 58%  1.2 MiB / 2.0 MiB  0x10 bootfs`, fitted to `width`.
    static func bar(name: String, sent: Int64, total: Int64, width: Int) -> String {
        let fraction = total > 0 ? Double(sent) / Double(total) : 1
        let percent = Int((fraction * 100).rounded(.down))
        let tail = " \(percent)%  \(ByteSize.format(UInt64(sent))) / \(ByteSize.format(UInt64(total)))  \(name)"
        let barWidth = max(10, min(40, width - tail.count - 4))
        let filled = Int((Double(barWidth) * fraction).rounded(.down))
        let text =
            "  [" + String(repeating: "█", count: filled) + String(repeating: "░", count: barWidth - filled) + "]"
            + tail
        return text.count > width ? String(text.prefix(width)) : text
    }

    static func formatSeconds(_ duration: Duration) -> String {
        let seconds = duration.inSeconds
        return seconds < 10 ? "\((seconds * 100).rounded() / 100) s" : "\(Int(seconds.rounded())) s"
    }

    static func formatRate(_ megabytesPerSecond: Double) -> String {
        megabytesPerSecond > 0 ? "\((megabytesPerSecond * 10).rounded() / 10) MB/s" : ""
    }

    func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    func style(_ code: ANSI, _ text: String) -> String { code.wrap(text, enabled: color) }

    /// Prints a progress or step line on stderr (human output never goes to stdout, which is
    /// for machine output), clearing the bar first so lines never mix with it. Silent with
    /// `--quiet`.
    func line(_ text: String) {
        guard !quiet else { return }
        important(text)
    }

    /// A line that `--quiet` keeps: warnings, the failure and its diagnosis.
    func important(_ text: String) {
        guard mode != .json else { return }
        let clear = state.withLock { state -> Bool in
            defer { state.barVisible = false }
            return state.barVisible
        }
        writeErr((clear ? "\r\u{1B}[2K" : "") + text + "\n")
    }

    /// A log line on stderr, after clearing the bar on a terminal.
    func logLine(_ text: String) {
        let clear = state.withLock { state -> Bool in
            defer { state.barVisible = false }
            return state.barVisible
        }
        if clear { writeErr("\r\u{1B}[2K") }
        Terminal.error(text)
    }

    private func drawBar(_ text: String) {
        guard !quiet else { return }
        state.withLock { $0.barVisible = true }
        writeErr("\r\u{1B}[2K" + text)
    }

    /// Machine output (JSON Lines).
    func writeOut(_ text: String) { Self.write(text, to: 1) }

    /// Human output: progress, steps, the result and the diagnosis.
    func writeErr(_ text: String) { Self.write(text, to: humanFD) }

    static func write(_ text: String, to fd: Int32) {
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let result = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if result <= 0 { break }
            written += result
        }
    }
}

extension Diagnosis {
    /// The `diagnosis` event's fields (docs/json.md), shared by `flash` and `mcu`.
    var jsonFields: [String: JSONValue] {
        [
            "code": .string(code.rawValue), "cause": .string(cause),
            "evidence": .array(evidence.map { .string($0) }),
            "nextSteps": .array(nextSteps.map { .string($0) }),
            "alternatives": .array(
                alternatives.map {
                    .object([
                        "code": .string($0.code.rawValue), "cause": .string($0.cause),
                        "howToTell": .string($0.howToTell),
                    ])
                }),
        ]
    }
}

/// A small JSON value type: lets JSON Lines keep `"event"` first and numbers as numbers.
enum JSONValue: Sendable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case null
    case array([JSONValue])
    case object([String: JSONValue])

    func encoded(firstKey: String? = nil) -> String {
        switch self {
        case .string(let text): return Self.quote(text)
        case .number(let value):
            if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
            return String(value)
        case .bool(let value): return value ? "true" : "false"
        case .null: return "null"
        case .array(let items): return "[" + items.map { $0.encoded() }.joined(separator: ",") + "]"
        case .object(let fields):
            let keys = fields.keys.sorted { a, b in a == firstKey ? true : b == firstKey ? false : a < b }
            return "{" + keys.map { Self.quote($0) + ":" + fields[$0]!.encoded() }.joined(separator: ",") + "}"
        }
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// The port and last-seen serial of one board in a several-boards run (JSON mode).
final class BoardTags: Sendable {
    private let state: Mutex<(String, String?)>

    init(port: String) { state = Mutex((port, nil)) }

    var values: (String, String?) { state.withLock { $0 } }

    func saw(serial: String?) {
        guard let serial, !serial.isEmpty else { return }
        state.withLock { $0.1 = serial }
    }
}
