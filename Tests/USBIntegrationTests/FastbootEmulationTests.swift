import Foundation
import Testing

/// `flash --transport fastboot` through the emulator: the built binary, real libusb bulk
/// transfers (USBDEVFS_SUBMITURB/REAPURB of bulk URBs answered by the emulated fastboot gadget),
/// libudev following the board from DFU to 0483:0afb. A 128 KiB `max-download-size` makes every
/// file above 128 KiB go in several sparse pieces (eMMC boot partitions are written raw: one piece).
@Suite(.serialized, .timeLimit(.minutes(10)))
struct FastbootEmulationTests {
    /// Runs the flash under the emulator; `mmcdev` is U-Boot's compile-time fastboot device.
    static func flash(
        _ layout: String, soc: String, mmcdev: Int, scenario: String? = nil, transport: String = "fastboot",
        json: Bool = false, in directory: ShortTemporaryDirectory
    ) async throws -> (result: ProcessResult, storage: String) {
        let storage = directory.file("storage")
        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
        var options = [
            "--soc", soc, "--storage", storage, "--stats", "--fastboot-mmcdev", String(mmcdev),
            "--fastboot-max-download", "131072", "--transition-ms", "200",
        ]
        if let scenario { options += ["--scenario", scenario] }
        // Long waits: they only stop a hung run. The defaults (TF-A within 5 s of the ROM's
        // DETACH, the ROM back within 30 s of the USB reset) are guesses a loaded CI host can miss.
        var command = [
            try builtExecutable("stm32mp-flash"), "flash", "--transport", transport, "--wait-timeout", "120",
            "--tfa-timeout", "120", "--uboot-timeout", "120", "--reenumeration-timeout", "120",
        ]
        if json { command.append("--json") }
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"), options + ["--"] + command + [layout], in: directory,
            timeout: 300)
        return (result, storage)
    }

    /// The emulator's `--stats` counters.
    static func counter(_ name: String, in stderr: String) -> Int? {
        guard let range = stderr.range(of: name + "=") else { return nil }
        return Int(stderr[range.upperBound...].prefix { $0.isNumber })
    }

    @Test(
        "every example layout: byte-exact over bulk transfers, with the GPT U-Boot writes",
        arguments: ["mp15-sdcard", "mp15-emmc", "mp13-sdcard", "mp25-sdcard"])
    func everyExampleFlashesOverFastboot(layout: String) async throws {
        let directory = try ShortTemporaryDirectory()
        let examples = try await makeExamples(in: directory)
        let soc = String(layout.prefix(4))
        let device = layout.hasSuffix("emmc") ? "mmc1" : "mmc0"
        let (result, storage) = try await Self.flash(
            examples + "/\(layout).tsv", soc: soc, mmcdev: device == "mmc1" ? 1 : 0, in: directory)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr.suffix(4000))")
        #expect(result.stderr.contains("board reports END"))
        // The partitions went over bulk endpoints, most of them in several sparse pieces.
        #expect(result.stderr.contains("sparse pieces"), "\(result.stderr.suffix(3000))")
        let bulkURBs = try #require(Self.counter("bulk URBs", in: result.stderr), "\(result.stderr.suffix(2000))")
        let bulkBytes = try #require(Self.counter("bulk OUT bytes", in: result.stderr))
        #expect(bulkURBs > 40)
        #expect(bulkBytes > 256 << 10)
        // --verify sampled (the default): U-Boot's CRC stage after `continue`, a second fastboot
        // session, every flashed partition compared before the reboot.
        #expect(result.stderr.contains("computes their CRC-32"), "\(result.stderr.suffix(3000))")
        #expect(result.stderr.contains("(sampled): equal to the Binary"), "\(result.stderr.suffix(3000))")
        for line in result.stderr.split(separator: "\n") where line.hasPrefix("[emulator] exit") {
            print("[figure] fastboot \(layout): \(line)")
        }
        try await expectStorageMatchesPlan(
            examples + "/\(layout).tsv", storage: storage, device: device, lastToUsableEnd: true, in: directory)
    }

    /// The variants end with their diagnosis (JSON `failed` code) or, for U-Boot without fastboot,
    /// the documented fallback: the script's `stm32prog usb 0` brings DFU back and the run goes
    /// on over DFU to the same byte-exact result.
    @Test(
        "variants under the emulator",
        arguments: [
            ("script-rejected", "script-rejected"), ("fastboot-other-mmc", "storage-mismatch"),
            ("no-fastboot", nil), ("stores-wrong-bytes", "verify-mismatch"),
        ] as [(String, String?)])
    func variant(scenario: String, expected: String?) async throws {
        let directory = try ShortTemporaryDirectory()
        let examples = try await makeExamples(in: directory)
        let layout = examples + "/mp15-sdcard.tsv"
        let (result, storage) = try await Self.flash(
            layout, soc: "mp15", mmcdev: 0, scenario: scenario, json: true, in: directory)
        let last = try #require(result.lines.last, "\(result.stderr.suffix(3000))")
        let event = try JSONDecoder().decode(FinalEvent.self, from: Data(last.utf8))
        if let expected {
            #expect(result.status == 1)
            #expect(event.event == "failed")
            #expect(event.code == expected, "\(last)")
            if scenario == "fastboot-other-mmc" {
                // Refused at the probe: nothing was written, not even the GPT.
                let table = try await run("sfdisk", ["--dump", storage + "/mmc0.img"], in: directory)
                #expect(table.status != 0 || !table.stdout.contains("name="), "\(table.stdout)")
            }
        } else {
            #expect(result.status == 0, "\(result.stderr.suffix(3000))")
            #expect(event.event == "done", "\(last)")
            #expect(result.stdout.contains("continuing over DFU"), "\(result.stdout.suffix(3000))")
            #expect(Self.counter("bulk URBs", in: result.stderr) == 0)
            try await expectStorageMatchesPlan(layout, storage: storage, device: "mmc0", in: directory)
        }
    }

    /// `auto` when U-Boot rejects the script: DFU_DETACH, `libusb_reset_device` (USBDEVFS_RESET),
    /// U-Boot resets the board, the ROM comes back and the whole run goes over DFU, with one line.
    @Test func autoResetsOverUSBAfterARejectedScript() async throws {
        let directory = try ShortTemporaryDirectory()
        let examples = try await makeExamples(in: directory)
        let layout = examples + "/mp15-sdcard.tsv"
        let (result, storage) = try await Self.flash(
            layout, soc: "mp15", mmcdev: 0, scenario: "script-rejected", transport: "auto", in: directory)
        #expect(result.status == 0, "\(result.stderr.suffix(3000))")
        let said = result.stderr.split(separator: "\n").filter {
            $0.contains("reset the board over USB; flashing over DFU from the ROM")
        }
        #expect(said.count == 1, "\(result.stderr.suffix(3000))")
        #expect(result.stderr.components(separatedBy: "ROM code on 1-1").count == 3, "the ROM twice")
        try await expectStorageMatchesPlan(layout, storage: storage, device: "mmc0", in: directory)
    }
}

/// The last JSON line of a run.
private struct FinalEvent: Decodable {
    var event: String
    var code: String?
}
