import Foundation
import StationRecords
import TestSupport
import Testing

/// The station's status page in a real browser: Debian's chromium, headless, on the page of a
/// station flashing four virtual boards again and again. The page sets its title from what it
/// shows (counts and tiles); the test reads the title through chromium's DevTools HTTP endpoint
/// (`/json/list`) while the boards flash, so it sees one page load follow the station live.
@Suite("The status page in headless chromium", .timeLimit(.minutes(10)))
struct StatusPageBrowserTests {
    struct Title: Hashable {
        var done: Int
        var failed: Int
        var flashing: Int
        var ports: Int

        /// `3 done, 0 failed, 4 flashing, 4 ports · stm32mp-flash station`
        init?(_ text: String) {
            let words = text.split(whereSeparator: { $0 == " " || $0 == "," })
            guard text.hasSuffix("stm32mp-flash station"), words.count >= 8,
                let done = Int(words[0]), let failed = Int(words[2]), let flashing = Int(words[4]),
                let ports = Int(words[6])
            else { return nil }
            (self.done, self.failed, self.flashing, self.ports) = (done, failed, flashing, ports)
        }
    }

    @Test("tiles appear for the four ports and update while the boards flash")
    func tilesUpdateLive() async throws {
        let chromium = try ExternalTool("chromium", package: "chromium")
        let curl = try ExternalTool("curl", package: "curl")
        let examples = try CLIExamples.directory()
        let directory = try TemporaryDirectory()
        let db = directory.file("records.sqlite")
        let station = try StationChild(
            tool: try BuiltProducts.tool("stm32mp-flash"),
            arguments: [
                "station", "\(examples)/mp15-sdcard.tsv", "--simulate", "--boards", "4", "--runs", "1000",
                "--sim-speed",
                "3", "--sim-dir", directory.file("boards"), "--db", db, "--listen", "127.0.0.1:0",
            ],
            environment: [:], stderrPath: directory.file("station.err"))
        defer { station.kill() }
        #expect(await station.wait { $0.contains("status page http://127.0.0.1:") })
        let page = try #require(
            station.stderr.split(whereSeparator: { $0 == " " || $0 == "\n" }).first {
                $0.hasPrefix("http://127.0.0.1:") && $0.hasSuffix("/")
            }
        ).description

        // Root in CI: chromium's sandbox needs --no-sandbox there.
        let profile = directory.file("chromium-profile")
        let browser = Process()
        browser.executableURL = URL(fileURLWithPath: chromium.executable)
        browser.arguments = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--user-data-dir=\(profile)", "--remote-debugging-port=0", page,
        ]
        browser.standardOutput = FileHandle.nullDevice
        browser.standardError = FileHandle.nullDevice
        try browser.run()
        defer {
            browser.terminate()
            browser.waitUntilExit()
        }
        // chromium writes the port it picked into the profile.
        var devtools: String?
        for _ in 0..<600 where devtools == nil {
            if let text = try? String(contentsOfFile: profile + "/DevToolsActivePort", encoding: .utf8),
                let port = text.split(separator: "\n").first.flatMap({ Int($0) })
            {
                devtools = "http://127.0.0.1:\(port)/json/list"
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let list = try #require(devtools, "chromium did not start its DevTools endpoint")

        // The page's title, as often as chromium answers, until it has followed several attempts
        // (a loaded machine may take long to start chromium: the station keeps plugging boards).
        var seen: [Title] = []
        func followedEnough() -> Bool {
            Set(seen.map(\.done)).count >= 3 && seen.contains { $0.done > 0 && $0.flashing > 0 }
        }
        let deadline = Date().addingTimeInterval(180)
        while Date() < deadline, !followedEnough() {
            let running = await station.waitForExit(timeout: 0) == nil
            let answer = try curl.run(["-s", list])
            if let targets = try? JSONSerialization.jsonObject(with: Data(answer.standardOutput.utf8))
                as? [[String: Any]],
                let target = targets.first(where: { $0["type"] as? String == "page" && $0["url"] as? String == page }),
                let title = (target["title"] as? String).flatMap(Title.init), seen.last != title
            {
                seen.append(title)
            }
            if !running { break }
            try await Task.sleep(for: .milliseconds(150))
        }
        station.signal(SIGTERM)
        #expect(await station.waitForExit(timeout: 60) == 0, "\(station.stderr.suffix(2000))")

        // Tiles for the four ports from the first update on.
        #expect(!seen.isEmpty && seen.allSatisfy { $0.ports == 4 }, "\(seen)")
        // Live: in one page load the done count went up step by step while boards were flashing.
        let doneCounts = seen.map(\.done)
        #expect(doneCounts == doneCounts.sorted(), "\(seen)")
        #expect(Set(doneCounts).count >= 3, "\(seen)")
        #expect(seen.contains { $0.done > 0 && $0.flashing > 0 }, "\(seen)")
        #expect(seen.allSatisfy { $0.failed == 0 })
        // What the page counted is what was recorded.
        let attempts = try await RecordStore(path: db).attempts()
        #expect(attempts.allSatisfy { $0.result == .done })
        #expect((seen.last?.done ?? 0) <= attempts.count && attempts.count > 0)
    }
}
