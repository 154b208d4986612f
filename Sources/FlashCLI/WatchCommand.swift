import ArgumentParser
import FlashEngine
import Hotplug
import Timekeeping
import USBModel

/// `stm32mp-flash watch`: one line per USB device added or removed, with the stage it runs, until
/// Ctrl-C (or `--count`/`--timeout`, for scripts and tests).
struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Show USB devices as they appear and disappear (Ctrl-C to stop).",
        discussion: "Exits 1 when --timeout passes before --count events were seen.")

    @Flag(help: "One JSON object per event and line.")
    var json = false

    @Option(help: "Stop after this many events.")
    var count: Int?

    @Option(help: "Stop after this many seconds.")
    var timeout: Double?

    @Option(help: "Where events come from: udev (after udevd) or kernel; default: udev when udevd runs.")
    var eventSource: String?

    func validate() throws {
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout must be positive") }
        if let eventSource, UdevEventSource(rawValue: eventSource) == nil {
            throw ValidationError("--event-source must be udev or kernel")
        }
    }

    func run() async throws {
        let source = eventSource.flatMap(UdevEventSource.init(rawValue:)) ?? .detect()
        let bus = try SystemUSBBus(eventSource: source)
        let events = try await bus.subscribe()
        printError("Watching USB devices (\(source.rawValue) events). Press Ctrl-C to stop.")
        let deadline = timeout.map { bus.clock.now + .milliseconds(Int64($0 * 1000)) } ?? .seconds(Int64(Int32.max))
        var seen = 0
        while count.map({ seen < $0 }) ?? true {
            guard let event = try await events.next(until: deadline) else {
                if count != nil { throw ExitCode(1) }
                return
            }
            seen += 1
            let report = DeviceReport(event.device, alternates: nil)
            if json {
                writeLine(try jsonLine(WatchLine(event: event, device: report)))
            } else {
                let sign = event.action == .add ? "+" : "-"
                writeLine("\(sign) \(formatTime(event.time)) \(report.text)")
            }
        }
    }

    private func formatTime(_ time: Duration) -> String {
        let ms = Int((time.inSeconds * 1000).rounded())
        let fraction = String(ms % 1000)
        return "\(ms / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction + "s"
    }
}

/// One `watch --json` line: the event and the device as `list` shows it.
private struct WatchLine: Encodable {
    var action: HotplugEvent.Action
    /// Seconds since `watch` started, when the event was read from the monitor.
    var time: Double
    var device: DeviceReport

    init(event: HotplugEvent, device: DeviceReport) {
        action = event.action
        time = event.time.inSeconds
        self.device = device
    }
}
