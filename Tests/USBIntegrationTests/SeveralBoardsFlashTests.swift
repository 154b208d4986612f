import Foundation
import Testing

/// `flash --port … --port …` over real libusb/libudev: four emulated boards behind one hub in one
/// run, one of them vanishing mid-partition; the others finish, the run fails, every JSON event
/// names its board's port and serial.
@Suite(.timeLimit(.minutes(10)))
struct SeveralBoardsFlashTests {
    @Test("four boards in one run, one vanishing mid-flash: three done, one disconnected, exit 1")
    func fourBoardsOneVanishing() async throws {
        let directory = try ShortTemporaryDirectory()
        let examples = directory.file("layouts")
        let tool = try builtExecutable("stm32mp-flash")
        let made = try await run(tool, ["make-examples", "--out", examples], in: directory)
        #expect(made.status == 0)
        let ports = (1...4).map { "1-1.\($0)" }
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            [
                "--boards", "4", "--board-scenario", "1-1.3=vanish-mid-partition", "--storage",
                directory.file("boards"), "--",
            ]
                + [tool, "flash", "\(examples)/mp15-sdcard.tsv", "--json", "--wait-timeout", "15"]
                + ports.flatMap { ["--port", $0] },
            in: directory, timeout: 200)
        #expect(result.status == 1, "\(result.stderr)")
        let events = try result.lines.map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        }
        #expect(events.first?["event"] as? String == "start")
        let last = try #require(events.last)
        #expect(last["event"] as? String == "failed")
        #expect(last["done"] as? Int == 3)
        let boards = try #require(last["boards"] as? [[String: Any]])
        #expect(boards.map { $0["port"] as? String } == ports)
        #expect(boards.map { $0["result"] as? String } == ["done", "done", "failed", "done"])
        #expect(boards[2]["code"] as? String == "disconnected")
        // Every board event carries its port and serial; each board's events stay on its port.
        let boardEvents = events.dropFirst().dropLast()
        #expect(boardEvents.allSatisfy { $0["port"] is String && $0.keys.contains("serial") })
        for (index, port) in ports.enumerated() {
            let serials = Set(
                boardEvents.filter { $0["port"] as? String == port }.compactMap { $0["serial"] as? String })
            #expect(serials == ["0029002A4C4250110038000\(index + 1)"], "\(port): \(serials)")
        }
        #expect(events.filter { $0["event"] as? String == "end" }.count == 3)
        // The three boards that finished hold their partitions: sfdisk reads each one's GPT.
        for port in ["1-1.1", "1-1.2", "1-1.4"] {
            let sfdisk = try await run("sfdisk", ["--json", directory.file("boards/\(port)/mmc0.img")], in: directory)
            #expect(sfdisk.stdout.contains("\"name\": \"rootfs\""), "\(port): \(sfdisk.stdout)")
        }
    }
}
