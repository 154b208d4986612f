import Foundation
import Testing

/// The emulator serving several boards behind one hub: real libusb and libudev (through
/// `stm32mp-flash list --json` and `lsusb -t`) see each board on its own port with its own serial.
@Suite(.timeLimit(.minutes(10)))
struct SeveralBoardsEmulationTests {
    func list(_ options: [String]) async throws -> [[String: Any]] {
        let directory = try ShortTemporaryDirectory()
        let emulator = try builtExecutable("stm32mp-board-emulator")
        let result = try await run(
            emulator, options + ["--", try builtExecutable("stm32mp-flash"), "list", "--json"], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        // One JSON object per device and line (docs/json.md).
        return try result.lines.map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        }
    }

    @Test("four boards on 1-1.1 … 1-1.4, each with its own serial")
    func fourBoards() async throws {
        let devices = try await list(["--boards", "4"])
        #expect(devices.map { $0["port"] as? String } == ["1-1.1", "1-1.2", "1-1.3", "1-1.4"])
        let serials = devices.compactMap { $0["serial"] as? String }
        #expect(Set(serials).count == 4)
        #expect(serials.first == "0029002A4C42501100380001")
    }

    @Test("--same-serial: eight boards that all report one serial, still eight ports")
    func sameSerial() async throws {
        let devices = try await list(["--boards", "8", "--same-serial", "--port", "2-3"])
        #expect(devices.map { $0["port"] as? String } == (1...8).map { "2-3.\($0)" })
        #expect(Set(devices.compactMap { $0["serial"] as? String }).count == 1)
    }

    @Test("lsusb sees one hub with the boards below it")
    func lsusbTree() async throws {
        let directory = try ShortTemporaryDirectory()
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"), ["--boards", "3", "--", "lsusb"], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.lines.filter { $0.contains("0483:df11") }.count == 3)
        #expect(result.lines.filter { $0.contains("05e3:0608") }.count == 1)
    }

    @Test("--board-scenario names one of the boards' ports")
    func boardScenarioValidation() async throws {
        let directory = try ShortTemporaryDirectory()
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            ["--boards", "2", "--board-scenario", "1-1.5=write-error", "--", "true"], in: directory)
        #expect(result.status != 0)
        #expect(
            result.stderr.contains("--board-scenario takes PORT=SCENARIO with one of the boards' ports (1-1.1, 1-1.2)"))
    }
}
