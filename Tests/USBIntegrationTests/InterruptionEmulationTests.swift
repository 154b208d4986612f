import Foundation
import TestSupport
import Testing

/// Issue 8 item 7: signals, `kill -9` then a rerun, resume, a board that stores wrong bytes and a
/// Binary changed during the flash, with the built `stm32mp-flash` as the test's own child process
/// (so it gets real signals from `kill`) against the virtual board the emulator serves in the
/// background over real libusb and libudev.
///
/// Nothing here waits a fixed time. The emulator holds the board at a chosen data block of a
/// phase (`--pause-at`); the test acts once that block has arrived and the run's JSON stream shows
/// the phase, then lets the board go on. So the signal always lands in the middle of the phase,
/// however loaded the machine is. The waits have large limits that only stop a hung run.
@Suite(.timeLimit(.minutes(15)), .serialized)
struct InterruptionEmulationTests {
    /// SIGINT (or SIGTERM) in the ROM stage (FSBL), the TF-A stage (FIP) and a U-Boot partition:
    /// exit 130 (143), exactly one final `failed` line with code `cancelled`, a `stopped` event that
    /// says where the board was left and the command that continues, never `end` or `done`.
    /// In the ROM and TF-A the same command then completes; `romKeepsFSBL`: the emulated ROM keeps
    /// the part of the FSBL it received after DFU_ABORT (UNCONFIRMED which a real ROM does).
    @Test(arguments: [
        ("rom", "0x01", SIGINT, false), ("rom", "0x01", SIGINT, true), ("tfa", "0x03", SIGINT, false),
        ("uboot", "0x11", SIGINT, false), ("uboot", "0x11", SIGTERM, false),
    ])
    func signalInTheMiddleOfAStageCancelsTheRun(stage: String, phase: String, signal: Int32, romKeepsFSBL: Bool)
        async throws
    {
        let board = try await HeldBoard(
            pauseAt: "\(phase):8", emulatorOptions: romKeepsFSBL ? ["--rom-keeps-fsbl-after-abort"] : [])
        let run = try board.flash()
        try await board.waitUntilHeld(run, phase: phase)
        run.signal(signal)
        board.release()
        let outcome = try await run.finish()
        let stopped = try outcome.expectCancelled(status: 128 + signal)
        #expect(stopped.stage == stage && stopped.phase == phase, "\(outcome.output)")
        let offset = try #require(stopped.offset)
        let total = try #require(stopped.total)
        #expect(offset > 0 && offset < total, "stopped inside the phase: \(outcome.output)")
        #expect(stopped.port == "1-1")
        #expect(stopped.command == board.continueCommand, "\(outcome.output)")
        let message = try #require(stopped.message)
        #expect(message.hasPrefix("Board left in "), "\(message)")
        #expect(message.contains(", phase \(phase) ") && message.contains("at byte \(Int64(offset)) of"), "\(message)")
        #expect(message.hasSuffix("Continue with: " + board.continueCommand), "\(message)")
        let steps = try #require(outcome.events.last { $0.event == "diagnosis" }?.nextSteps, "\(outcome.output)")
        #expect(steps.first?.hasPrefix("Run the same command again") == true, "\(steps)")
        if stage == "rom" {
            // The ROM asks for the FSBL again; one that kept the first part refuses the torn copy
            // once and the run sends it again.
            let rerun = try await board.flash().finish()
            try rerun.expectDone()
            let again = rerun.events.contains { $0.event == "message" && $0.text?.contains("once more") == true }
            #expect(again == romKeepsFSBL, "\(rerun.output)")
            try await board.expectStorageHoldsTheLayout()
        }
        if stage == "tfa" {
            // TF-A kept the part of the FIP it received and its write address only moves forward:
            // the same command continues the FIP from the byte GetPhase shows, and completes.
            let rerun = try await board.flash().finish()
            try rerun.expectDone()
            let resume = try #require(rerun.events.first { $0.event == "resume" }, "\(rerun.output)")
            #expect(resume.restartPhase == "0x03", "\(rerun.output)")
            // TF-A holds at least what the run counted, plus the block in flight when the signal
            // came (its transfer completed; the run stopped before counting it).
            let held = try #require(resume.restartOffset, "\(rerun.output)")
            #expect(held >= offset && held <= offset + 1024, "held \(held), stopped at \(offset)")
            try await board.expectStorageHoldsTheLayout()
        }
        guard stage == "uboot" else { return }
        // In U-Boot the cancelled run left the board usable: the same command continues (the
        // partitions before the interrupted one verify and are skipped) and completes.
        let rerun = try await board.flash().finish()
        try rerun.expectDone()
        let resume = try #require(rerun.events.first { $0.event == "resume" }, "\(rerun.output)")
        #expect(resume.restartPhase == phase, "\(rerun.output)")
        #expect(resume.skipped == ["0x04", "0x05", "0x06", "0x07", "0x08", "0x10"], "\(rerun.output)")
        try await board.expectStorageHoldsTheLayout()
    }

    /// A TF-A built with another `DWL_BUFFER_BASE` (the emulator's `--tfa-buffer-base`): SIGINT in
    /// the FIP; the `stopped` command names the buffer TF-A showed. The command without it cannot
    /// place TF-A's write address: `other-session`, nothing sent, naming the option. The `stopped`
    /// command continues the FIP and completes.
    @Test func signalInTheFIPOfATFAWithACustomBufferBase() async throws {
        let board = try await HeldBoard(pauseAt: "0x03:8", emulatorOptions: ["--tfa-buffer-base", "0xD0000000"])
        let run = try board.flash()
        try await board.waitUntilHeld(run, phase: "0x03")
        run.signal(SIGINT)
        board.release()
        let outcome = try await run.finish()
        let stopped = try outcome.expectCancelled(status: 130)
        #expect(stopped.stage == "tfa" && stopped.phase == "0x03", "\(outcome.output)")
        let command = (["stm32mp-flash"] + board.arguments + ["--tfa-buffer-base", "0xD0000000", "--port", "1-1"])
            .joined(separator: " ")
        #expect(stopped.command == command, "\(outcome.output)")

        let without = try await board.flash().finish()
        let failed = try without.expectFailed(code: "other-session")
        #expect(failed.error?.contains("Run again with --tfa-buffer-base") == true, "\(without.output)")
        #expect(!without.events.contains { $0.event == "phase-start" && $0.phase == "0x03" }, "\(without.output)")

        let rerun = try await board.flash(["--tfa-buffer-base", "0xD0000000"]).finish()
        try rerun.expectDone()
        let resume = try #require(rerun.events.first { $0.event == "resume" }, "\(rerun.output)")
        #expect(resume.restartPhase == "0x03", "\(rerun.output)")
        try await board.expectStorageHoldsTheLayout()
    }

    /// A second SIGINT exits at once, without the cleanup, and still prints where the board was
    /// left. U-Boot then holds a half-done transaction (its next block number is not 0): the rerun
    /// must put it back in order (`recovered`) and complete, without a board reset.
    @Test func secondSIGINTExitsAtOnceAndTheRerunRecoversTheBoard() async throws {
        let board = try await HeldBoard(pauseAt: "0x11:8")
        let run = try board.flash()
        try await board.waitUntilHeld(run, phase: "0x11")
        // The board is held, so the run cannot end by itself: the first SIGINT cancels it (it
        // waits for the held transfer), a later one ends it at once. Repeat until it has exited,
        // as signals that arrive together may be merged into one.
        let deadline = Date().addingTimeInterval(300)
        while run.child.process.isRunning && Date() < deadline {
            run.signal(SIGINT)
            try await Task.sleep(for: .milliseconds(20))
        }
        let outcome = try await run.finish()
        board.release()
        let stopped = try outcome.expectCancelled(status: 130)
        #expect(stopped.stage == "uboot" && stopped.phase == "0x11" && stopped.name == "rootfs", "\(outcome.output)")
        let failed = try #require(outcome.events.last)
        #expect(failed.error == "cancelled (second signal: exit at once)", "\(outcome.output)")

        let rerun = try await board.flash().finish()
        try rerun.expectDone()
        #expect(rerun.events.contains { $0.event == "recovered" }, "\(rerun.output)")
        #expect(rerun.events.first { $0.event == "resume" }?.restartPhase == "0x11", "\(rerun.output)")
        try await board.expectStorageHoldsTheLayout()
    }

    /// `kill -9` in the middle of a 6 MiB rootfs, then the same command again: the board (still
    /// in U-Boot, with a half-done transaction) is recovered without a reset, the partitions before
    /// rootfs are skipped after their readback matched, rootfs restarts at the last whole U-Boot
    /// buffer that verifies, far fewer bytes go out than in a full run, and the card is byte-exact.
    @Test func killNineMidPartitionThenTheRerunResumesAndCompletes() async throws {
        let directory = try ShortTemporaryDirectory()
        let examples = try await makeExamples(in: directory)
        // Bytes a blank card does not already hold (an example ext4 image is mostly zeros).
        let rootfs = examples + "/mp15-sdcard/rootfs.ext4"
        var generator = SystemRandomNumberGenerator()
        try Data((0..<(6 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }).write(
            to: URL(fileURLWithPath: rootfs))
        // U-Boot writes in 1 MiB buffers; block 1200 (of 1536) is 4.7 MiB into rootfs.
        let board = try await HeldBoard(
            pauseAt: "0x11:1200", emulatorOptions: ["--uboot-buffer-mib", "1"],
            flashOptions: ["--uboot-buffer-mib", "1"],
            directory: directory, examples: examples)
        let run = try board.flash()
        try await board.waitUntilHeld(run, phase: "0x11")
        run.signal(SIGKILL)
        let killed = try await run.finish()
        board.release()
        #expect(killed.result.status == SIGKILL && killed.result.reason == .uncaughtSignal)
        #expect(!killed.events.contains { $0.event == "done" || $0.event == "failed" })

        let rerun = try await board.flash().finish()
        try rerun.expectDone()
        let recovered = try #require(rerun.events.first { $0.event == "recovered" }, "\(rerun.output)")
        #expect(recovered.detail?.contains("0x11") == true, "\(recovered.detail ?? "")")
        let resume = try #require(rerun.events.first { $0.event == "resume" }, "\(rerun.output)")
        #expect(resume.skipped == ["0x04", "0x05", "0x06", "0x07", "0x08", "0x10"], "\(rerun.output)")
        #expect(resume.restartPhase == "0x11")
        let restart = Int64(try #require(resume.restartOffset))
        #expect(restart > 0 && restart % (1 << 20) == 0 && restart <= 1200 * 4096, "\(restart)")
        // The rerun sent the rest of rootfs and what follows it, nothing before.
        let sent = rerun.events.filter { $0.event == "phase-done" }
        #expect(sent.map(\.phase) == ["0x11", "0x12"], "\(rerun.output)")
        #expect(sent.first.flatMap(\.bytes).map(Int64.init) == (6 << 20) - restart)
        let sentBytes = sent.compactMap(\.bytes).reduce(0, +)
        let fullRun = try board.bytesOfAFullRun()
        #expect(sentBytes < fullRun, "the rerun sent \(sentBytes) bytes, a full run sends \(fullRun)")
        print("[figure] resume after kill -9 at 4.7 of 6 MiB rootfs: sent \(Int(sentBytes)) of \(Int(fullRun)) bytes")
        try await board.expectStorageHoldsTheLayout()
    }

    /// `stores-wrong-bytes`: every DFU request succeeds, but U-Boot's storage keeps a wrong byte every
    /// 64 KiB. The default sampled readback catches it: `verify-mismatch` naming the partition, never
    /// `done`.
    @Test func boardThatStoresWrongBytesFailsVerifyMismatch() async throws {
        let board = try await HeldBoard(pauseAt: nil, emulatorOptions: ["--scenario", "stores-wrong-bytes"])
        let outcome = try await board.flash().finish()
        let failed = try outcome.expectFailed(code: "verify-mismatch")
        #expect(failed.stage == "uboot" && failed.phase == "0x10", "\(outcome.output)")
        #expect(failed.error?.contains("bootfs") == true, "\(outcome.output)")
        #expect(!outcome.events.contains { $0.event == "verified" && $0.phase == "0x10" })
    }

    /// The bootfs Binary is rewritten while the board holds its 8th block: `file-changed`, never
    /// `done`.
    @Test func binaryRewrittenDuringTheFlashFailsFileChanged() async throws {
        let board = try await HeldBoard(pauseAt: "0x10:8")
        let run = try board.flash()
        try await board.waitUntilHeld(run, phase: "0x10")
        let bootfs = board.examples + "/mp15-sdcard/bootfs.ext4"
        var data = try Data(contentsOf: URL(fileURLWithPath: bootfs))
        data[data.count - 1] ^= 0xFF
        try data.write(to: URL(fileURLWithPath: bootfs))
        board.release()
        let outcome = try await run.finish()
        let failed = try outcome.expectFailed(code: "file-changed")
        #expect(failed.error?.contains(bootfs) == true, "\(outcome.output)")
    }
}

/// The MP15 SD-card example served by an emulator in the background (real time, with short stage
/// transitions), optionally held once at `pauseAt` (`PHASE:BLOCK`).
private final class HeldBoard: Sendable {
    let directory: ShortTemporaryDirectory
    let examples: String
    let storage: String
    let pauseFile: String
    let emulator: ServingEmulator
    let arguments: [String]

    init(
        pauseAt: String?, emulatorOptions: [String] = [], flashOptions: [String] = [],
        directory: ShortTemporaryDirectory? = nil, examples: String? = nil
    ) async throws {
        let directory = try directory ?? ShortTemporaryDirectory()
        self.directory = directory
        var made = examples ?? ""
        if examples == nil { made = try await makeExamples(in: directory) }
        self.examples = made
        let storage = directory.file("storage")
        self.storage = storage
        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
        let pauseFile = directory.file("held")
        self.pauseFile = pauseFile
        var options = ["--soc", "mp15", "--storage", storage, "--transition-ms", "200"] + emulatorOptions
        if let pauseAt { options += ["--pause-at", pauseAt, "--pause-file", pauseFile] }
        emulator = try await ServingEmulator(fixedDFU: false, options: options, in: directory)
        // Long waits: they only matter when something hangs, never for the outcome.
        arguments =
            ["flash", "--json", "--wait-timeout", "120", "--tfa-timeout", "120", "--uboot-timeout", "120"]
            + flashOptions + [made + "/mp15-sdcard.tsv"]
    }

    deinit {
        unlink(pauseFile)
        emulator.child.process.terminate()
        emulator.child.process.waitUntilExit()
    }

    /// What the `stopped` event says continues: this command, pinned to the board's port.
    var continueCommand: String { (["stm32mp-flash"] + arguments + ["--port", "1-1"]).joined(separator: " ") }

    func flash(_ extra: [String] = []) throws -> FlashProcess {
        FlashProcess(
            child: try start(
                try builtExecutable("stm32mp-flash"), arguments + extra, environment: emulator.environment,
                in: directory))
    }

    /// Until the board is held at its pause point and the run's JSON has started that phase.
    func waitUntilHeld(_ run: FlashProcess, phase: String) async throws {
        await waitUntil(timeout: 300) {
            (FileManager.default.fileExists(atPath: pauseFile)
                && run.events.contains { $0.event == "phase-start" && $0.phase == phase })
                || !run.child.process.isRunning
        }
        try #require(
            run.child.process.isRunning, "the run ended before the board was held: \(run.child.stdoutSoFar)")
    }

    /// Lets the held board go on.
    func release() { unlink(pauseFile) }

    /// Bytes a run from the ROM on sends: every Binary of the layout.
    func bytesOfAFullRun() throws -> Double {
        let layout = try String(contentsOfFile: examples + "/mp15-sdcard.tsv", encoding: .utf8)
        var total = 0.0
        for line in layout.split(separator: "\n") where !line.hasPrefix("#") {
            let binary = line.split(separator: "\t").last.map(String.init) ?? "none"
            guard binary != "none" else { continue }
            let size = try FileManager.default.attributesOfItem(atPath: examples + "/" + binary)[.size] as? Int
            total += Double(size ?? 0)
        }
        return total
    }

    func expectStorageHoldsTheLayout() async throws {
        try await expectStorageMatchesPlan(
            examples + "/mp15-sdcard.tsv", storage: storage, device: "mmc0", in: directory)
    }
}

/// A running `stm32mp-flash flash --json` and the events it has written so far.
private final class FlashProcess: Sendable {
    let child: ChildProcess

    init(child: ChildProcess) { self.child = child }

    /// Complete lines only (a line is written and flushed whole).
    var events: [FlashLine] {
        let text = child.stdoutSoFar
        return text.split(separator: "\n", omittingEmptySubsequences: true).dropLast(text.hasSuffix("\n") ? 0 : 1)
            .compactMap { try? JSONDecoder().decode(FlashLine.self, from: Data($0.utf8)) }
    }

    func signal(_ number: Int32) { kill(child.process.processIdentifier, number) }

    func finish() async throws -> FlashOutcome {
        let result = try await child.wait(timeout: 300)
        return FlashOutcome(
            result: result,
            events: try result.lines.map { try JSONDecoder().decode(FlashLine.self, from: Data($0.utf8)) })
    }
}

private struct FlashOutcome {
    var result: ProcessResult
    var events: [FlashLine]

    var output: String { "status \(result.status)\n" + result.stdout + "\n" + result.stderr.suffix(3000) }

    /// Exit `status`, a `stopped` event, then `diagnosis` and exactly one `failed` (code
    /// `cancelled`) as the last line; no `end`, no `done`.
    func expectCancelled(status: Int32) throws -> FlashLine {
        #expect(result.status == status, "\(output)")
        #expect(result.reason == .exit, "\(output)")
        #expect(!events.contains { $0.event == "done" || $0.event == "end" }, "\(output)")
        #expect(events.filter { $0.event == "failed" }.count == 1, "\(output)")
        let last = try #require(events.last, "\(output)")
        #expect(last.event == "failed" && last.code == "cancelled", "\(output)")
        #expect(events.filter { $0.event == "stopped" }.count == 1, "\(output)")
        return try #require(events.first { $0.event == "stopped" }, "\(output)")
    }

    /// Exit 1 and exactly one `failed` line with `code`, the last; no `done`.
    func expectFailed(code: String) throws -> FlashLine {
        #expect(result.status == 1, "\(output)")
        #expect(!events.contains { $0.event == "done" || $0.event == "end" }, "\(output)")
        #expect(events.filter { $0.event == "failed" }.count == 1, "\(output)")
        let last = try #require(events.last, "\(output)")
        #expect(last.event == "failed" && last.code == code, "\(output)")
        return last
    }

    /// Exit 0 and `done` as the last line, no `failed`.
    func expectDone() throws {
        #expect(result.status == 0, "\(output)")
        #expect(events.last?.event == "done", "\(output)")
        #expect(!events.contains { $0.event == "failed" }, "\(output)")
    }
}

/// The fields of `flash --json` events these tests read (docs/json.md); numbers as JSON numbers.
private struct FlashLine: Decodable, Sendable {
    var event: String
    var code: String?
    var error: String?
    var stage: String?
    var phase: String?
    var name: String?
    var offset: Double?
    var total: Double?
    var bytes: Double?
    var port: String?
    var command: String?
    var message: String?
    var text: String?
    var detail: String?
    var skipped: [String]?
    var nextSteps: [String]?
    var restartPhase: String?
    var restartOffset: Double?
}
