import Foundation
import TestSupport
import Testing

/// Issue 9 item 16: every command with `--json`, the built binary, each line held to docs/json.md
/// (JSONContract reads the page). `list`/`watch` need a USB bus: their runs are in
/// USBIntegrationTests under the emulator, with the same checker.
@Suite("JSON contract (docs/json.md)", .timeLimit(.minutes(10)))
struct JSONContractTests {
    let tool: ExternalTool
    let examples: String
    let contract: JSONContract

    init() throws {
        tool = try BuiltProducts.tool("stm32mp-flash")
        examples = try CLIExamples.directory()
        contract = try JSONContract()
    }

    func document(_ text: String) throws -> Any { try JSONSerialization.jsonObject(with: Data(text.utf8)) }

    func expectDocumented(_ output: String, section: String) throws {
        let json = try document(output)
        #expect(contract.undocumentedKeys(json, section: section) == [], "\(section)")
        #expect(JSONContract.inconsistentArrays(json) == [], "\(section)")
    }

    @Test("the checker reads the flash event table")
    func tableRead() {
        #expect(contract.flashEvents["start"] == ["layout", "mode", "soc", "scenario"])
        #expect(contract.flashEvents["failed"] == ["code", "cause", "error", "stage", "phase"])
        #expect(contract.flashEvents["diagnosis"] == ["code", "cause", "evidence", "nextSteps", "alternatives"])
        #expect(contract.flashEvents["end"] == [])
        #expect(contract.flashLineProblems(#"{"event":"end","extra":1}"#).count == 1)
    }

    @Test("check --json: documented keys, with and without errors")
    func check() throws {
        let directory = try TemporaryDirectory()
        let bad = directory.file("bad.tsv")
        try "P\t0x04\tfsbl1\tBinary\tmmc0\t0x0\tnone\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let result = try tool.run(["check", "--json", "\(examples)/mp15-sdcard.tsv", bad])
        #expect(result.status == 1)
        try expectDocumented(result.standardOutput, section: "check --json")
    }

    @Test("plan --json prints JSON with the diagnostics even when the layout has errors")
    func planWithErrors() throws {
        let directory = try TemporaryDirectory()
        let bad = directory.file("bad.tsv")
        try "P\t0x04\tfsbl1\tBinary\tmmc0\t0x4400\tf\nP\t0x05\tfsbl2\tBinary\tmmc0\t0x4400\tf\n".write(
            toFile: bad, atomically: true, encoding: .utf8)
        let failed = try tool.run(["plan", "--json", "--layout-only", bad])
        #expect(failed.status == 1)
        let root = try #require(try document(failed.standardOutput) as? [String: Any])
        let codes = (root["diagnostics"] as? [[String: Any]])?.compactMap { $0["code"] as? String } ?? []
        #expect(codes.contains("same-offset"))
        #expect(root["devices"] is NSNull && root["requestOrder"] is NSNull && root["bootStages"] is NSNull)
        try expectDocumented(failed.standardOutput, section: "plan --json")

        let good = try tool.run(["plan", "--json", "\(examples)/mp15-emmc.tsv"])
        #expect(good.status == 0)
        try expectDocumented(good.standardOutput, section: "plan --json")
        let plan = try #require(try document(good.standardOutput) as? [String: Any])
        // One representation of partition Ids everywhere: the layout's "0x10".
        #expect((plan["requestOrder"] as? [String])?.allSatisfy { $0.hasPrefix("0x") && $0.count == 4 } == true)
    }

    @Test("doctor --json: documented keys, fix and unknown values null rather than missing")
    func doctor() throws {
        let result = try tool.run(["doctor", "--json"])
        try expectDocumented(result.standardOutput, section: "doctor --json")
        let root = try #require(try document(result.standardOutput) as? [String: Any])
        let checks = try #require(root["checks"] as? [[String: Any]])
        #expect(!checks.isEmpty && checks.allSatisfy { $0.keys.contains("fix") })
        let environment = try #require(root["environment"] as? [String: Any])
        for key in ["hypervisor", "wsl", "container"] { #expect(environment.keys.contains(key), "\(key)") }
    }

    /// A flash run's stdout, held to the event table and the one-final-line rule.
    func flash(_ arguments: [String], status: Int32) throws -> [[String: Any]] {
        let storage = try TemporaryDirectory()
        let result = try tool.run(["flash", "--json", "--simulate", "--sim-dir", storage.path] + arguments)
        #expect(result.status == status, "\(result.standardError)")
        #expect(contract.flashRunProblems(result.standardOutput) == [], "\(result.standardOutput)")
        return try result.standardOutput.split(separator: "\n").map {
            try #require(try document(String($0)) as? [String: Any])
        }
    }

    @Test("flash --json: a successful run and a failed run follow the table")
    func flashRuns() throws {
        let done = try flash(["\(examples)/mp13-sdcard.tsv", "--device-size", "mmc0=64MiB"], status: 0)
        #expect(done.last?["event"] as? String == "done")
        #expect((done.last?["partitions"] as? [String])?.allSatisfy { $0.hasPrefix("0x") } == true)
        let failed = try flash(["\(examples)/mp15-sdcard.tsv", "--sim-scenario", "write-error"], status: 1)
        #expect(failed.last?["event"] as? String == "failed")
    }

    @Test("flash --json with a layout with errors: start, diagnostic lines, one failed line")
    func flashInvalidLayout() throws {
        let directory = try TemporaryDirectory()
        let bad = directory.file("bad.tsv")
        try "P\t0x10\trootfs\tSystem\tmmc0\t0x4400\tnone\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let events = try flash([bad], status: 1)
        #expect(events.map { $0["event"] as? String } == ["start", "diagnostic", "failed"])
        #expect(events.first?["soc"] is NSNull)
        #expect(events[1]["code"] as? String == "selected-without-file")
        #expect(events.last?["code"] as? String == "invalid-layout")
    }

    @Test("flash --json with a usage error found after parsing: one failed line, exit 2")
    func flashUsageError() throws {
        let events = try flash(["\(examples)/mp15-sdcard.tsv", "--device-size", "mmc9=1GiB"], status: 2)
        #expect(events.map { $0["event"] as? String } == ["start", "failed"])
        #expect(events.last?["code"] as? String == "usage")
        #expect((events.last?["error"] as? String)?.contains("mmc9") == true)
    }
}

extension JSONContractTests {
    @Test("flash --json when the virtual board's folder cannot be used: host-file, nothing flashed")
    func flashStorageRefused() throws {
        let storage = try TemporaryDirectory()
        let target = storage.file("precious.bin")
        try Data("keep".utf8).write(to: URL(fileURLWithPath: target))
        try FileManager.default.createSymbolicLink(atPath: storage.file("mmc0.img"), withDestinationPath: target)
        let result = try tool.run([
            "flash", "--json", "--simulate", "--sim-dir", storage.path, "\(examples)/mp15-sdcard.tsv",
        ])
        #expect(result.status == 1)
        #expect(contract.flashRunProblems(result.standardOutput) == [], "\(result.standardOutput)")
        #expect(result.standardOutput.contains(#""code":"host-file""#))
        #expect(result.standardError.contains("symbolic link"))
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "keep")
    }
}
