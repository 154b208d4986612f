import BoardTracking
import FlashEngine
import FlashLayout
import Synchronization
import TerminalText
import Timekeeping
import USBModel

/// Output of one run over several boards (`flash --port P --port Q …`, `--all`, `station`): each
/// board's engine events, keyed by port. On a terminal one live line per board (port, serial,
/// stage, partition, progress, speed), redrawn at most ten times a second; piped, plain lines
/// prefixed with the port (progress every 25 %); JSON, the `flash --json` events with `port` and
/// `serial` on every one (docs/json.md).
final class MultiBoardOutput: Sendable {
    let mode: FlashOutputMode
    private let writer: FlashOutput
    private let clock = SystemClock()
    private let state = Mutex(State())

    struct Line: Sendable {
        var serial: String?
        var stage: BoardStage?
        var partition = ""
        var sent: Int64 = 0
        var total: Int64 = 0
        var phaseStarted: Duration = .zero
        var lastQuarter = 0
        /// Set once the board's attempt ended: `✓ done` or `✘ failed …`.
        var outcome: String?
    }

    private struct State {
        /// JSON mode: one writer per board, tagging its lines with port and serial.
        var boardWriters: [PortPath: (FlashOutput, BoardTags)] = [:]
        var order: [PortPath] = []
        var lines: [PortPath: Line] = [:]
        var drawnLines = 0
        var lastDraw: Duration = .zero
    }

    /// `humanFD`: where text lines go (stderr, or a station's per-attempt log file).
    init(mode: FlashOutputMode, humanFD: Int32 = 2) {
        self.mode = mode
        writer = FlashOutput(mode: mode, humanFD: humanFD)
    }

    /// The serial last seen on `port` (for records and JSON).
    func serial(_ port: PortPath) -> String? { state.withLock { $0.lines[port]?.serial } }

    /// A board is being flashed on `port` (a new line, or its line reset for a new attempt).
    func started(_ port: PortPath, serial: String?) {
        state.withLock { state in
            if state.lines[port] == nil { state.order.append(port) }
            state.order.sort {
                $0.description.count != $1.description.count
                    ? $0.description.count < $1.description.count : $0.description < $1.description
            }
            state.lines[port] = Line(serial: serial)
        }
        switch mode {
        case .json:
            let tags = BoardTags(port: port.description)
            state.withLock { $0.boardWriters[port] = (FlashOutput(mode: .json, tags: tags), tags) }
            writer.json("board-start", ["port": .string(port.description), "serial": jsonString(serial)])
        case .plain: writer.line("[\(port)] taking the board" + (serial.map { " (serial \($0))" } ?? ""))
        case .interactive: redraw(force: true)
        }
    }

    func handle(_ port: PortPath, _ event: FlashEvent) {
        let now = clock.now
        let (line, plain) = state.withLock { state -> (Line, String?) in
            var line = state.lines[port] ?? Line()
            var plain: String?
            switch event {
            case .board(let identity, let stage), .reenumerated(_, let stage, let identity, _):
                if let serial = identity.serial, !serial.isEmpty { line.serial = serial }
                line.stage = stage
                plain = "\(stage.displayName) — \(TerminalText.escaped(identity.product ?? "?"))"
            case .stageConfirmed(let stage):
                line.stage = stage
            case .phaseStarted(let phase, let name, let bytes, let stage):
                line.partition = "\(phaseHex(phase)) \(name)"
                line.stage = stage
                line.sent = 0
                line.total = bytes
                line.phaseStarted = now
                line.lastQuarter = 0
                plain = "sending \(line.partition) (\(ByteSize.format(UInt64(bytes))))"
            case .progress(_, let sent, let total):
                line.sent = sent
                line.total = total
                let quarter = total > 0 ? Int(4 * sent / total) : 4
                if quarter > line.lastQuarter, quarter < 4 {
                    line.lastQuarter = quarter
                    plain = "\(line.partition) \(quarter * 25) %"
                }
            case .phaseFinished(let result):
                line.sent = line.total
                plain =
                    "✓ \(phaseHex(result.phase)) \(result.name) \(ByteSize.format(UInt64(result.bytes))) in \(FlashOutput.formatSeconds(result.duration)) \(FlashOutput.formatRate(result.megabytesPerSecond))"
            case .detached(let from, let expecting, _):
                plain = "DETACH: \(from.displayName) hands over to \(expecting?.displayName ?? "the board")"
            case .end:
                plain = "board reports END"
            case .otherPort(let device):
                plain = "note: a DFU device appeared on \(device.port)"
            case .message(let text):
                plain = TerminalText.escaped(text)
            case .waitingForBoard, .verified, .resumed, .recovered:
                break
            }
            state.lines[port] = line
            return (line, plain)
        }
        switch mode {
        case .json:
            guard let (board, tags) = state.withLock({ $0.boardWriters[port] }) else { return }
            tags.saw(serial: line.serial)
            board.handle(event)
        case .plain:
            if let plain { writer.line("[\(port)] " + plain) }
        case .interactive:
            redraw(force: false)
        }
    }

    /// The attempt on `port` ended.
    func finished(_ port: PortPath, done: Bool, code: String?, cause: String?, seconds: Double) {
        let outcome =
            done
            ? writer.style(.green, "✓ done") + " in \(FlashOutput.formatSeconds(.seconds(seconds)))"
            : writer.style(.red, "✘ failed") + " \(code ?? "")" + (cause.map { ": " + TerminalText.escaped($0) } ?? "")
        state.withLock { $0.lines[port, default: Line()].outcome = outcome }
        switch mode {
        case .json: break  // the caller writes `board-done` / `board-failed` with all fields
        case .plain: writer.line("[\(port)] " + outcome)
        case .interactive: redraw(force: true)
        }
    }

    /// Writes a JSON Lines object (JSON mode only).
    func json(_ event: String, _ fields: [String: JSONValue]) { writer.json(event, fields) }

    /// Writes a text line below the live lines (text modes only).
    func line(_ text: String) {
        guard mode != .json else { return }
        if mode == .interactive { redraw(force: true) }
        writer.line(text)
        state.withLock { $0.drawnLines = 0 }
    }

    private func jsonString(_ text: String?) -> JSONValue { text.map { .string($0) } ?? .null }

    /// Rewrites the board lines in place (cursor up over the previous drawing).
    private func redraw(force: Bool) {
        let now = clock.now
        let text = state.withLock { state -> String? in
            guard force || now - state.lastDraw >= .milliseconds(100) else { return nil }
            state.lastDraw = now
            let width = Terminal.width(2)
            var text = state.drawnLines > 0 ? "\u{1B}[\(state.drawnLines)F" : ""
            for port in state.order {
                let line = state.lines[port] ?? Line()
                text += "\u{1B}[2K" + Self.render(port: port, line, now: now, width: width) + "\n"
            }
            state.drawnLines = state.order.count
            return text
        }
        if let text { writer.writeErr(text) }
    }

    /// `1-1.2   0029002A4C42…  U-Boot stm32prog  0x11 rootfs  [██████░░░░] 58%  6.1 MB/s`
    static func render(port: PortPath, _ line: Line, now: Duration, width: Int) -> String {
        func pad(_ text: String, _ count: Int) -> String {
            text.count >= count ? String(text.prefix(count)) : text + String(repeating: " ", count: count - text.count)
        }
        var text = pad(port.description, 8) + pad(line.serial.map { String($0.prefix(12)) } ?? "–", 13)
        if let outcome = line.outcome { return String((text + outcome).prefix(width + 20)) }
        text += pad(line.stage?.displayName ?? "waiting", 18) + pad(line.partition, 16)
        if line.total > 0 {
            let fraction = Double(line.sent) / Double(line.total)
            let filled = Int(10 * fraction)
            text +=
                "[" + String(repeating: "█", count: filled) + String(repeating: "░", count: 10 - filled) + "] "
                + "\(Int(100 * fraction))%"
            let seconds = (now - line.phaseStarted).inSeconds
            if seconds > 0.2 { text += "  " + FlashOutput.formatRate(Double(line.sent) / seconds / 1e6) }
        }
        return String(text.prefix(width))
    }
}
