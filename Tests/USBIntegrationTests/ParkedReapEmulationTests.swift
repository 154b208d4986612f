import Foundation
import TestSupport
import Testing

/// The emulator parks a USBDEVFS_REAPURBNDELAY that finds nothing (docs/emulator.md, "Parked
/// reaps"): libusb's event thread then sleeps in its ioctl, as in `poll()` on real usbfs, instead
/// of spinning on umockdev's always-ready device node. dfu-util is the client: a libusb program
/// that is not ours.
@Suite(.timeLimit(.minutes(5))) struct ParkedReapEmulationTests {
    /// Every GETSTATUS after a DNLOAD block answers 100 ms late: dfu-util's reaps for it park
    /// (nothing else is ready) and get the URB when it finishes; the download arrives whole.
    /// `--no-park-reaps` answers EAGAIN at once (the old busy-poll) and parks nothing.
    @Test(arguments: [true, false])
    func heldAnswerIsWaitedForInAParkedReap(parking: Bool) async throws {
        let directory = try ShortTemporaryDirectory()
        let image = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let imagePath = directory.file("image.bin")
        try Data(image).write(to: URL(fileURLWithPath: imagePath))
        let storage = directory.file("storage")
        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
        let result = try await runUnderEmulator(
            ["dfu-util", "-a", "0", "-D", imagePath],
            options: ["--storage", storage, "--download-latency-ms", "100", "--stats"]
                + (parking ? [] : ["--no-park-reaps"]),
            in: directory, timeout: 120)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let stored = try Data(contentsOf: URL(fileURLWithPath: storage + "/fixed-dfu-alt0.bin"))
        #expect(Array(stored) == image)
        let parked = try #require(Self.counter("reaps parked", in: result.stderr), "\(result.stderr)")
        if parking {
            // Three blocks, each GETSTATUS held: at least one reap waited for each.
            #expect(parked >= 3, "\(result.stderr)")
        } else {
            #expect(parked == 0, "\(result.stderr)")
        }
    }

    /// A client killed while its reap is parked (its GETSTATUS is held for 10 minutes) leaves the
    /// emulator serving: the next client lists the device, and the emulator exits cleanly. (umockdev
    /// 0.17.16 logs "Destroying IoctlClient with open stream!" for the dead client: it closes a
    /// client's stream only when reading its next request.)
    @Test func clientKilledWhileItsReapIsParkedLeavesTheEmulatorServing() async throws {
        let directory = try ShortTemporaryDirectory()
        let imagePath = directory.file("image.bin")
        try Data(repeating: 0x5A, count: 3000).write(to: URL(fileURLWithPath: imagePath))
        let emulator = try await ServingEmulator(
            options: ["--download-latency-ms", "600000", "--trace", "--stats"], in: directory)
        let dfuUtil = try start(
            "dfu-util", ["-a", "0", "-D", imagePath], environment: emulator.environment, in: directory)
        // The trace says when a reap parked: dfu-util's thread is then asleep in it.
        await waitUntil(timeout: 120) {
            emulator.child.stderrSoFar.contains("REAPURBNDELAY parked") || !dfuUtil.process.isRunning
        }
        try #require(dfuUtil.process.isRunning, "dfu-util ended early: \(dfuUtil.stderrSoFar)")
        kill(dfuUtil.process.processIdentifier, SIGKILL)
        dfuUtil.process.waitUntilExit()

        let list = try await run("dfu-util", ["-l"], environment: emulator.environment, in: directory)
        #expect(list.status == 0, "\(list.stderr)")
        #expect(list.lines.contains { $0.hasPrefix("Found DFU: [0483:df11]") }, "\(list.stdout)")
        let stopped = try await emulator.stop()
        #expect(stopped.reason == .exit, "\(stopped.stderr)")
        #expect((Self.counter("reaps parked", in: stopped.stderr) ?? 0) > 0, "\(stopped.stderr)")
    }

    /// The value of `name=N` on the emulator's `--stats` line.
    static func counter(_ name: String, in stderr: String) -> Int? {
        guard let range = stderr.range(of: name + "=") else { return nil }
        return Int(stderr[range.upperBound...].prefix { $0.isNumber })
    }
}
