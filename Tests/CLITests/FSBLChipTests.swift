import Foundation
import Glibc
import TestSupport
import Testing

/// Issue 9 item 9: an FSBL whose STM32 header is for another chip is refused before anything is
/// written (`flash`, against the ROM's `@Device ID`) and reported offline (`check --soc`).
@Suite("FSBL header against the chip", .timeLimit(.minutes(10)))
struct FSBLChipTests {
    let tool: ExternalTool
    let examples: String

    init() throws {
        tool = try BuiltProducts.tool("stm32mp-flash")
        examples = try CLIExamples.directory()
    }

    @Test(
        "an MP13 or MP25 layout on the virtual MP15 fails with fsbl-wrong-chip, exit 1, nothing written",
        arguments: [("mp13-sdcard", "STM32MP13"), ("mp25-sdcard", "STM32MP2")])
    func flashRefusesAnotherChip(layout: String, chip: String) throws {
        let directory = try TemporaryDirectory()
        let result = try tool.run([
            "flash", "--json", "--simulate", "--soc", "mp15", "--sim-dir", directory.path, "\(examples)/\(layout).tsv",
        ])
        #expect(result.status == 1, "\(result.standardOutput)")
        let failed = try #require(result.standardOutput.split(separator: "\n").last.map(String.init))
        #expect(failed.contains(#""event":"failed""#) && failed.contains(#""code":"fsbl-wrong-chip""#), "\(failed)")
        #expect(failed.contains(#""stage":"rom""#) && failed.contains(#""phase":"0x01""#), "\(failed)")
        #expect(failed.contains("but the board is an STM32MP15; nothing was sent"), "\(failed)")
        #expect(failed.contains(chip), "\(failed)")
        #expect(
            !result.standardOutput.contains(#""event":"phase-start""#), "no phase may start: \(result.standardOutput)")
        // The storage the layout would program is untouched: its image holds no data block at all.
        var info = stat()
        #expect(stat(directory.file("mmc0.img"), &info) == 0)
        #expect(info.st_blocks == 0, "\(info.st_blocks) blocks written")
    }

    @Test("the right chip still flashes", arguments: [("mp13-sdcard", "mp13"), ("mp15-sdcard", "mp15")])
    func flashRightChip(layout: String, soc: String) throws {
        let directory = try TemporaryDirectory()
        let result = try tool.run([
            "flash", "--json", "--simulate", "--soc", soc, "--sim-dir", directory.path, "\(examples)/\(layout).tsv",
        ])
        #expect(result.status == 0, "\(result.standardOutput)\(result.standardError)")
    }

    @Test(
        "check --soc reports an FSBL header for another chip as an error, offline",
        arguments: [
            ("mp13-sdcard", "mp15", true), ("mp15-sdcard", "mp13", true), ("mp25-sdcard", "mp13", true),
            ("mp13-sdcard", "mp13", false), ("mp25-sdcard", "mp25", false), ("mp15-sdcard", "mp15", false),
        ])
    func checkSoC(layout: String, soc: String, mismatch: Bool) throws {
        let result = try tool.run(["check", "--soc", soc, "\(examples)/\(layout).tsv"])
        #expect(result.standardOutput.contains("[fsbl-wrong-chip]") == mismatch, "\(result.standardOutput)")
        #expect(result.status == (mismatch ? 1 : 0), "\(result.standardOutput)")
    }

    @Test("check --soc takes mp15, mp13 or mp25")
    func checkSoCValues() throws {
        let result = try tool.run(["check", "--soc", "mp99", "\(examples)/mp15-sdcard.tsv"])
        #expect(result.status == 2)
        #expect(result.standardError.contains("--soc takes mp15, mp13 or mp25, got 'mp99'"), "\(result.standardError)")
    }
}
