import Foundation
import TestSupport
import Testing

@testable import FlashCLI

/// Issue 9 item 17: machine output on stdout, human output on stderr, `--quiet`, and plain
/// progress lines in logs at least every 10 % or 5 s of a phase.
@Suite("streams, quiet and plain progress", .timeLimit(.minutes(10)))
struct StreamsTests {
    @Test("the throttle: every 10 % step, or after 5 s of silence on the injected clock, never at the end")
    func throttle() {
        var throttle = ProgressThrottle()
        throttle.start(at: .zero)
        let steps: [(Int64, Duration)] = [
            (5, .seconds(1)), (10, .seconds(2)), (15, .seconds(3)),
            // A slow link: 5 s without a new step still gets a line.
            (16, .seconds(7)), (17, .seconds(8)), (35, .seconds(9)), (100, .seconds(30)),
        ]
        let due = steps.map { throttle.due(sent: $0.0, total: 100, now: $0.1) }
        #expect(due == [false, true, false, true, false, true, false])
    }

    @Test("flash text: steps and plain progress on stderr, nothing on stdout; --quiet keeps both quiet")
    func flashStreams() throws {
        let tool = try BuiltProducts.tool("stm32mp-flash")
        let examples = try CLIExamples.directory()
        let storage = try TemporaryDirectory()
        let run = try tool.run(["flash", "\(examples)/mp15-sdcard.tsv", "--simulate", "--sim-dir", storage.path])
        #expect(run.status == 0, "\(run.standardError)")
        #expect(run.standardOutput.isEmpty, "\(run.standardOutput)")
        #expect(run.standardError.contains("board reports END") && run.standardError.contains("Done:"))
        let progress = run.standardError.split(separator: "\n").filter { $0.hasPrefix("  0x11 rootfs: ") }
        #expect(progress.count >= 5, "plain progress lines for the largest partition: \(progress)")

        let quiet = try tool.run([
            "flash", "\(examples)/mp15-sdcard.tsv", "--simulate", "--sim-dir", try TemporaryDirectory().path, "--quiet",
        ])
        #expect(quiet.status == 0, "\(quiet.standardError)")
        #expect(quiet.standardOutput.isEmpty && quiet.standardError.isEmpty, "\(quiet.standardError)")
    }

    @Test("Ctrl-C ends a command with status 130")
    func interruptStatus() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try BuiltProducts.path("stm32mp-flash"))
        process.arguments = ["watch", "--timeout", "30"]
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        // Interrupt once it is watching (its first stderr line), as a user at the terminal would.
        _ = errors.fileHandleForReading.availableData
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 130)
    }

    /// docs/json.md: every run ends with exactly one `done` or `failed` line. A Ctrl-C that comes
    /// the moment `start` is written, before any device work, is caught too: `failed` with code
    /// `cancelled` and status 130, not the default action's silent death.
    @Test(
        "SIGINT right after the start line: failed/cancelled, status 130",
        arguments: [["--boards", "1"], ["--boards", "2"]])
    func interruptRightAfterStart(_ boards: [String]) throws {
        let examples = try CLIExamples.directory()
        let storage = try TemporaryDirectory()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try BuiltProducts.path("stm32mp-flash"))
        process.arguments =
            ["flash", "--json", "--simulate", "--realtime", "--sim-dir", storage.path, "\(examples)/mp15-sdcard.tsv"]
            + boards
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        var text = ""
        while !text.contains(#""event":"start""#) {
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
        }
        kill(process.processIdentifier, SIGINT)
        text += String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 130, "\(text)")
        let last = try #require(text.split(separator: "\n").last.map(String.init))
        #expect(last.contains(#""event":"failed""#), "\(text)")
        #expect(!text.contains(#""event":"done""#), "\(text)")
        #expect(last.contains(#""code":"cancelled""#), "\(text)")
    }

    /// Several boards at once: a layout path with an escape sequence is shown escaped, never raw.
    @Test("several boards: control characters in the layout path are escaped")
    func severalBoardsEscapeTheLayoutPath() throws {
        let examples = try CLIExamples.directory()
        let storage = try TemporaryDirectory()
        let layout = storage.file("e\u{1B}[31mx.tsv")
        try FileManager.default.copyItem(atPath: "\(examples)/mp15-sdcard.tsv", toPath: layout)
        let tool = try BuiltProducts.tool("stm32mp-flash")
        let run = try tool.run(
            ["flash", "--simulate", "--boards", "2", "--sim-dir", storage.file("vb"), layout],
            workingDirectory: examples)
        #expect(run.status == 0, "\(run.standardError)")
        #expect(run.standardError.contains("e\\x1b[31mx.tsv"), "\(run.standardError)")
        #expect(!run.standardError.contains("\u{1B}"), "\(run.standardError)")
    }

    @Test("machine output stays on stdout: plan's table, check's diagnostics, --list-scenarios")
    func machineOutput() throws {
        let tool = try BuiltProducts.tool("stm32mp-flash")
        let examples = try CLIExamples.directory()
        let plan = try tool.run(["plan", "\(examples)/mp15-sdcard.tsv"])
        #expect(plan.standardOutput.contains("U-Boot will ask for") && plan.standardError.isEmpty)
        let scenarios = try tool.run(["flash", "--list-scenarios"])
        #expect(!scenarios.standardOutput.isEmpty && scenarios.standardError.isEmpty)
    }
}
