import Foundation
import TestSupport
import Testing

/// `stm32mp-flash station` over real libusb/libudev: the emulator serves four boards behind one
/// hub, all with the same serial, one of which vanishes mid-partition; the station flashes each
/// once, records every attempt under its own port, keeps running past the failure, serves
/// /metrics, and stops with exit 0 on SIGTERM.
@Suite(.timeLimit(.minutes(10)), .serialized)
struct StationEmulationTests {
    @Test(
        "four same-serial boards under the emulator: three done, one disconnected, each under its port, exit 0 on SIGTERM"
    )
    func fourBoards() async throws {
        let directory = try ShortTemporaryDirectory()
        let tool = try builtExecutable("stm32mp-flash")
        let examples = directory.file("layouts")
        #expect(try await run(tool, ["make-examples", "--out", examples], in: directory).status == 0)
        let envFile = directory.file("emulator.env")
        let emulator = try start(
            try builtExecutable("stm32mp-board-emulator"),
            [
                "--boards", "4", "--same-serial", "--board-scenario", "1-1.3=vanish-mid-partition", "--storage",
                directory.file("boards"), "--env-file", envFile,
            ], in: directory)
        defer { emulator.process.terminate() }
        await waitUntil(timeout: 20) { FileManager.default.fileExists(atPath: envFile) || !emulator.process.isRunning }
        var environment: [String: String] = [:]
        for line in try String(contentsOfFile: envFile, encoding: .utf8).split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { environment[String(parts[0])] = String(parts[1]) }
        }

        let db = directory.file("records.sqlite")
        let ports = (1...4).map { "1-1.\($0)" }
        let station = try start(
            tool,
            ["station", "\(examples)/mp15-sdcard.tsv", "--db", db, "--listen", "127.0.0.1:0"]
                + ports.flatMap { ["--port", $0] },
            environment: environment, in: directory)
        defer { if station.process.isRunning { kill(station.process.processIdentifier, SIGKILL) } }
        await waitUntil(timeout: 150) {
            station.stderrSoFar.components(separatedBy: "\n").filter {
                $0.contains("✓ done") || $0.contains("✘ failed")
            }.count >= 4 || !station.process.isRunning
        }
        #expect(
            station.process.isRunning, "the station must keep running past a board's failure: \(station.stderrSoFar)")
        // The page's server answers with the metrics of the four attempts.
        let page = try #require(
            station.stderrSoFar.components(separatedBy: " ").first { $0.hasPrefix("http://127.0.0.1:") })
        let metrics = try await run("curl", ["-sf", page + "metrics"], in: directory)
        #expect(metrics.stdout.contains("stm32mp_flash_runs_total{result=\"done\",port=\"1-1.1\"} 1"))
        #expect(metrics.stdout.contains("stm32mp_flash_runs_total{result=\"failed\",port=\"1-1.3\"} 1"))

        kill(station.process.processIdentifier, SIGTERM)
        let stopped = try await station.wait(timeout: 60)
        #expect(stopped.status == 0, "\(stopped.stderr)")

        let report = try await run(tool, ["station", "report", "--db", db, "--format", "json"], in: directory)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(report.stdout.utf8)) as? [String: Any])
        let attempts = try #require(object["attempts"] as? [[String: Any]])
        let byPort = Dictionary(grouping: attempts) { $0["port"] as? String ?? "" }
        #expect(byPort.keys.sorted() == ports, "one attempt per board, each under its port: \(attempts)")
        #expect(byPort.values.allSatisfy { $0.count == 1 })
        for port in ports {
            let attempt = try #require(byPort[port]?.first)
            #expect(attempt["result"] as? String == (port == "1-1.3" ? "failed" : "done"), "\(port)")
        }
        #expect(byPort["1-1.3"]?.first?["diagnosisCode"] as? String == "disconnected")
        #expect(Set(attempts.compactMap { $0["serial"] as? String }).count == 1, "the boards share one serial")
        // The finished boards hold their partitions: sfdisk reads each one's GPT.
        for port in ["1-1.1", "1-1.2", "1-1.4"] {
            let sfdisk = try await run("sfdisk", ["--json", directory.file("boards/\(port)/mmc0.img")], in: directory)
            #expect(sfdisk.stdout.contains("\"name\": \"rootfs\""), "\(port): \(sfdisk.stdout)")
        }
    }
}
