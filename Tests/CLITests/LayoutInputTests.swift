import Foundation
import TestSupport
import Testing

/// Issue 9 items 11–13 and 18 as a user meets them: the built tool, real files, real folders.
@Suite("layout inputs on the command line", .timeLimit(.minutes(10)))
struct LayoutInputTests {
    let tool: ExternalTool
    let examples: String

    init() throws {
        tool = try BuiltProducts.tool("stm32mp-flash")
        examples = try CLIExamples.directory()
    }

    @Test("check takes --device-size/--erase-size, and then geometry problems are errors")
    func checkGeometry() throws {
        let directory = try TemporaryDirectory()
        let layout = directory.file("nor.tsv")
        try "P\t0x04\tfsbl1\tBinary\tnor0\t0x1000\tf\n".write(toFile: layout, atomically: true, encoding: .utf8)
        let assumed = try tool.run(["check", "--layout-only", layout])
        #expect(assumed.status == 0, "\(assumed.standardOutput)")
        #expect(assumed.standardOutput.contains("warning: with the default device geometry"))
        let stated = try tool.run(["check", "--layout-only", "--erase-size", "nor0=64KiB", layout])
        #expect(stated.status == 1)
        #expect(stated.standardOutput.contains("error: with the geometry given for nor0"))
    }

    @Test("a size for a device the layout does not use is a usage error", arguments: ["check", "plan", "flash"])
    func unusedDevice(command: String) throws {
        var arguments = [command, "\(examples)/mp15-sdcard.tsv", "--device-size", "mmc9=8GiB"]
        if command == "flash" { arguments += ["--simulate", "--sim-dir", try TemporaryDirectory().path] }
        let result = try tool.run(arguments)
        #expect(result.status == 2, "\(result.standardError)")
        #expect(result.standardError.contains("--device-size mmc9: the layout has no device mmc9 (its devices: mmc0)"))
    }

    @Test("GB means 10^9 bytes and GiB 2^30 in plan's device size")
    func decimalUnits() throws {
        let result = try tool.run(["plan", "--json", "\(examples)/mp15-sdcard.tsv", "--device-size", "mmc0=8GB"])
        #expect(result.status == 0, "\(result.standardError)")
        let root = try #require(
            try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any])
        let device = try #require((root["devices"] as? [[String: Any]])?.first)
        #expect(device["size"] as? Int == 8_000_000_000)
    }

    @Test("a Binary that exists next to the layout and in the working directory: warning, refusal, choice")
    func shadowing() throws {
        let work = try TemporaryDirectory()
        try FileManager.default.createDirectory(
            atPath: work.file("mp15-sdcard"), withIntermediateDirectories: true)
        try Data(repeating: 0x5A, count: 4096).write(to: URL(fileURLWithPath: work.file("mp15-sdcard/rootfs.ext4")))
        let layout = "\(examples)/mp15-sdcard.tsv"

        let check = try tool.run(["check", layout], workingDirectory: work.path)
        #expect(check.status == 0, "\(check.standardOutput)")
        #expect(check.standardOutput.contains("[shadowed-binary]"))
        #expect(check.standardOutput.contains("'\(examples)/mp15-sdcard/rootfs.ext4'"))

        let plan = try tool.run(["plan", layout], workingDirectory: work.path)
        #expect(plan.standardOutput.contains("\(examples)/mp15-sdcard/rootfs.ext4"), "\(plan.standardOutput)")

        let simDir = work.file("vb")
        let refused = try tool.run(["flash", layout, "--simulate", "--sim-dir", simDir], workingDirectory: work.path)
        #expect(refused.status == 1)
        #expect(refused.standardError.contains("--binaries-from"))
        let chosen = try tool.run(
            ["flash", layout, "--simulate", "--sim-dir", simDir, "--binaries-from", "layout"],
            workingDirectory: work.path)
        #expect(chosen.status == 0, "\(chosen.standardError)")
    }

    @Test("control characters in names and paths are printed escaped by check, plan and flash")
    func terminalSafety() throws {
        let directory = try TemporaryDirectory()
        let layout = directory.file("evil\u{1B}]0;title\u{07}.tsv")
        let source = try String(contentsOfFile: "\(examples)/mp15-sdcard.tsv", encoding: .utf8)
        let text =
            source.replacingOccurrences(of: "mp15-sdcard/", with: "\(examples)/mp15-sdcard/")
            .replacingOccurrences(of: "\tuserfs\t", with: "\tuser\u{1B}[2Jfs\t")
            + "P\t0x13\tbad\u{1B}[31m\tFileSystem\tmmc0\t0x4400\tnone\n"
        try text.write(toFile: layout, atomically: true, encoding: .utf8)
        let check = try tool.run(["check", layout])
        let plan = try tool.run(["plan", layout])
        let flash = try tool.run(["flash", layout, "--simulate", "--sim-dir", directory.file("vb")])
        for result in [check, plan, flash] {
            let all = result.standardOutput + result.standardError
            #expect(!all.contains("\u{1B}") && !all.contains("\u{07}"), "raw control character in: \(all)")
            #expect(all.contains("\\x1b"), "\(all)")
        }
        // Without the bad line the plan table shows the escaped name.
        try text.split(separator: "\n").dropLast().joined(separator: "\n").appending("\n")
            .write(toFile: layout, atomically: true, encoding: .utf8)
        let table = try tool.run(["plan", layout])
        #expect(table.status == 0, "\(table.standardError)")
        #expect(table.standardOutput.contains("user\\x1b[2Jfs") && !table.standardOutput.contains("\u{1B}"))
    }

    @Test("flash --list-scenarios needs no layout and describes each scenario")
    func listScenarios() throws {
        let result = try tool.run(["flash", "--list-scenarios"])
        #expect(result.status == 0, "\(result.standardError)")
        let lines = result.standardOutput.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("no-uboot") && $0.contains("U-Boot never starts USB") })
        #expect(lines.allSatisfy { $0.split(separator: " ", omittingEmptySubsequences: true).count > 2 })
        #expect(try tool.run(["flash"]).status == 2)
    }
}
