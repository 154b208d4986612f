import Diagnostics
import FlashEngine
import FlashLayout
import FoundationEssentials
import Glibc
import Synchronization
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
    }

    private let clock = SystemClock()

    init(mode: FlashOutputMode) {
        self.mode = mode
        color = mode == .interactive && Terminal.useColor(1)
    }

    // MARK: JSON Lines

    /// Writes one JSON object per line, with `"event"` first for readability.
    func json(_ event: String, _ fields: [String: JSONValue]) {
        var object = fields
        object["event"] = .string(event)
        write(JSONValue.object(object).encoded(firstKey: "event") + "\n")
    }

    // MARK: Engine events

    func handle(_ event: FlashEvent) {
        switch mode {
        case .json: json(event)
        case .plain, .interactive: text(event)
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
        case .message(let text):
            json("message", ["text": .string(text)])
        }
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
                "\(style(.bold, stage.displayName)) on \(identity.port) — \(identity.product ?? "?") serial \(identity.serial ?? "none")"
            )
        case .stageConfirmed(let stage):
            line("  GetPhase says this is \(stage.displayName)")
        case .phaseStarted(let phase, let name, let bytes, let stage):
            state.withLock {
                $0.phaseName = "\(phaseHex(phase)) \(name)"
                $0.phaseStage = stage
            }
            if mode == .plain { line("  sending \(phaseHex(phase)) \(name) (\(ByteSize.format(UInt64(bytes))))") }
        case .progress(_, let sent, let total):
            guard mode == .interactive else { return }
            let (name, due) = state.withLock { state -> (String, Bool) in
                let now = clock.now
                let due = now - state.lastDraw > .milliseconds(50) || sent == total
                if due { state.lastDraw = now }
                return (state.phaseName, due)
            }
            if due { drawBar(Self.bar(name: name, sent: sent, total: total, width: Terminal.width())) }
        case .phaseFinished(let result):
            line(
                "  \(style(.green, "✓")) \(phaseHex(result.phase)) \(pad(result.name, 12)) \(pad(ByteSize.format(UInt64(result.bytes)), 10)) \(Self.formatSeconds(result.duration)) \(Self.formatRate(result.megabytesPerSecond))"
            )
        case .detached(let from, let expecting, let timeout):
            state.withLock { $0.awaitingBoard = true }
            line(
                "  DETACH: \(from.displayName) hands over; waiting up to \(Int(timeout.inSeconds)) s for \(expecting?.displayName ?? "the board")"
            )
        case .reenumerated(_, let to, let device, let after):
            state.withLock { $0.awaitingBoard = false }
            line(
                "\(style(.bold, to.displayName)) on \(device.port) after \(Self.formatSeconds(after)) — \(device.product ?? "?") serial \(device.serial ?? "none")"
            )
        case .otherPort(let device):
            line(
                "  note: a DFU device appeared on another port (\(device.port), \(device.product ?? "?")): a hub or VM may have moved the board"
            )
        case .end:
            line("  board reports END: every selected partition is programmed")
        case .message(let text):
            line("  \(text)")
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

    /// Prints a line, clearing the bar first so lines never mix with it.
    func line(_ text: String) {
        guard mode != .json else { return }
        let clear = state.withLock { state -> Bool in
            defer { state.barVisible = false }
            return state.barVisible
        }
        write((clear ? "\r\u{1B}[2K" : "") + text + "\n")
    }

    /// A log line on stderr, after clearing the bar on a terminal.
    func logLine(_ text: String) {
        let clear = state.withLock { state -> Bool in
            defer { state.barVisible = false }
            return state.barVisible
        }
        if clear { write("\r\u{1B}[2K") }
        Terminal.error(text)
    }

    private func drawBar(_ text: String) {
        state.withLock { $0.barVisible = true }
        write("\r\u{1B}[2K" + text)
    }

    func write(_ text: String) {
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let result = bytes[written...].withUnsafeBytes { Glibc.write(1, $0.baseAddress, $0.count) }
            if result <= 0 { break }
            written += result
        }
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
