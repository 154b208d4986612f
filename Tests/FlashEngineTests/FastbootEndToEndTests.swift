import BoardTracking
import Diagnostics
import FlashEngine
import FlashLayout
import Foundation
import TestSupport
import Testing
import UBootScript
import USBModel
import VirtualBoard

@Suite("flash --transport fastboot on the virtual board")
struct FastbootEndToEndTests {
    static let sizes: [String: UInt64] = ["mmc0": 64 << 20, "mmc1": 64 << 20]

    /// The board's fastboot writes the layout's MMC, with a tiny buffer: several sparse pieces.
    static func rig(_ layout: String, fault: FaultScenario = .none, maxDownload: Int = 128 << 10) throws
        -> SimulatedFlash
    {
        try SimulatedFlash(layout: layout, fault: fault, deviceSizes: sizes) { configuration in
            configuration.fastboot.mmcDevice = layout.hasSuffix("emmc") ? 1 : 0
            configuration.fastboot.maxDownloadSize = maxDownload
        }
    }

    @Test(
        "every P partition byte-identical, the GPT U-Boot's gpt write makes, boot partitions last, reboot",
        arguments: ["mp15-sdcard", "mp15-emmc", "mp13-sdcard", "mp25-sdcard"])
    func flash(layout: String) async throws {
        let rig = try Self.rig(layout)
        let summary: FlashSummary
        do {
            summary = try await rig.run(transport: .fastboot)
        } catch {
            Issue.record(
                "\(error) \(rig.board.consoleLog.suffix(8)) \(rig.board.fastbootCommands.suffix(4)) \(error.timeline.suffix(4).map(\.description))"
            )
            return
        }
        #expect(Set(summary.partitions) == Set(rig.plan.requestOrder))
        #expect(rig.board.protocolViolations.isEmpty, "\(rig.board.protocolViolations)")
        #expect(rig.board.consoleLog.contains("U-Boot script received"))
        // Nothing after U-Boot's first enumeration went over DFU: partitions only by fastboot.
        #expect(summary.phases.filter { $0.stage == .uboot }.map(\.name) == ["fastboot hand-off script"])
        #expect(summary.phases.contains { $0.stage == .fastboot })

        let commands = rig.board.fastbootCommands
        #expect(commands.last == "reboot")
        #expect(
            commands.filter { $0.hasPrefix("download:") }.count > commands.filter { $0.hasPrefix("flash:") }.count / 2)
        // Byte-exact, and the GPT stm32prog would write: same names, offsets, sizes, types, GUIDs.
        for device in try rig.checkWrittenAsPlanned() {
            // PED lines without a file are erased by name.
            for partition in device.partitions where partition.line.isDelete && partition.line.binary == nil {
                #expect(commands.contains("erase:\(partition.line.name)"))
            }
            // eMMC boot partitions after every user-area write, each followed by bootbus + partconf.
            if let firstBoot = commands.firstIndex(where: { $0.hasPrefix("flash:\(device.target)boot") }) {
                let lastUser = try #require(
                    commands.lastIndex { $0.hasPrefix("flash:") && !$0.contains("boot0") && !$0.contains("boot1") })
                #expect(lastUser < firstBoot)
                #expect(commands.suffix(from: firstBoot).contains("oem bootbus: 0 0 0"))
                #expect(commands.contains("oem partconf: 1 2"))
                #expect(rig.board.mmcBootSettings[device.target.index]?["partconf"] == ["1", "2", "0"])
            }
        }
        // With the boot pins on USB the ROM comes back after the reboot.
        #expect(rig.board.consoleLog.contains("resetting ..."))
        // --verify sampled (the default): the board's CRC stage ran after `continue`, fastboot came
        // back, and every flashed line was compared through getvar before the reboot.
        let verified = rig.events.all.compactMap { event -> PartitionCheck? in
            if case .verified(let check) = event { check } else { nil }
        }
        let flashed = try FastbootPlan(rig.plan).flashedIDs
        #expect(Set(verified.map(\.phase)) == Set(flashed))
        #expect(verified.allSatisfy { $0.method == .sampled && $0.bytesRead > 0 })
        let resumed = try #require(commands.firstIndex(of: "continue"))
        #expect(commands[resumed...].contains("getvar:vcrc0"))
        #expect(!commands[..<resumed].contains { $0.hasPrefix("getvar:vcrc") })
        #expect(rig.board.consoleLog.contains { $0.hasPrefix("crc32 for ") })
        #expect(summary.checks.filter { flashed.contains($0.phase) }.allSatisfy { $0.method == .sampled })
    }

    @Test("--verify over fastboot: a board that keeps wrong bytes ends in verify-mismatch, found by U-Boot's CRC")
    func wrongBytesAreFound() async throws {
        let rig = try Self.rig("mp15-sdcard", fault: .storesWrongBytes)
        do {
            _ = try await rig.run(verify: .full, transport: .fastboot)
            Issue.record("stores-wrong-bytes must not end in done")
        } catch {
            let diagnosis = Diagnoser.diagnose(Evidence(failure: error, consoleLog: rig.board.consoleLog))
            #expect(diagnosis.code == .verifyMismatch, "\(error)")
            #expect(
                diagnosis.evidence.contains { $0.hasPrefix("CRC-32 (computed by U-Boot)") }, "\(diagnosis.evidence)")
            guard case .verifyMismatch(let mismatch) = error.reason else {
                Issue.record("\(error.reason)")
                return
            }
            #expect(mismatch.expectedSHA256 != mismatch.actualSHA256)
            #expect(mismatch.length != nil)
            // Every flash answered OKAY: only the readback told, and the board was not rebooted.
            let commands = rig.board.fastbootCommands
            let resumed = try #require(commands.firstIndex(of: "continue"))
            #expect(commands[..<resumed].contains { $0.hasPrefix("flash:") })
            #expect(!commands.contains("reboot"))
            #expect(!rig.events.all.contains(.end))
        }
    }

    @Test("--verify full over fastboot reads every byte, in chunks no larger than the board's buffer")
    func fullVerifyInChunks() async throws {
        let rig = try Self.rig("mp15-emmc")
        let summary = try await rig.run(verify: .full, transport: .fastboot, fastbootVerifyChunk: 64 << 10)
        let flashed = try FastbootPlan(rig.plan).flashedIDs
        let checks = summary.checks.filter { flashed.contains($0.phase) }
        #expect(!checks.isEmpty)
        for check in checks {
            #expect(check.method == .full)
            #expect(check.bytesRead == check.bytes, "\(check)")
        }
        let reads = rig.board.consoleLog.filter { $0.hasPrefix("MMC read:") }
        #expect(reads.count > checks.count)
        // eMMC boot partitions were read from their hardware partition, then the user area again.
        #expect(rig.board.consoleLog.contains("switch to partitions #1, OK"))
        #expect(rig.board.fastbootCommands.last == "reboot")
    }

    @Test("--verify none and --fastboot-verify none: no CRC stage, the session ends with reboot as before")
    func noVerify() async throws {
        for (verify, method) in [(VerifyMode.none, FastbootVerifyMethod.crc32), (.sampled, .none)] {
            let rig = try Self.rig("mp15-sdcard")
            let summary = try await rig.run(verify: verify, transport: .fastboot, fastbootVerify: method)
            #expect(!rig.board.fastbootCommands.contains("continue"))
            #expect(!rig.board.fastbootCommands.contains { $0.hasPrefix("getvar:vcrc") })
            #expect(rig.board.fastbootCommands.last == "reboot")
            #expect(!rig.events.all.contains { if case .verified = $0 { true } else { false } })
            #expect(summary.checks.allSatisfy { $0.method == .none || $0.method == .notReadable }, "\(summary.checks)")
            try rig.checkWrittenAsPlanned()
        }
    }

    @Test("the probe checks serial, mmcdev, gptstat and every partition size before writing")
    func probeOrder() async throws {
        let rig = try Self.rig("mp15-sdcard")
        _ = try await rig.run(transport: .fastboot)
        let commands = rig.board.fastbootCommands
        let firstWrite = try #require(commands.firstIndex { $0.hasPrefix("download:") || $0.hasPrefix("erase:") })
        let probes = commands.prefix(firstWrite)
        #expect(probes.prefix(4) == ["getvar:max-download-size", "getvar:serialno", "getvar:mmcdev", "getvar:gptstat"])
        for id in rig.plan.requestOrder {
            guard let partition = rig.plan.partition(id: id)?.partition, partition.hardwarePartition == nil else {
                continue
            }
            #expect(probes.contains("getvar:partition-size:\(partition.line.name)"))
        }
        #expect(rig.events.all.contains(.message("fastboot: mmcdev 0")))
    }

    /// Each fast-path variant ends in its diagnosis, or falls back to DFU and succeeds.
    @Test(
        "variants",
        arguments: [
            ("script-rejected", "script-rejected"), ("fastboot-other-mmc", "storage-mismatch"),
            ("write-error", "fastboot-failed"), ("no-fastboot", nil),
        ] as [(String, String?)])
    func variant(scenario: String, expected: String?) async throws {
        let fault = try #require(FaultScenario(rawValue: scenario))
        let rig = try Self.rig("mp15-sdcard", fault: fault)
        do {
            let summary = try await rig.run(transport: .fastboot)
            #expect(expected == nil, "\(scenario) succeeded")
            // no-fastboot: `|| stm32prog usb 0` brought DFU back; the run went on over DFU.
            #expect(summary.partitions == rig.plan.requestOrder)
            #expect(
                rig.events.all.contains {
                    if case .message(let text) = $0 { text.contains("continuing over DFU") } else { false }
                })
        } catch {
            let diagnosis = Diagnoser.diagnose(
                Evidence(failure: error, kernelLog: rig.board.kernelLog, consoleLog: rig.board.consoleLog))
            #expect(diagnosis.code.rawValue == expected, "\(scenario): \(error)")
        }
    }

    @Test("storage mismatch writes nothing: no GPT, no partition")
    func storageMismatchWritesNothing() async throws {
        let rig = try Self.rig("mp15-sdcard", fault: .fastbootOtherMMC)
        await #expect(throws: FlashFailure.self) { try await rig.run(transport: .fastboot) }
        #expect(!rig.board.fastbootCommands.contains { $0.hasPrefix("download:") || $0.hasPrefix("erase:") })
        #expect(rig.board.ubootEnv["fastboot.gptstat"] == "other-device")
        let listing = try ExternalTool("sfdisk", package: "fdisk").run([
            "--dump", rig.board.storage.path(device: "mmc0"),
        ])
        #expect(listing.status != 0 || !listing.standardOutput.contains("name="))
    }

    @Test("a serial that changed at fastboot is refused")
    func serialChanged() async throws {
        let rig = try SimulatedFlash(layout: "mp15-sdcard", deviceSizes: Self.sizes) {
            $0.fastboot.mmcDevice = 0
            $0.fastboot.environmentSerial = "0000000000000000000000AB"
        }
        do {
            _ = try await rig.run(transport: .fastboot)
            Issue.record("a changed serial must fail")
        } catch {
            let diagnosis = Diagnoser.diagnose(Evidence(failure: error))
            #expect(diagnosis.code == .serialChanged)
            #expect(diagnosis.evidence.first?.contains("0000000000000000000000AB") == true)
        }
    }

    @Test("auto: U-Boot rejects the script, so a USB reset brings the ROM back and the run starts over over DFU")
    func autoResetsAfterRejectedScript() async throws {
        // U-Boot stays on the bus for 10 ms after the DETACH: the reset must come in that window.
        var timing = BoardTiming.zero
        timing.detachToDisconnect = .milliseconds(10)
        timing.resetToROM = .milliseconds(500)
        let rig = try SimulatedFlash(
            layout: "mp15-sdcard", fault: .scriptRejected, timing: timing, deviceSizes: Self.sizes
        ) { $0.fastboot.mmcDevice = 0 }
        let summary = try await rig.run(transport: .auto)
        #expect(summary.partitions == rig.plan.requestOrder)
        #expect(rig.board.fastbootCommands.isEmpty)
        let lines = rig.events.all.compactMap { event -> String? in
            if case .message(let text) = event { text } else { nil }
        }
        let said = lines.filter { $0.contains("reset the board over USB; flashing over DFU from the ROM") }
        #expect(said.count == 1, "\(lines)")
        #expect(said.first?.contains("U-Boot cannot run the fastboot hand-off script") == true)
        // The board went through the ROM twice: once before the script, once after the reset.
        #expect(rig.board.consoleLog.contains("resetting ..."))
        #expect(summary.phases.contains { $0.stage == .uboot && $0.phase >= 0x10 })
        try rig.checkWrittenAsPlanned()
    }

    @Test("auto: fastboot writes another MMC here, so it says continue and flashes over DFU")
    func autoFallsBack() async throws {
        // Stock MP15 U-Boot: fastboot writes the eMMC (mmc1); the layout is for the SD card.
        let rig = try SimulatedFlash(layout: "mp15-sdcard", deviceSizes: Self.sizes)
        let summary = try await rig.run(transport: .auto)
        #expect(summary.partitions == rig.plan.requestOrder)
        #expect(rig.board.fastbootCommands.last == "continue")
        #expect(!rig.board.fastbootCommands.contains { $0.hasPrefix("download:") })
        #expect(
            rig.events.all.contains {
                if case .message(let text) = $0 { text.contains("continuing over DFU") } else { false }
            })
        #expect(summary.phases.contains { $0.stage == .uboot && $0.phase >= 0x10 })
    }
}

@Suite("FastbootPlan: what the fast path does with a layout")
struct FastbootPlanTests {
    func plan(_ tsv: String) throws -> PartitionPlan {
        try PartitionPlanner.plan(try UBootLayout.parse(Array(tsv.utf8)).get()).get()
    }

    @Test func userAreaFirstThenBootPartitionsEachWithBootSelection() throws {
        let tsv = """
            #Opt\tId\tName\tType\tIP\tOffset\tBinary
            -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\ttf-a.stm32
            P\t0x04\tfsbl1\tBinary\tmmc1\tboot1\ttf-a.stm32
            P\t0x05\tfsbl2\tBinary\tmmc1\tboot2\ttf-a.stm32
            P\t0x06\tfip-a\tFIP\tmmc1\t0x00080000\tfip.bin
            PED\t0x07\tfip-b\tFIP\tmmc1\t0x00280000\tnone
            PE\t0x08\tspare\tBinary\tmmc1\t0x00480000\tnone
            P\t0x10\trootfs\tFileSystem\tmmc1\t0x00500000\trootfs.ext4

            """
        let fastboot = try FastbootPlan(try plan(tsv))
        #expect(
            fastboot.steps == [
                .flash(id: 0x06, name: "fip-a"), .erase(id: 0x07, name: "fip-b"), .flash(id: 0x10, name: "rootfs"),
                .flashBoot(id: 0x04, target: "mmc1boot0", hardwarePartition: 1), .selectBoot(hardwarePartition: 1),
                .flashBoot(id: 0x05, target: "mmc1boot1", hardwarePartition: 2), .selectBoot(hardwarePartition: 2),
            ])
        #expect(fastboot.flashedIDs == [0x06, 0x10, 0x04, 0x05])
        #expect(fastboot.script.text.contains("gpt write mmc 1"))
    }

    @Test func refusesLayoutsOnSeveralDevicesOrNotOnMMC() throws {
        let twoDevices = """
            #Opt\tId\tName\tType\tIP\tOffset\tBinary
            P\t0x04\tfsbl1\tBinary\tnor0\t0x00000000\ttf-a.stm32
            P\t0x10\trootfs\tFileSystem\tmmc0\t0x00100000\trootfs.ext4

            """
        #expect(throws: FastbootPlan.Unsuitable.self) { try FastbootPlan(try plan(twoDevices)) }
        let nand = """
            #Opt\tId\tName\tType\tIP\tOffset\tBinary
            P\t0x10\trootfs\tSystem\tnand0\t0x00200000\trootfs.ubi

            """
        #expect(throws: FastbootPlan.Unsuitable.self) { try FastbootPlan(try plan(nand)) }
    }
}
