import DFU
import FlashLayout
import Foundation
import Testing
import VirtualBoard
import VirtualBoardTestSupport

/// A source that fails after `blocks` chunks: a host that dies in the middle of a partition.
struct DyingSource: ByteSource {
    struct Died: Error {}
    let bytes: [UInt8]
    let failAt: Int64

    var count: Int64 { Int64(bytes.count) }

    func read(offset: Int64, length: Int) throws -> [UInt8] {
        guard offset < failAt else { throw Died() }
        return Array(bytes[Int(offset)..<min(bytes.count, Int(offset) + length)])
    }
}

@Suite("U-Boot's stored offset, transactions and reads (reference §4.4, checked against dfu.c/stm32prog.c)")
struct OffsetSemanticsTests {
    /// Enumeration 2 of the SD card layout on a board with a 64 KiB DFU buffer.
    func enumeration2(_ configure: (inout BoardConfiguration) -> Void = { _ in }) async throws -> (
        BoardRig, DFUDevice, DevicePlan
    ) {
        let rig = try BoardRig.smallBuffer(configure)
        let uboot = try #require(try await rig.bootToUBoot())
        let device = try #require(try await rig.sendLayout(TestLayouts.sdCard, to: uboot))
        let lines = try UBootLayout.parse(Array(TestLayouts.sdCard.utf8)).get()
        let layoutDevice = try #require(try UBootLayout.devices(lines).get().first)
        let storage = try #require(rig.board.storage.device(named: "mmc0"))
        let plan = try DevicePlanner.plan(
            layoutDevice,
            geometry: DeviceGeometry(
                size: storage.size, eraseSize: storage.eraseSize, bootPartitionSize: storage.bootPartitionSize)
        ).get()
        return (rig, device, plan)
    }

    func offset(_ plan: DevicePlan, _ id: UInt8) throws -> UInt64 {
        try #require(plan.partitions.first { $0.line.id == id }).offset
    }

    @Test("a download on the current partition starts at the stored offset; the next phase keeps it")
    func downloadAtOffsetAndNextPhaseKeepsIt() async throws {
        let (rig, device, plan) = try await enumeration2()
        let data = SampleImages.pattern(10_000, seed: 4)
        _ = try await device.download(MemoryByteSource(data), phase: 0x04, offset: 0x2000)
        let base = try offset(plan, 0x04)
        #expect(try rig.board.storage.read(device: "mmc0", offset: base + 0x2000, length: data.count) == data)
        #expect(try rig.board.storage.read(device: "mmc0", offset: base, length: 0x2000).allSatisfy { $0 == 0 })
        // stm32prog_next_phase() moved on but kept the offset: GetPhase reports it, and a download
        // on the new current partition starts there too.
        let reply = try await device.getPhase()
        #expect(reply.phase == 0x05)
        #expect(reply.offset == 0x2000)
        _ = try await device.download(MemoryByteSource(data), phase: 0x05)
        let fsbl2 = try offset(plan, 0x05)
        #expect(try rig.board.storage.read(device: "mmc0", offset: fsbl2 + 0x2000, length: data.count) == data)
        // The host sets the offset back itself.
        try await device.setPhase(0x06, offset: 0)
        #expect(try await device.getPhase() == GetPhaseReply(phase: 0x06, address: GetPhaseReply.undefinedAddress))
        #expect(rig.board.protocolViolations.isEmpty)
    }

    @Test("ranges land at their offsets and the bytes between them keep what the medium held")
    func rangesLeaveGapsAlone() async throws {
        let (rig, device, plan) = try await enumeration2()
        let bootfs = try offset(plan, 0x10)
        let old = [UInt8](repeating: 0xEE, count: 0x40000)
        try rig.board.storage.write(device: "mmc0", offset: bootfs, bytes: old)
        let first = SampleImages.pattern(0x8000, seed: 1)
        let second = SampleImages.pattern(0x6000, seed: 2)
        _ = try await device.download(MemoryByteSource(first), phase: 0x10, offset: 0)
        _ = try await device.download(MemoryByteSource(second), phase: 0x10, offset: 0x30000)
        let stored = try rig.board.storage.read(device: "mmc0", offset: bootfs, length: 0x40000)
        #expect(Array(stored[0..<0x8000]) == first)
        #expect(stored[0x8000..<0x30000].allSatisfy { $0 == 0xEE })
        #expect(Array(stored[0x30000..<0x36000]) == second)
        #expect(stored[0x36000...].allSatisfy { $0 == 0xEE })
        // Each flush of 0x10 ran next_phase: 0x11 with the last offset still stored.
        #expect(try await device.getPhase().offset == 0x30000)
    }

    @Test("an upload on the current partition's alternate starts at the stored offset, others at 0")
    func uploadsStartWhereU_BootSays() async throws {
        let (rig, device, plan) = try await enumeration2()
        let bootfs = try offset(plan, 0x10)
        let rootfs = try offset(plan, 0x11)
        let content = SampleImages.pattern(0x20000, seed: 9)
        try rig.board.storage.write(device: "mmc0", offset: bootfs, bytes: content)
        try rig.board.storage.write(device: "mmc0", offset: rootfs, bytes: content)
        try await device.setPhase(0x10, offset: 0x4000)
        // Current partition: from the stored offset. A read that runs to its full length ends
        // before U-Boot does, so its transaction stays open.
        var current: [UInt8] = []
        let report = try await device.upload(phase: 0x10, length: 0x8000) { current += $0 }
        #expect(current == Array(content[0x4000..<0xC000]))
        #expect(!report.closed)
        // Another alternate: from 0 whatever the stored offset.
        #expect(try await device.upload(phase: 0x11, length: 0x1000) == Array(content[0..<0x1000]))
        // The stale read transaction on 0x10 refuses a new read ("Wrong sequence number")…
        await #expect(throws: DFUError.self) { _ = try await device.upload(phase: 0x10, length: 0x1000) }
        #expect(rig.board.consoleLog.contains("dfu_read: Wrong sequence number! [8] [0]"))
        // …until it is closed; closing on another current partition leaves the session clean.
        try await device.setPhase(0x11, offset: 0)
        #expect(try await device.closeTransaction(phase: 0x10))
        #expect(try await device.getPhase().phase == 0x11)
        #expect(try await device.upload(phase: 0x10, length: 0x1000) == Array(content[0..<0x1000]))
    }

    @Test("a read whose buffer fill would pass the partition end is refused")
    func readsPastTheEndAreRefused() async throws {
        let (rig, device, plan) = try await enumeration2()
        let fip = try #require(plan.partitions.first { $0.line.id == 0x06 })
        // 4 KiB before the end: U-Boot fills its 64 KiB buffer from there and MMC refuses it.
        try await device.setPhase(0x06, offset: UInt32(try #require(fip.size) - 0x1000))
        await #expect(throws: DFUError.self) { _ = try await device.upload(phase: 0x06, length: 0x1000) }
        #expect(rig.board.consoleLog.contains("Request would exceed designated area!"))
        // One buffer before the end is fine.
        try await device.setPhase(0x07, offset: 0)
        try await device.closeTransaction(phase: 0x06)
        try await device.setPhase(0x06, offset: UInt32(try #require(fip.size) - 0x10000))
        #expect(try await device.upload(phase: 0x06, length: 0x10000).count == 0x10000)
    }

    @Test("a host that died mid-partition leaves a half-open transaction: block 0 hits Wrong sequence number")
    func halfOpenTransactionAndRecovery() async throws {
        let (rig, device, plan) = try await enumeration2()
        let data = SampleImages.pattern(40_000, seed: 4)
        await #expect(throws: DyingSource.Died.self) {
            _ = try await device.download(DyingSource(bytes: data, failAt: 16384), phase: 0x04)
        }
        // A new run: SET_INTERFACE, GETSTATUS and ABORT do not close U-Boot's transaction…
        await #expect(throws: DFUError.self) { _ = try await device.download(MemoryByteSource(data), phase: 0x04) }
        let failed = try await device.getPhase()
        #expect(failed.phase == 0xFF)
        #expect(failed.message == "Wrong sequence number")
        // …the failing block 0 did; the §4.4 recovery: CLRSTATUS (done by the next transfer's
        // idle check), command `P 00000000`, then P again from block 0.
        try await device.setPhase(0x04, offset: 0)
        #expect(try await device.getPhase() == GetPhaseReply(phase: 0x04, address: GetPhaseReply.undefinedAddress))
        _ = try await device.download(MemoryByteSource(data), phase: 0x04)
        #expect(try await device.getPhase().phase == 0x05)
        let fsbl1 = try offset(plan, 0x04)
        #expect(try rig.board.storage.read(device: "mmc0", offset: fsbl1, length: data.count) == data)
    }

    @Test("reading an error arms the reset; setting the phase again disarms it")
    func setPhaseClearsTheArmedReset() async throws {
        let (rig, device, _) = try await enumeration2()
        let data = SampleImages.pattern(20_000, seed: 4)
        await #expect(throws: DyingSource.Died.self) {
            _ = try await device.download(DyingSource(bytes: data, failAt: 8192), phase: 0x04)
        }
        await #expect(throws: DFUError.self) { _ = try await device.download(MemoryByteSource(data), phase: 0x04) }
        #expect(try await device.getPhase().phase == 0xFF)
        try await device.setPhase(0x04, offset: 0)
        let programmed = try await rig.programPartitions(device, files: try TestLayouts.files(for: TestLayouts.sdCard))
        #expect(programmed.phase == 0xFE)
        try await device.detach()
        #expect(!rig.board.consoleLog.contains("resetting ..."))
    }
}
