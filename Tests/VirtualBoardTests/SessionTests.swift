import DFU
import FlashLayout
import Foundation
import TestSupport
import Testing
import Timekeeping
import USBModel
import VirtualBoard
import VirtualBoardTestSupport

/// `sfdisk --json` output, the parts compared with the plan.
struct SfdiskTable: Decodable {
    struct Table: Decodable {
        var label: String
        var sectorsize: Int?
        var partitions: [Partition]
    }
    struct Partition: Decodable {
        var start: UInt64
        var size: UInt64
        var type: String
        var uuid: String
        var name: String?
        var attrs: String?
    }
    var partitiontable: Table
}

@Suite("U-Boot stm32prog sessions by hand (§C.3–C.7, §C.11)")
struct SessionTests {
    /// The plan U-Boot makes for `tsv` on the board's storage.
    func plan(_ tsv: String, device: String, board: VirtualBoard) throws -> DevicePlan {
        let lines = try UBootLayout.parse(Array(tsv.utf8)).get()
        let layoutDevice = try #require(try UBootLayout.devices(lines).get().first { $0.target.description == device })
        let storage = try #require(board.storage.device(named: device))
        return try DevicePlanner.plan(
            layoutDevice,
            geometry: DeviceGeometry(
                size: storage.size, eraseSize: storage.eraseSize, bootPartitionSize: storage.bootPartitionSize)
        ).get()
    }

    @Test(
        "SD card full update: layout → DETACH → enumeration 2 → partitions by ID → END; GPT read back by sfdisk and sgdisk"
    )
    func sdCardFullUpdate() async throws {
        let rig = try BoardRig.smallBuffer()
        let uboot = try #require(try await rig.bootToUBoot())
        let enumeration2 = try #require(try await rig.sendLayout(TestLayouts.sdCard, to: uboot))
        let expected = try plan(TestLayouts.sdCard, device: "mmc0", board: rig.board)

        // One alternate per non-none line by increasing ID, then virtual, OTP, PMIC.
        let partitionAlts = expected.partitions.sorted { $0.line.id < $1.line.id }.map(\.altName)
        #expect(
            enumeration2.alternates.map(\.string) == partitionAlts + [
                "@virtual/0xf1/1*512Be", "@OTP/0xf2/1*776Be", "@PMIC/0xf4/1*8Be",
            ])
        #expect(enumeration2.alternate(forPhase: 0x07)?.string == "@u-boot-env/0x07/1*256Ka")
        #expect(try await enumeration2.getPhase().bytes == [0x04, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0])

        let files = try TestLayouts.files(for: TestLayouts.sdCard)
        let end = try await rig.programPartitions(enumeration2, files: files)
        #expect(end.phase == 0xFE)
        // GetPhase asked for the P-not-E lines in increasing ID order, then END.
        let session = rig.board.enumerationCount
        let asked = rig.board.trace.filter { $0.session == session && $0.isDFU(DFURequest.upload) }.compactMap {
            entry -> UInt8? in
            if case .ok(let bytes) = entry.reply.outcome, bytes.count >= 9 { return bytes[0] }
            return nil
        }
        #expect(
            asked.reduce(into: [UInt8]()) { if $0.last != $1 { $0.append($1) } } == [
                0x04, 0x05, 0x06, 0x10, 0x11, 0xFE,
            ])
        #expect(rig.board.consoleLog.contains("Phase=END"))

        // Data landed at the planned offsets.
        for partition in expected.partitions where partition.line.isRequested {
            let data = try #require(files[partition.line.id])
            let stored = try rig.board.storage.read(device: "mmc0", offset: partition.offset, length: data.count)
            #expect(stored == data, "partition \(partition.line.name)")
        }
        // And reads back over USB (U-Boot reads any alternate).
        let rootfs = try await enumeration2.upload(phase: 0x11, length: 4096)
        #expect(rootfs == Array(try #require(files[0x11]).prefix(4096)))

        let image = rig.board.storage.path(device: "mmc0")
        rig.board.storage.closeAll()
        let sfdisk = try ExternalTool("sfdisk", package: "fdisk").run(["--json", image])
        #expect(sfdisk.status == 0, "\(sfdisk.standardError)")
        let table = try JSONDecoder().decode(SfdiskTable.self, from: Data(sfdisk.standardOutput.utf8)).partitiontable
        #expect(table.label == "gpt")
        let gptPartitions = expected.partitions.filter { $0.gptNumber != nil }
        #expect(table.partitions.count == gptPartitions.count)
        for (read, planned) in zip(table.partitions, gptPartitions) {
            #expect(read.start == planned.offset / 512)
            #expect(read.size == (planned.size ?? 0) / 512)
            #expect(read.type == planned.gptTypeGUID)
            #expect(read.name == planned.line.name)
            if let unique = planned.gptUniqueGUID { #expect(read.uuid == unique) }
            #expect((read.attrs?.contains("LegacyBIOSBootable") ?? false) == planned.bootable)
        }
        let sgdisk = try ExternalTool("sgdisk", package: "gdisk").run(["-v", image])
        #expect(sgdisk.status == 0)
        #expect(sgdisk.standardOutput.contains("No problems found"), "\(sgdisk.standardOutput)")

        // DETACH at END: U-Boot leaves stm32prog without reset; nothing comes back.
        try await enumeration2.detach()
        #expect(try await rig.next(within: .seconds(60)) == nil)
        #expect(rig.board.protocolViolations.isEmpty)
    }

    @Test("eMMC: boot1/boot2 go to their own image files, the user area gets a GPT without them")
    func eMMCBootPartitions() async throws {
        let rig = try BoardRig.smallBuffer()
        let uboot = try #require(try await rig.bootToUBoot())
        let enumeration2 = try #require(try await rig.sendLayout(TestLayouts.eMMC, to: uboot))
        #expect(enumeration2.alternate(forPhase: 0x04)?.string == "@fsbl1/0x04/1*4Me")
        let files = try TestLayouts.files(for: TestLayouts.eMMC)
        #expect(try await rig.programPartitions(enumeration2, files: files).phase == 0xFE)
        let boot1 = try rig.board.storage.read(device: "mmc1", hardwarePartition: 1, offset: 0, length: 9_000)
        let boot2 = try rig.board.storage.read(device: "mmc1", hardwarePartition: 2, offset: 0, length: 9_000)
        #expect(boot1 == files[0x04])
        #expect(boot2 == files[0x05])
        #expect(rig.board.consoleLog.contains("mmc bootbus 1 0 0 0; mmc partconf 1 1 1 0"))
        #expect(rig.board.storage.path(device: "mmc1", hardwarePartition: 2).hasSuffix("/mmc1-boot2.img"))
        rig.board.storage.closeAll()
        let sfdisk = try ExternalTool("sfdisk", package: "fdisk").run([
            "--json", rig.board.storage.path(device: "mmc1"),
        ])
        let table = try JSONDecoder().decode(SfdiskTable.self, from: Data(sfdisk.standardOutput.utf8)).partitiontable
        #expect(table.partitions.map(\.name) == ["fip-a", "bootfs", "rootfs"])
    }

    @Test("D lines are erased during device init, before enumeration 2; other data is kept")
    func deleteLinesErased() async throws {
        let rig = try BoardRig.smallBuffer()
        let old = SampleImages.pattern(0x40000, seed: 77)
        try rig.board.storage.write(device: "mmc0", offset: 0x48_4400, bytes: old)
        try rig.board.storage.write(device: "mmc0", offset: 0x100_0000, bytes: old)
        let uboot = try #require(try await rig.bootToUBoot())
        _ = try #require(try await rig.sendLayout(TestLayouts.sdCard, to: uboot))
        let erased = try rig.board.storage.read(device: "mmc0", offset: 0x48_4400, length: 0x40000)
        #expect(erased.allSatisfy { $0 == 0 })
        #expect(try rig.board.storage.read(device: "mmc0", offset: 0x100_0000, length: 0x40000) == old)
    }

    @Test("OTP and PMIC alternates: written images are applied at manifestation and read back")
    func otpAndPMIC() async throws {
        let rig = try BoardRig.smallBuffer()
        let uboot = try #require(try await rig.bootToUBoot())
        var otp = try await uboot.upload(phase: 0xF2, length: 776)
        otp[8] = 0x5A
        _ = try await uboot.download(MemoryByteSource(otp), phase: 0xF2)
        #expect(try await uboot.upload(phase: 0xF2, length: 776) == otp)
        _ = try await uboot.download(MemoryByteSource([1, 2, 3, 4, 5, 6, 7, 8]), phase: 0xF4)
        #expect(try await uboot.upload(phase: 0xF4, length: 8) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(rig.board.consoleLog.contains("OTP write: 776 bytes"))
        #expect(rig.board.consoleLog.contains("PMIC NVM write: 8 bytes"))
        #expect(rig.board.protocolViolations.isEmpty)
    }

    @Test("images are sparse: a 4 GiB device holding a few hundred KiB uses little disk")
    func sparseImages() async throws {
        let rig = try BoardRig.smallBuffer()
        let uboot = try #require(try await rig.bootToUBoot())
        let enumeration2 = try #require(try await rig.sendLayout(TestLayouts.sdCard, to: uboot))
        _ = try await rig.programPartitions(enumeration2, files: try TestLayouts.files(for: TestLayouts.sdCard))
        rig.board.storage.closeAll()
        var info = stat()
        #expect(stat(rig.board.storage.path(device: "mmc0"), &info) == 0)
        #expect(info.st_size == 4 << 30)
        #expect(Int64(info.st_blocks) * 512 < 16 << 20)
    }

    @Test("partial update: the existing GPT must match; the command alternate sets the offset (big-endian, §4.4)")
    func partialUpdateAndCommand() async throws {
        let rig = try BoardRig.smallBuffer()
        let uboot = try #require(try await rig.bootToUBoot())
        let full = try #require(try await rig.sendLayout(TestLayouts.sdCard, to: uboot))
        #expect(
            try await rig.programPartitions(full, files: try TestLayouts.files(for: TestLayouts.sdCard)).phase == 0xFE)
        let fsbl1Before = try rig.board.storage.read(device: "mmc0", offset: 0x4400, length: 9000)

        // Reset into the ROM and flash again with the partial layout.
        try await full.writeCommand(phase: 0xFF, address: 0xC000_0000)
        #expect(rig.board.consoleLog.contains("## Starting application at 0xC0000000 ..."))
        // The first run ends (its images close and the folder's lock is released) before the
        // second board opens the same storage: two live boards on one folder are refused.
        rig.board.storage.closeAll()
        let other = try BoardRig.smallBuffer { $0.storageDirectory = rig.directory.path }
        let uboot2 = try #require(try await other.bootToUBoot())
        let partial = try #require(try await other.sendLayout(TestLayouts.partial, to: uboot2))
        #expect(partial.alternate(forPhase: 0x04)?.name?.access == "a")
        #expect(try await partial.getPhase().phase == 0x05)
        try await partial.writeCommand(phase: 0x05, address: 0x0000_0200)
        #expect(try await partial.getPhase().offset == 0x200)
        let data = SampleImages.pattern(3000, seed: 9)
        _ = try await partial.download(MemoryByteSource(data), phase: 0x05)
        #expect(try await partial.getPhase().phase == 0x06)
        #expect(try other.board.storage.read(device: "mmc0", offset: 0x44400 + 0x200, length: 3000) == data)
        #expect(try other.board.storage.read(device: "mmc0", offset: 0x4400, length: 9000) == fsbl1Before)
        let command = try #require(other.board.trace.last { $0.isDFU(DFURequest.download) && $0.dataLength == 5 })
        #expect(command.setup.value == 0)
    }

    @Test(
        "partial update on a blank device: enumeration 2 has only FlashLayout/virtual and GetPhase says why; DETACH resets"
    )
    func partialUpdateWithoutGPT() async throws {
        let rig = try BoardRig.smallBuffer()
        let uboot = try #require(try await rig.bootToUBoot())
        let failed = try #require(try await rig.sendLayout(TestLayouts.partial, to: uboot))
        #expect(
            failed.alternates.map(\.string) == [
                "@FlashLayout/0x00/1*256Ke", "@virtual/0xf1/1*512Be", "@OTP/0xf2/1*776Be", "@PMIC/0xf4/1*8Be",
            ])
        let reply = try await failed.getPhase()
        #expect(reply.phase == 0xFF)
        #expect(reply.message == "fsbl1 (0x4):Couldn't find part 1 on device mmc 0")
        try await failed.detach()
        let rom = try #require(try await rig.next())
        #expect(rom.identity.product?.hasPrefix("DFU in HS Mode") == true)
    }

    @Test("MP25: ROM DETACH → TF-A DDR phase → reconnect → FIP → U-Boot")
    func mp25Flow() async throws {
        let rig = try BoardRig.smallBuffer { $0.soc = .mp25 }
        let uboot = try #require(try await rig.bootToUBoot())
        #expect(uboot.identity.product?.hasPrefix("USB download gadget@Device ID /0x505") == true)
        // ROM, TF-A (DDR), TF-A (FIP), U-Boot.
        #expect(rig.board.enumerationCount == 4)
        #expect(rig.board.protocolViolations.isEmpty)
    }

    @Test("MP25 option: the ROM's identity changes in place, no disconnect")
    func mp25InPlace() async throws {
        let rig = try BoardRig.smallBuffer {
            $0.soc = .mp25; $0.mp25ROMChangesInPlace = true
        }
        let rom = try await rig.open()
        _ = try await rom.download(MemoryByteSource(SampleImages.fsbl(for: .mp25)), phase: 0x01)
        _ = try await rom.getPhase()
        try await rom.detach()
        #expect(try await rig.events.next(until: rig.clock.now + .seconds(10)) == nil)
        let tfa = try await rig.open()
        #expect(tfa.identity.product?.hasPrefix("DFU @Device ID /0x505") == true)
        #expect(rig.board.enumerationCount == 1)
    }

    @Test("ST TF-A v2.4: FlashLayout first on alt 0, then the SSBL; U-Boot then skips enumeration 1")
    func tfaV24LayoutFirst() async throws {
        let rig = try BoardRig.smallBuffer { $0.tfaVariant = .stV24 }
        let device = try await rig.open()
        _ = try await device.download(MemoryByteSource(SampleImages.fsbl()), phase: 0x01, deviceMayLeave: true)
        let first = try await device.getPhase()
        #expect(first.phase == 0x00)
        #expect(first.address == 0xC000_0000)
        #expect(!first.needsDetach)
        let lines = try UBootLayout.parse(Array(TestLayouts.sdCard.utf8)).get()
        _ = try await device.download(MemoryByteSource(LayoutPayload.normalized(lines).bytes), phase: 0x00)
        #expect(rig.downloads.last { $0.length > 0 } != nil)
        #expect(try await device.getPhase().phase == 0x03)
        _ = try await device.download(MemoryByteSource(SampleImages.fip()), phase: 0x03)
        #expect(try await device.getPhase().needsDetach)
        try await device.detach()
        let uboot = try #require(try await rig.next())
        #expect(uboot.alternate(forPhase: 0x00) == nil)
        #expect(try await uboot.getPhase().phase == 0x04)
    }

    @Test("timing model: TF-A DETACH → U-Boot after tfaToUBoot on the simulated clock; zero preset is instant")
    func timing() async throws {
        let rig = try BoardRig.smallBuffer()
        _ = try #require(try await rig.bootToUBoot())
        let detach = try #require(rig.board.trace.last { $0.isDFU(DFURequest.detach) })
        let firstUBoot = try #require(rig.board.trace.first { $0.stage == .uboot })
        #expect(firstUBoot.time - detach.time >= BoardTiming().tfaToUBoot)
        let instant = try BoardRig.smallBuffer { $0.timing = .zero }
        _ = try #require(try await instant.bootToUBoot())
        #expect(instant.clock.now < .milliseconds(20))
    }
}
