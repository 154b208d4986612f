import Foundation
import Testing

/// Board tracking against real libusb and libudev under the emulator: the udev/libusb race forced
/// deterministically, and boards vanishing at several points with Debian's libusb 1.0.26 (which
/// aborts when a handle is touched the wrong way after LIBUSB_ERROR_NO_DEVICE).
@Suite(.timeLimit(.minutes(10)))
struct TrackingEmulationTests {
    /// Every add uevent reaches libusb's own monitor 150 ms after the tool's: the tool hears of each
    /// new stage before libusb lists it, and must retry the open instead of waiting for another add.
    @Test(arguments: ["mp13", "mp25"])
    func raceBetweenUdevAndLibusbLosesNoBoard(soc: String) async throws {
        let directory = try ShortTemporaryDirectory()
        let flash = try builtExecutable("stm32mp-flash")
        let examples = try await makeExamples(in: directory)
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            [
                "--soc", soc, "--libusb-lag-ms", "150", "--", flash, "flash", "--json", "--verbose",
                "--tfa-timeout", "10", examples + "/\(soc)-sdcard.tsv",
            ], in: directory, timeout: 240)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr.suffix(3000))")
        #expect(result.lines.last?.contains(#""event":"done""#) == true, "\(result.stdout)")
        // The race happened: opens failed until libusb listed the device, then succeeded.
        #expect(result.stderr.contains("openRetry"), "\(result.stderr.suffix(3000))")
        #expect(result.stderr.contains("no DFU device at port 1-1"), "\(result.stderr.suffix(3000))")
    }

    /// The board drops off the bus: after the MP15 ROM's FSBL (as after a rejected FSBL, where
    /// libusb 1.0.26 aborted in 2 of 3 runs) and at several blocks of a partition. Every run ends
    /// with exactly one `failed` line and exit status 1, never an abort (134).
    @Test(arguments: [
        ["--scenario", "vanish-after-fsbl"],
        ["--scenario", "vanish-mid-partition", "--vanish-block", "1"],
        ["--scenario", "vanish-mid-partition", "--vanish-block", "7"],
        ["--scenario", "vanish-mid-partition", "--vanish-block", "30"],
    ])
    func vanishingBoardEndsInOneFailedLine(options: [String]) async throws {
        let directory = try ShortTemporaryDirectory()
        let flash = try builtExecutable("stm32mp-flash")
        let examples = try await makeExamples(in: directory)
        for attempt in 1...3 {
            let result = try await run(
                try builtExecutable("stm32mp-board-emulator"),
                ["--soc", "mp15"] + options + [
                    "--", flash, "flash", "--json", "--wait-timeout", "5", "--late-grace", "1",
                    examples + "/mp15-sdcard.tsv",
                ], in: directory, timeout: 120)
            let context =
                "attempt \(attempt) \(options): status \(result.status)\n\(result.stdout)\n\(result.stderr.suffix(2000))"
            #expect(result.status == 1, "\(context)")
            #expect(!result.stderr.contains("Assertion"), "\(context)")
            let finals = result.lines.filter { $0.contains(#""event":"done""#) || $0.contains(#""event":"failed""#) }
            #expect(finals.count == 1, "\(context)")
            #expect(result.lines.last?.contains(#""event":"failed""#) == true, "\(context)")
        }
    }
}
