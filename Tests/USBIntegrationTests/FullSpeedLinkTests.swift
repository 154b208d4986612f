import Foundation
import TestSupport
import Testing

/// Issue 9 item 4 under umockdev: the emulated MP15 on a 12 Mbit/s link (sysfs speed 12, the ROM
/// says "DFU in FS Mode"). `flash` warns at the start, in text and as a JSON `warning` event, and
/// the run's JSON and `list --json` follow docs/json.md.
@Suite("full-speed link under the emulator", .timeLimit(.minutes(5)), .serialized)
struct FullSpeedLinkTests {
    @Test func flashWarnsAtTheStartInJSONAndText() async throws {
        let directory = try ShortTemporaryDirectory()
        let flash = try builtExecutable("stm32mp-flash")
        let examples = try await makeExamples(in: directory)
        let emulator = try builtExecutable("stm32mp-board-emulator")
        let json = try await run(
            emulator,
            ["--soc", "mp15", "--speed", "full", "--", flash, "flash", "--json", examples + "/mp15-sdcard.tsv"],
            in: directory, timeout: 240)
        #expect(json.status == 0, "\(json.stdout)\n\(json.stderr)")
        #expect(try JSONContract().flashRunProblems(json.stdout) == [], "\(json.stdout)")
        let events = json.lines.compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let names = events.compactMap { $0["event"] as? String }
        let warning = try #require(events.first { $0["event"] as? String == "warning" })
        #expect(warning["code"] as? String == "full-speed-link")
        #expect((warning["message"] as? String)?.contains("hub") == true)
        // At the start: right after the first board line, before any data is sent.
        let warningIndex = try #require(names.firstIndex(of: "warning"))
        #expect(names.firstIndex(of: "board").map { $0 < warningIndex } == true)
        #expect(names.firstIndex(of: "phase-start").map { warningIndex < $0 } == true)
        #expect(names.filter { $0 == "warning" }.count == 1)

        let text = try await run(
            emulator, ["--soc", "mp15", "--speed", "full", "--", flash, "flash", examples + "/mp15-sdcard.tsv"],
            in: directory, timeout: 240)
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stderr.contains("warning: the board on 1-1 is on a USB full-speed link (12 Mbit/s"))
    }

    @Test func highSpeedHasNoWarningAndListShowsTheSpeed() async throws {
        let directory = try ShortTemporaryDirectory()
        let flash = try builtExecutable("stm32mp-flash")
        let emulator = try builtExecutable("stm32mp-board-emulator")
        let listed = try await run(
            emulator, ["--soc", "mp15", "--speed", "full", "--", flash, "list", "--json"], in: directory)
        #expect(listed.status == 0, "\(listed.stderr)")
        let device = try #require(
            try JSONSerialization.jsonObject(with: Data((listed.lines.first ?? "").utf8)) as? [String: Any])
        #expect(device["speed"] as? String == "full")
        #expect((device["product"] as? String)?.hasPrefix("DFU in FS Mode") == true)
        #expect(try JSONContract().undocumentedKeys(device, section: "list --json") == [])

        let examples = try await makeExamples(in: directory)
        let normal = try await run(
            emulator, ["--soc", "mp15", "--", flash, "flash", "--json", examples + "/mp15-sdcard.tsv"], in: directory,
            timeout: 240)
        #expect(normal.status == 0, "\(normal.stdout)\n\(normal.stderr)")
        #expect(!normal.stdout.contains(#""event":"warning""#))
    }
}

/// Issue 9 item 18: the user guide's `list` example is what `list` prints for the emulated MP15.
@Suite("user guide examples under the emulator", .timeLimit(.minutes(10)))
struct UserGuideExampleTests {
    @Test func listExampleMatchesRealOutput() async throws {
        let directory = try ShortTemporaryDirectory()
        let listed = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            ["--soc", "mp15", "--", try builtExecutable("stm32mp-flash"), "list"], in: directory)
        #expect(listed.status == 0, "\(listed.stderr)")
        let guide = try String(contentsOfFile: TestPaths.repositoryRoot + "/docs/user-guide.md", encoding: .utf8)
        let lines = guide.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let start = try #require(lines.firstIndex { $0.contains("0483:df11  ROM code (mp15)") })
        let example = lines[start...].prefix { !$0.contains("```") }.map { String($0.dropFirst(3)) }
        #expect(example == listed.lines, "docs/user-guide.md shows:\n\(example.joined(separator: "\n"))")
    }
}
