import BoardTracking
import DFU
import Diagnostics
import FlashEngine
import FlashLayout
import Foundation
import TestSupport
import Testing
import USBModel
import VirtualBoard

/// Cancels the task that emits a matching event (the engine emits from its own task).
func cancelling(when matches: @escaping @Sendable (FlashEvent) -> Bool) -> @Sendable (FlashEvent) -> Void {
    { event in
        if matches(event) { withUnsafeCurrentTask { $0?.cancel() } }
    }
}

/// `sha256sum` of a file (the real tool).
func sha256sum(_ path: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    process.arguments = [path]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    process.waitUntilExit()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    return String(output.prefix { $0 != " " })
}

extension SimulatedFlash {
    /// Every requested partition's Binary is at its planned offset on the board.
    func expectAllWritten() throws {
        for device in plan.devices {
            let storage = try #require(board.storage.device(named: device.target.description))
            let boardPlan = try DevicePlanner.plan(
                LayoutDevice(target: device.target, lines: device.partitions.map(\.line)),
                geometry: DeviceGeometry(
                    size: storage.size, eraseSize: storage.eraseSize, bootPartitionSize: storage.bootPartitionSize)
            ).get()
            for partition in boardPlan.partitions where partition.line.isRequested {
                let file = try #require(plan.files[partition.line.id])
                let expected = Array(try Data(contentsOf: URL(fileURLWithPath: file.path)))
                let written = try readBytes(image(device, partition), offset: partition.offset, length: expected.count)
                #expect(written == expected, "\(partition.line.name) differs on \(device.target)")
            }
        }
    }

    /// Runs in its own task, so that `cancelling(when:)` cancels that run only.
    func runCancellable(
        ubootBuffer: Int64 = 8 << 20, onEvent: @escaping @Sendable (FlashEvent) -> Void
    ) async -> FlashFailure? {
        let task = Task { () async -> FlashFailure? in
            do {
                _ = try await self.run(ubootBuffer: ubootBuffer, onEvent: onEvent)
                return nil
            } catch {
                return error as? FlashFailure
            }
        }
        return await task.value
    }

    /// A run cancelled in the middle of the FIP (phase 0x03), in TF-A.
    func cancelInsideTheFIP() async throws -> FlashFailure {
        let stopped = await runCancellable(
            onEvent: cancelling { event in
                if case .progress(0x03, let sent, let total) = event { return sent > 0 && sent < total }
                return false
            })
        let failure = try #require(stopped)
        #expect(failure.reason == .cancelled)
        return failure
    }

    /// The FIP TF-A's RAM holds (what BL2 loads) is the file, not a torn copy.
    func expectWholeFIPInRAM() throws {
        let fip = try #require(plan.files[0x03]).path
        #expect(board.ramFIP == Array(try Data(contentsOf: URL(fileURLWithPath: fip))), "the FIP in TF-A's RAM is torn")
    }

    /// Bytes sent per phase in the events of the last runs.
    func sentBytes(_ id: UInt8) -> Int64 {
        events.all.reduce(0) { total, event in
            if case .phaseFinished(let result) = event, result.phase == id { return total + result.bytes }
            return total
        }
    }
}

@Suite("readback verification, input integrity, cancellation, recovery and resume on the virtual board")
struct IntegrityTests {
    @Test("sampled readback by default: done lists bytes, SHA-256 and method per partition")
    func sampledByDefault() async throws {
        let rig = try SimulatedFlash(layout: "mp15-sdcard")
        let summary = try await rig.run()
        let partitions = summary.checks.filter { rig.plan.requestOrder.contains($0.phase) }
        #expect(partitions.map(\.phase) == rig.plan.requestOrder)
        for check in partitions {
            let file = try #require(rig.plan.files[check.phase])
            #expect(check.bytes == file.size)
            #expect(check.sha256 == (try sha256sum(file.path)))
            #expect(check.method == .sampled)
            #expect(
                check.bytesRead
                    == ReadbackRanges.ranges(length: file.size, mode: .sampled).reduce(0) {
                        $0 + $1.count
                    })
        }
        // Boot stages sent to the ROM and TF-A cannot be read back.
        #expect(summary.checks.filter { $0.phase < 0x04 }.allSatisfy { $0.method == .notReadable })
        #expect(rig.board.protocolViolations.isEmpty, "\(rig.board.protocolViolations)")
        // U-Boot was put back: no stored offset left, no error on the way.
        #expect(!rig.board.consoleLog.contains { $0.hasPrefix("Error:") })
        try rig.expectAllWritten()
    }

    @Test("full readback compares every byte; none reads nothing back")
    func fullAndNone() async throws {
        let full = try SimulatedFlash(layout: "mp15-emmc")
        let summary = try await full.run(verify: .full)
        for check in summary.checks where full.plan.requestOrder.contains(check.phase) {
            #expect(check.method == .full)
            #expect(check.bytesRead == check.bytes)
        }
        let none = try SimulatedFlash(layout: "mp15-emmc")
        let unverified = try await none.run(verify: .none)
        #expect(unverified.checks.allSatisfy { $0.method == .none || $0.method == .notReadable })
        let partitionReads = none.board.trace.filter {
            $0.isDFU(DFURequest.upload) && $0.stage == .uboot && $0.dataLength > 10
        }
        #expect(partitionReads.isEmpty)
    }

    @Test("a board that stores wrong bytes fails verify-mismatch naming partition, offset and both hashes; never END")
    func storesWrongBytes() async throws {
        let rig = try SimulatedFlash(layout: "mp15-sdcard", fault: .storesWrongBytes)
        do {
            _ = try await rig.run()
            Issue.record("a board that stores wrong bytes must not flash successfully")
        } catch {
            guard case .verifyMismatch(let mismatch) = error.reason else {
                Issue.record("expected verify-mismatch, got \(error)")
                return
            }
            #expect(mismatch.phase == 0x10)
            #expect(mismatch.name == "bootfs")
            #expect(mismatch.offset == 0)
            #expect(mismatch.expectedSHA256 != mismatch.actualSHA256)
            #expect(mismatch.expectedSHA256.count == 64)
            #expect(!rig.events.all.contains(.end))
        }
    }

    @Test(
        "SIGINT/SIGTERM cancel in every stage and wait: cancelled, position named, never END",
        arguments: ["rom", "tfa", "layout", "partition", "wait"])
    func cancelEverywhere(_ stage: String) async throws {
        let rig = try SimulatedFlash(layout: "mp13-sdcard")
        let matches: @Sendable (FlashEvent) -> Bool = { event in
            switch (stage, event) {
            case ("rom", .progress(0x01, let sent, let total)): sent < total
            case ("tfa", .progress(0x03, let sent, let total)): sent < total
            case ("layout", .phaseStarted(0x00, _, _, _)): true
            case ("partition", .progress(0x11, let sent, let total)): sent > 0 && sent < total
            case ("wait", .detached(.tfa, _, _)): true
            default: false
            }
        }
        if let error = await rig.runCancellable(onEvent: cancelling(when: matches)) {
            #expect(error.reason == .cancelled, "\(error)")
            #expect(!rig.events.all.contains(.end))
            let position = try #require(error.position)
            switch stage {
            case "rom": #expect(position.stage == .rom && position.phase == 0x01)
            case "tfa": #expect(position.stage == .tfa && position.phase == 0x03)
            case "layout": #expect(position.stage == .uboot && position.phase == 0x00)
            case "partition":
                #expect(position.stage == .uboot && position.phase == 0x11 && position.name == "rootfs")
                #expect(position.offset > 0 && position.offset < (position.total ?? 0))
            default: #expect(position.phase == nil)
            }
        } else {
            Issue.record("a cancelled run must not succeed")
        }
        guard stage == "partition" else { return }
        // The cancel left U-Boot usable: phase 0x11 at offset 0, no error, no open transfer —
        // and the same command continues and completes.
        let summary = try await rig.run()
        #expect(summary.resume?.skipped == [0x04, 0x05, 0x06, 0x07, 0x08, 0x10])
        #expect(summary.resume?.restartPhase == 0x11)
        #expect(rig.board.consoleLog.filter { $0.hasPrefix("Error:") }.isEmpty)
        try rig.expectAllWritten()
    }

    @Test(
        "a cancel in the middle of TF-A's FIP sends DFU_ABORT and no DETACH; TF-A keeps its write address, and the same command continues the FIP from there",
        arguments: [("mp13-sdcard", UInt32(0xC700_0000)), ("mp25-sdcard", UInt32(0x8700_0000))])
    func cancelInTheMiddleOfTheFIP(layout: String, buffer: UInt32) async throws {
        let rig = try SimulatedFlash(layout: layout)
        let failure = try await rig.cancelInsideTheFIP()
        let cleanups = failure.timeline.filter { if case .leftUsable = $0.event { true } else { false } }
        #expect(cleanups.map(\.event) == [.leftUsable(phase: 0x03, stage: .tfa, cleanup: .aborted, error: nil)])
        let fipStart = try #require(
            failure.timeline.firstIndex { if case .sendStarted(0x03, _, _, _) = $0.event { true } else { false } })
        let detaches = failure.timeline[fipStart...].filter {
            if case .detachSent(.tfa, _) = $0.event { true } else { false }
        }
        #expect(detaches.isEmpty, "no DETACH: TF-A would boot the partial FIP")
        let position = try #require(failure.position)
        #expect(position.offset > 0)
        // TF-A is idle again and tells where it would write next: past the part it received. The
        // rerun continues from there instead of appending a second FIP (which BL2 would load torn).
        let summary = try await rig.run()
        let phases = summary.timeline.compactMap { entry -> GetPhaseReply? in
            if case .phase(let reply, .tfa) = entry.event { reply } else { nil }
        }
        let first = try #require(phases.first)
        #expect(first.phase == 0x03 && first.address == buffer &+ UInt32(position.offset), "\(first)")
        #expect(summary.resume?.restartPhase == 0x03 && summary.resume?.restartOffset == position.offset)
        try rig.expectWholeFIPInRAM()
        #expect(!rig.board.consoleLog.contains { $0.contains("written across two downloads") })
        try rig.expectAllWritten()
    }

    @Test(
        "a cancel in the middle of the FSBL, then the same command: it completes whether the ROM starts the FSBL over after DFU_ABORT or keeps what it received (UNCONFIRMED)",
        arguments: [false, true])
    func cancelInTheFSBLThenRerun(romKeepsFSBL: Bool) async throws {
        let rig = try SimulatedFlash(layout: "mp13-sdcard") { $0.romKeepsFSBLAfterAbort = romKeepsFSBL }
        let stopped = await rig.runCancellable(
            onEvent: cancelling { event in
                if case .progress(0x01, let sent, let total) = event { return sent > 0 && sent < total }
                return false
            })
        #expect(stopped?.reason == .cancelled)
        #expect(stopped?.position?.stage == .rom && stopped?.position?.phase == 0x01)
        let summary = try await rig.run()
        let fsblSends = summary.timeline.filter {
            if case .sendStarted(0x01, _, _, _) = $0.event { true } else { false }
        }
        // A ROM that kept the first part refuses the rerun's FSBL once (torn); the run sends it again.
        #expect(fsblSends.count == (romKeepsFSBL ? 2 : 1), "\(summary.timeline.map(\.description))")
        try rig.expectAllWritten()
    }

    /// A TF-A built with another `DWL_BUFFER_BASE`: the cancelled run learns the buffer's start from
    /// TF-A's first GetPhase and names it for the command that continues; a rerun that does not know
    /// it sends nothing and says which option continues; with the option the FIP ends whole.
    @Test(
        "a cancel in the FIP of a TF-A with a custom buffer base: the rerun without --tfa-buffer-base says why it cannot continue, with it it completes",
        arguments: [("mp13-sdcard", UInt32(0xD000_0000)), ("mp25-sdcard", UInt32(0x9000_0000))])
    func cancelInTheFIPWithACustomBufferBase(layout: String, base: UInt32) async throws {
        let rig = try SimulatedFlash(layout: layout) { $0.tfaBufferBase = base }
        let failure = try await rig.cancelInsideTheFIP()
        let position = try #require(failure.position)
        #expect(position.phase == 0x03 && position.offset > 0 && position.offset % (1 << 20) != 0)
        #expect(position.tfaBufferBase == base, "the continuing command must name the buffer")

        do {
            _ = try await rig.run()
            Issue.record("continued a FIP without knowing where TF-A's buffer starts")
        } catch {
            guard case .otherSession(let detail) = error.reason else {
                Issue.record("\(error)")
                return
            }
            let at = "0x" + String(base &+ UInt32(position.offset), radix: 16, uppercase: true)
            #expect(detail.contains("write address at \(at)"), "\(detail)")
            #expect(detail.contains("Run again with --tfa-buffer-base"), "\(detail)")
            #expect(Diagnoser.diagnose(Evidence(failure: error)).code == .otherSession)
            let sends = error.timeline.filter { if case .sendStarted(0x03, _, _, _) = $0.event { true } else { false } }
            #expect(sends.isEmpty, "nothing may be sent")
        }

        let summary = try await rig.run(tfaBufferBase: base)
        #expect(summary.resume?.restartPhase == 0x03 && summary.resume?.restartOffset == position.offset)
        try rig.expectWholeFIPInRAM()
        try rig.expectAllWritten()
    }

    @Test(
        "a fresh TF-A with a custom buffer base flashes without the option; on MP2 the option leaves the DDR firmware's buffer alone"
    )
    func customBufferBaseWithoutInterruption() async throws {
        let custom = try SimulatedFlash(layout: "mp13-sdcard") { $0.tfaBufferBase = 0xD000_0000 }
        _ = try await custom.run()
        try custom.expectAllWritten()
        // The option names the FIP buffer only: MP2's DDR firmware keeps SYSRAM.
        let mp2 = try SimulatedFlash(layout: "mp25-sdcard") { $0.tfaBufferBase = 0x9000_0000 }
        _ = try await mp2.run(tfaBufferBase: 0x9000_0000)
        try mp2.expectAllWritten()
    }

    @Test("TF-A holding more of the FIP than the file has (another file was sent) stops at once with other-session")
    func tfaHoldsAnotherFIP() async throws {
        let copy = try ExampleCopy()
        let rig = try SimulatedFlash(layout: "mp13-sdcard", examples: copy.path)
        let fip = try #require(rig.plan.files[0x03]).path
        let original = try Data(contentsOf: URL(fileURLWithPath: fip))
        let stopped = await rig.runCancellable(
            onEvent: cancelling { event in
                if case .progress(0x03, let sent, let total) = event { return sent > 4096 && sent < total }
                return false
            })
        let held = try #require(stopped?.position).offset
        try original.prefix(Int(held) / 2).write(to: URL(fileURLWithPath: fip))
        do {
            _ = try await rig.run()
            Issue.record("a FIP shorter than what TF-A holds must not be sent")
        } catch {
            guard case .otherSession(let detail) = error.reason else {
                Issue.record("\(error)")
                return
            }
            #expect(detail.contains("already holds \(held) bytes of phase 0x03"), "\(detail)")
            #expect(Diagnoser.diagnose(Evidence(failure: error)).code == .otherSession)
            let sends = error.timeline.filter { if case .sendStarted(0x03, _, _, _) = $0.event { true } else { false } }
            #expect(sends.isEmpty, "nothing may be sent")
        }
    }

    @Test("a host that dies mid-partition (no cleanup) leaves a half-open transfer; the rerun recovers and completes")
    func deadHostThenRerun() async throws {
        let copy = try ExampleCopy()
        let rig = try SimulatedFlash(layout: "mp15-sdcard", examples: copy.path)
        let rootfs = try #require(rig.plan.files[0x11]).path
        let original = try Data(contentsOf: URL(fileURLWithPath: rootfs))
        // The Binary shrinks under the transfer: the host gives up without closing anything, as a
        // killed process would.
        do {
            _ = try await rig.run(onEvent: { event in
                if case .progress(0x11, let sent, _) = event, sent > 0 {
                    try? Data(original.prefix(Int(sent))).write(to: URL(fileURLWithPath: rootfs))
                }
            })
            Issue.record("the run must fail")
        } catch {}
        try original.write(to: URL(fileURLWithPath: rootfs))
        let summary = try await rig.run()
        #expect(rig.events.all.contains { if case .recovered = $0 { true } else { false } })
        #expect(summary.resume?.restartPhase == 0x11)
        try rig.expectAllWritten()
        #expect(rig.board.protocolViolations.isEmpty, "\(rig.board.protocolViolations)")
    }

    @Test("resume after an interruption at 90 % of a partition sends only the part after the last whole buffer")
    func resumeAtOffset() async throws {
        // An ext4 image is mostly zeros, which a blank medium already holds: use bytes that differ.
        let copy = try ExampleCopy()
        var generator = SystemRandomNumberGenerator()
        let rootfs = (0..<(3 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try Data(rootfs).write(to: URL(fileURLWithPath: copy.path + "/mp15-sdcard/rootfs.ext4"))
        let rig = try SimulatedFlash(layout: "mp15-sdcard", examples: copy.path) { $0.ubootBufferSize = 64 << 10 }
        let total = try #require(rig.plan.files[0x11]).size
        let stopped = await rig.runCancellable(
            ubootBuffer: 64 << 10,
            onEvent: cancelling { event in
                if case .progress(0x11, let sent, _) = event { return sent >= total * 9 / 10 }
                return false
            })
        #expect(stopped?.reason == .cancelled)
        let before = rig.sentBytes(0x11)
        let summary = try await rig.run(ubootBuffer: 64 << 10)
        let resume = try #require(summary.resume)
        #expect(resume.restartPhase == 0x11)
        #expect(resume.restartOffset > 0 && resume.restartOffset % (64 << 10) == 0)
        #expect(resume.restartOffset >= total * 8 / 10)
        // The rerun sent only the tail of 0x11 and none of the partitions before it.
        #expect(rig.sentBytes(0x11) - before == total - resume.restartOffset)
        #expect(rig.sentBytes(0x10) == (try #require(rig.plan.files[0x10])).size)
        let check = try #require(summary.checks.first { $0.phase == 0x11 })
        #expect(check.sha256 == (try sha256sum(try #require(rig.plan.files[0x11]).path)))
        try rig.expectAllWritten()
    }

    @Test("--no-resume starts from the first partition")
    func noResume() async throws {
        let rig = try SimulatedFlash(layout: "mp15-sdcard")
        let stopped = await rig.runCancellable(
            onEvent: cancelling { event in
                if case .phaseStarted(0x11, _, _, _) = event { return true }
                return false
            })
        #expect(stopped?.reason == .cancelled)
        let summary = try await rig.run(resume: false)
        #expect(summary.resume?.skipped == [])
        #expect(summary.partitions == rig.plan.requestOrder)
        try rig.expectAllWritten()
    }

    @Test("a Binary rewritten during the flash fails file-changed")
    func fileRewritten() async throws {
        let copy = try ExampleCopy()
        let rig = try SimulatedFlash(layout: "mp15-sdcard", examples: copy.path)
        let bootfs = try #require(rig.plan.files[0x10]).path
        do {
            _ = try await rig.run(onEvent: { event in
                if case .progress(0x10, let sent, _) = event, sent > 0 {
                    var data = (try? Data(contentsOf: URL(fileURLWithPath: bootfs))) ?? Data()
                    if !data.isEmpty { data[data.count - 1] ^= 0xFF }
                    try? data.write(to: URL(fileURLWithPath: bootfs))
                }
            })
            Issue.record("a run whose Binary changed must fail")
        } catch {
            guard case .fileChanged(let path, _) = error.reason else {
                Issue.record("expected file-changed, got \(error)")
                return
            }
            #expect(path == bootfs)
            #expect(!rig.events.all.contains(.end))
        }
    }
}

/// A private copy of the example set, for tests that change Binaries.
struct ExampleCopy {
    let directory: TemporaryDirectory
    var path: String { directory.path }

    init() throws {
        directory = try TemporaryDirectory(prefix: "stm32mp-examples-copy")
        let source = try SimulatedFlash.exampleSet.get().path
        for item in try FileManager.default.contentsOfDirectory(atPath: source) {
            try FileManager.default.copyItem(atPath: source + "/" + item, toPath: directory.path + "/" + item)
        }
    }
}
