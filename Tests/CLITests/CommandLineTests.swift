import Foundation
import TestSupport
import Testing

/// The built `stm32mp-flash`, run as a user would: exit statuses, output formats, JSON shapes.
@Suite("stm32mp-flash on the command line")
struct CommandLineTests {
    let tool: ExternalTool
    let examples: String

    init() throws {
        tool = try BuiltProducts.tool("stm32mp-flash")
        examples = try CLIExamples.directory()
    }

    func json(_ text: String) throws -> Any { try JSONSerialization.jsonObject(with: Data(text.utf8)) }

    @Test("exit statuses: 0 clean or warnings, 1 errors, 2 usage")
    func exitStatuses() throws {
        let directory = try TemporaryDirectory()
        let bad = directory.file("bad.tsv")
        try "P\t0x04\tfsbl1\tBinary\tsdmmc1\t0x4400\tx\n".write(toFile: bad, atomically: true, encoding: .utf8)
        #expect(try tool.run(["check", "\(examples)/mp15-sdcard.tsv"]).status == 0)
        let failed = try tool.run(["check", "--layout-only", bad])
        #expect(failed.status == 1)
        #expect(failed.standardOutput.contains("\(bad):1:21: error: IP 'sdmmc1' is the SoC controller's name"))
        #expect(try tool.run(["check", "--bogus"]).status == 2)
        #expect(try tool.run(["plan", examples + "/mp15-sdcard.tsv", "--device-size", "mmc0=lots"]).status == 2)
    }

    @Test(
        "--tfa-buffer-base and --sim-tfa-buffer-base take a 32-bit hex address; a bad one is a usage error naming the option",
        arguments: ["--tfa-buffer-base", "--sim-tfa-buffer-base"])
    func tfaBufferBaseIsValidated(option: String) throws {
        for bad in ["0xZZ", "0xFFFFFFFF", "0x100000000", ""] {
            let result = try tool.run(["flash", "--simulate", option, bad, "\(examples)/mp13-sdcard.tsv"])
            #expect(result.status == 2, "\(bad): \(result.standardError)")
            #expect(result.standardError.contains("\(option) takes TF-A's DWL_BUFFER_BASE"), "\(result.standardError)")
            #expect(result.standardError.contains("got '\(bad)'"), "\(result.standardError)")
        }
        let storage = try TemporaryDirectory()
        let good = try tool.run([
            "flash", "--simulate", "--sim-dir", storage.path, "--device-size", "mmc0=64MiB", option, "0xD0000000",
            "\(examples)/mp13-sdcard.tsv",
        ])
        #expect(good.status == 0, "\(good.standardError)")
    }

    /// One simulated clock served eight concurrent flashes: each sleep jumped it to that board's
    /// deadline, so other boards' waits ran out while they worked (`other-port` in about 40 % of
    /// 8-board runs on MP13 and MP25). Several boards now run in real time.
    @Test("flash --simulate --boards 8: every board done, on MP13 and MP25", arguments: ["mp13-sdcard", "mp25-sdcard"])
    func eightSimulatedBoardsAllFinish(layout: String) throws {
        let storage = try TemporaryDirectory()
        let result = try tool.run([
            "flash", "--json", "--simulate", "--boards", "8", "--sim-dir", storage.path, "--device-size",
            "mmc0=64MiB", "\(examples)/\(layout).tsv",
        ])
        #expect(result.status == 0, "\(result.standardOutput.suffix(3000))")
        let last = try #require(result.standardOutput.split(separator: "\n").last.map(String.init))
        #expect(last.contains(#""event":"done""#), "\(last)")
        #expect(!result.standardOutput.contains(#""code":"other-port""#), "\(last)")
    }

    @Test("check --json has the documented shape")
    func checkJSON() throws {
        let result = try tool.run([
            "check", "--json", "--layout-only", "\(examples)/mp15-sdcard.tsv", "/nonexistent.tsv",
        ])
        #expect(result.status == 1)
        let root = try #require(try json(result.standardOutput) as? [String: Any])
        let files = try #require(root["files"] as? [[String: Any]])
        #expect(files.map { $0["path"] as? String } == ["\(examples)/mp15-sdcard.tsv", "/nonexistent.tsv"])
        let diagnostic = try #require((files[1]["diagnostics"] as? [[String: Any]])?.first)
        #expect(Set(diagnostic.keys) == ["line", "column", "severity", "code", "message"])
        #expect(diagnostic["line"] as? Int == 0)
        #expect(diagnostic["severity"] as? String == "error")
        #expect(diagnostic["code"] as? String == "unreadable")
    }

    @Test("plan --json has the documented shape, numbers in bytes, null for unknown sizes")
    func planJSON() throws {
        let known = try tool.run(["plan", "--json", "\(examples)/mp15-emmc.tsv", "--device-size", "mmc1=64MiB"])
        #expect(known.status == 0, "\(known.standardError)")
        let root = try #require(try json(known.standardOutput) as? [String: Any])
        let stages = try #require(root["bootStages"] as? [[String: Any]])
        #expect(stages.map { $0["id"] as? String } == ["0x01", "0x03"])
        #expect(stages.allSatisfy { ($0["fileSize"] as? Int ?? 0) > 0 && $0["file"] is String && $0["name"] is String })
        let devices = try #require(root["devices"] as? [[String: Any]])
        #expect(devices.count == 1)
        #expect(devices[0]["ip"] as? String == "mmc1")
        #expect(devices[0]["gpt"] as? Bool == true)
        let partitions = try #require(devices[0]["partitions"] as? [[String: Any]])
        for key in ["id", "name", "type", "offset", "size", "file", "fileSize", "gptType"] {
            #expect(partitions.allSatisfy { $0.keys.contains(key) }, "\(key)")
        }
        let boot1 = try #require(partitions.first { $0["name"] as? String == "fsbl1" })
        #expect(boot1["size"] as? Int == 4 << 20)
        #expect(boot1["gptType"] is NSNull)
        let last = try #require(partitions.last)
        #expect((last["size"] as? Int).map { $0 > 0 } == true)

        let unknown = try tool.run(["plan", "--json", "\(examples)/mp15-emmc.tsv"])
        let root2 = try #require(try json(unknown.standardOutput) as? [String: Any])
        let lastUnknown = try #require(
            ((root2["devices"] as? [[String: Any]])?.first?["partitions"] as? [[String: Any]])?.last)
        #expect(lastUnknown["size"] is NSNull)
    }

    @Test("flash --simulate --json: one object per line with \"event\", ending with done")
    func flashJSON() throws {
        let storage = try TemporaryDirectory()
        let result = try tool.run([
            "flash", "\(examples)/mp13-sdcard.tsv", "--simulate", "--json", "--sim-dir", storage.path, "--device-size",
            "mmc0=64MiB",
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let events = try result.standardOutput.split(separator: "\n").map {
            try #require(try json(String($0)) as? [String: Any])
        }
        #expect(events.allSatisfy { $0["event"] is String })
        let names = events.compactMap { $0["event"] as? String }
        #expect(names.first == "start")
        #expect(names.last == "done")
        #expect(names.contains("reenumeration") && names.contains("phase-done") && names.contains("end"))
        #expect(!names.contains("failed"))
        let done = try #require(events.last)
        #expect((done["partitions"] as? [String])?.count == 8)
        #expect(FileManager.default.fileExists(atPath: storage.file("mmc0.img")))
    }

    @Test("a failed flash ends with one failed line carrying a diagnosis code, exit 1, no success")
    func flashFailure() throws {
        let storage = try TemporaryDirectory()
        let result = try tool.run([
            "flash", "\(examples)/mp15-sdcard.tsv", "--simulate", "--json", "--sim-dir", storage.path, "--sim-scenario",
            "fip-header-bad",
        ])
        #expect(result.status == 1)
        let lines = result.standardOutput.split(separator: "\n")
        let lastLine = try #require(lines.last)
        let last = try #require(try json(String(lastLine)) as? [String: Any])
        #expect(last["event"] as? String == "failed")
        #expect(last["code"] as? String == "fip-header-rejected")
        #expect((last["cause"] as? String)?.isEmpty == false)
        #expect(!result.standardOutput.contains("\"event\":\"done\""))
        #expect(!result.standardOutput.contains("\"event\":\"end\""))
    }

    @Test("--tfa-timeout bounds the wait for TF-A after the ROM's DETACH")
    func tfaTimeout() throws {
        let storage = try TemporaryDirectory()
        let result = try tool.run([
            "flash", "\(examples)/mp13-sdcard.tsv", "--simulate", "--json", "--sim-dir", storage.path,
            "--sim-scenario", "boot-interface-unsupported", "--tfa-timeout", "2",
        ])
        #expect(result.status == 1)
        #expect(result.standardOutput.contains(#""event":"detach","expecting":"tfa""#))
        #expect(result.standardOutput.contains(#""timeout":2"#))
        #expect(result.standardOutput.contains("the board did not come back within 2 s"))
        #expect(result.standardOutput.contains(#""code":"fsbl-not-started""#))
    }

    @Test("a text-mode failure prints the board's message verbatim and the diagnosis, exit 1")
    func flashFailureText() throws {
        let storage = try TemporaryDirectory()
        let result = try tool.run([
            "flash", "\(examples)/mp15-sdcard.tsv", "--simulate", "--sim-dir", storage.path, "--sim-scenario",
            "layout-rejected",
        ])
        #expect(result.status == 1)
        // Human output (progress, error, diagnosis) is on stderr; stdout is for machine output.
        #expect(result.standardError.contains("the board reported: Layout line 2: type parsing error : 'FIP'"))
        #expect(result.standardError.contains("layout-rejected:"))
        #expect(!result.standardError.contains("Done:"))
        #expect(result.standardOutput.isEmpty)
    }
}

/// The example set, generated once per test process with the built tool; the folder lives as long
/// as the process.
enum CLIExamples {
    struct GenerationFailed: Error { var output: String }

    static let folder: Result<TemporaryDirectory, any Error> = Result {
        let folder = try TemporaryDirectory(prefix: "stm32mp-cli-examples")
        let result = try BuiltProducts.tool("stm32mp-flash").run(["make-examples", "--out", folder.path])
        guard result.status == 0 else { throw GenerationFailed(output: result.standardError) }
        return folder
    }

    static func directory() throws -> String { try folder.get().path }
}
