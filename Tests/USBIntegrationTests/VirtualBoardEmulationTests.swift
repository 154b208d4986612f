import Foundation
import Testing

/// The virtual board (ROM, TF-A, U-Boot personalities) served by the emulator, seen through the
/// real USB stack: dfu-util, and a whole `stm32mp-flash flash` run over libusb and libudev.
@Suite struct VirtualBoardEmulationTests {
    @Test func dfuUtilSeesTheMP15ROMAlternatesOfTheProtocolReference() async throws {
        let directory = try ShortTemporaryDirectory()
        let emulator = try builtExecutable("stm32mp-board-emulator")
        let result = try await run(emulator, ["--soc", "mp15", "--", "dfu-util", "-l"], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        let names = Dictionary(
            uniqueKeysWithValues: try result.lines.filter { $0.hasPrefix("Found DFU:") }.map(alternate))
        // Protocol reference §3, MP15 ROM table.
        #expect(
            names == [
                0: "@Partition0 /0x00/1*256Ke", 1: "@FSBL /0x01/1*1Me", 2: "@Partition2 /0x02/1*1Me",
                3: "@Partition3 /0x03/1*16Me", 4: "@Partition4 /0x04/1*16Me", 5: "@virtual /0xF1/1*512Ba",
            ])
    }

    @Test(arguments: ["mp13", "mp25"])
    func dfuUtilSeesTheFSBLAtAlternateZeroOnMP13AndMP2(soc: String) async throws {
        let directory = try ShortTemporaryDirectory()
        let emulator = try builtExecutable("stm32mp-board-emulator")
        let result = try await run(emulator, ["--soc", soc, "--", "dfu-util", "-l"], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        let names = Dictionary(
            uniqueKeysWithValues: try result.lines.filter { $0.hasPrefix("Found DFU:") }.map(alternate))
        #expect(names[0] == "@FSBL /0x01/1*1Me")
        #expect(names.values.contains("@virtual /0xF1/1*512Ba"))
    }

    // The whole flash over real USB, for every SoC: RealUSBFlashTests.
}

extension VirtualBoardEmulationTests {
    /// The board vanishes in the middle of a partition: libusb's NO_DEVICE reaches the engine and
    /// the diagnosis through the emulator's ENODEV, and the run ends instead of hanging.
    @Test func boardVanishingMidPartitionIsDiagnosedAsDisconnected() async throws {
        let directory = try ShortTemporaryDirectory()
        let flash = try builtExecutable("stm32mp-flash")
        let examples = directory.file("examples")
        try #require(try await run(flash, ["make-examples", "--out", examples], in: directory).status == 0)
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            [
                "--soc", "mp15", "--scenario", "vanish-mid-partition", "--", flash, "flash", "--json",
                "--wait-timeout", "5", "--uboot-timeout", "10", examples + "/mp15-sdcard.tsv",
            ], in: directory, timeout: 180)
        #expect(result.status != 0)
        let last = try #require(result.lines.last)
        let failed = try JSONDecoder().decode(FailedEvent.self, from: Data(last.utf8))
        #expect(failed.event == "failed" && failed.code == "disconnected", "\(last)")
        #expect(failed.error.contains("LIBUSB_ERROR_NO_DEVICE"), "\(failed.error)")
        #expect(failed.stage == "uboot")
    }
}

private struct FailedEvent: Decodable {
    var event: String
    var code: String
    var error: String
    var stage: String?
}

/// `alt=N, name="…"` of a dfu-util `Found DFU:` line.
func alternate(_ line: String) throws -> (Int, String) {
    let alt = try #require(line.range(of: "alt=")).upperBound
    let number = try #require(Int(line[alt...].prefix { $0.isNumber }))
    let nameStart = try #require(line.range(of: "name=\"")).upperBound
    let name = line[nameStart...].prefix { $0 != "\"" }
    return (number, String(name))
}
