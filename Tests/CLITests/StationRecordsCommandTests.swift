import Foundation
import StationRecords
import TestSupport
import Testing

/// `flash --db` and `station report` through the built tool, including a flash killed with
/// SIGKILL half-way, which must leave the attempt unfinished and nothing half-written.
@Suite("Attempt records from the command line", .timeLimit(.minutes(10)))
struct StationRecordsCommandTests {
    let tool: ExternalTool
    let examples: String

    init() throws {
        tool = try BuiltProducts.tool("stm32mp-flash")
        examples = try CLIExamples.directory()
    }

    @Test("a flash killed with SIGKILL leaves one unfinished attempt; the next one is complete")
    func killedFlashLeavesUnfinished() async throws {
        let directory = try TemporaryDirectory()
        let db = directory.file("records.sqlite")
        let layout = "\(examples)/mp15-sdcard.tsv"
        // Real time: the virtual board's timing model makes this run several seconds long.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: tool.executable)
        child.arguments = [
            "flash", layout, "--simulate", "--realtime", "--sim-dir", directory.file("board1"), "--db", db, "--json",
        ]
        let output = Pipe()
        child.standardOutput = output
        child.standardError = FileHandle.nullDevice
        try child.run()
        // Wait until the board is being flashed: the first phase-done event.
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("\"phase-done\"") {
            let chunk = output.fileHandleForReading.availableData
            try #require(!chunk.isEmpty, "the flash ended before sending a phase")
            seen.append(chunk)
        }
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        #expect(child.terminationReason == .uncaughtSignal)

        let store = try RecordStore(path: db)
        var attempts = try await store.attempts()
        #expect(attempts.count == 1)
        #expect(attempts[0].result == .unfinished)
        #expect(attempts[0].ended == nil)
        #expect(attempts[0].partitions.isEmpty, "nothing of the end is written before the end")
        #expect(attempts[0].start.layoutSHA256 == (try FileDigest.sha256(path: layout)))

        let finished = try tool.run([
            "flash", layout, "--simulate", "--sim-dir", directory.file("board2"), "--db", db,
        ])
        #expect(finished.status == 0, "\(finished.standardError)")
        attempts = try await store.attempts()
        #expect(attempts.map(\.result) == [.unfinished, .done])
        #expect(attempts[1].start.serial?.count == 24)
        #expect(attempts[1].start.port == "1-2")
        #expect(attempts[1].start.soc == "mp15")
        #expect(attempts[1].partitions.map(\.id).contains(0x11))
        let rootfs = try #require(attempts[1].partitions.first { $0.name == "rootfs" })
        let rootfsFile = try String(contentsOfFile: layout, encoding: .utf8).split(separator: "\n")
            .first { $0.contains("\trootfs\t") }?.split(separator: "\t").last.map(String.init)
        #expect(rootfs.sha256 == (try FileDigest.sha256(path: "\(examples)/\(try #require(rootfsFile))")))
    }

    @Test("a failed flash is recorded with its diagnosis; report filters and formats")
    func failedFlashAndReport() async throws {
        let directory = try TemporaryDirectory()
        let db = directory.file("records.sqlite")
        let failed = try tool.run([
            "flash", "\(examples)/mp13-sdcard.tsv", "--simulate", "--sim-dir", directory.file("b"), "--sim-scenario",
            "write-error", "--db", db,
        ])
        #expect(failed.status == 1)
        let csv = try tool.run(["station", "report", "--db", db])
        #expect(csv.status == 0, "\(csv.standardError)")
        let lines = csv.standardOutput.split(separator: "\r\n")
        #expect(lines.count == 2)
        #expect(lines[1].contains(",mp13,"))
        #expect(lines[1].contains(",failed,board-error,"))

        let json = try tool.run(["station", "report", "--db", db, "--format", "json", "--since", "2999-01-01"])
        #expect(json.standardOutput == "{\"attempts\":[]}\n")
        let badSince = try tool.run(["station", "report", "--db", db, "--since", "yesterday"])
        #expect(badSince.status == 2)
        #expect(badSince.standardError.contains("--since takes an ISO 8601 date"))
        let missing = try tool.run(["station", "report", "--db", directory.file("none.sqlite")])
        #expect(missing.status == 1)
        #expect(missing.standardError.contains("none.sqlite: no attempt records there"))
    }
}
