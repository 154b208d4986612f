import DFU
import Fastboot
import FlashLayout
import Foundation
import TestSupport
import Testing
import Timekeeping
import UBootScript
import USBModel
import VirtualBoard
import VirtualBoardTestSupport

/// The shared rig, with a small U-Boot buffer so that drains happen on small test images.
typealias BoardRig = VirtualBoardBench

extension VirtualBoardBench {
    /// The default board with a 64 KiB U-Boot buffer, then `configure`.
    static func smallBuffer(_ configure: (inout BoardConfiguration) -> Void = { _ in }) throws -> VirtualBoardBench {
        try VirtualBoardBench { configuration in
            configuration.ubootBufferSize = 64 << 10
            configure(&configuration)
        }
    }

    /// ROM → TF-A (however the SoC does it) → FIP → DETACH; returns the first U-Boot device.
    func bootToUBoot(fip: [UInt8] = SampleImages.fip()) async throws -> DFUDevice? {
        var device = try await open()
        _ = try await device.download(
            MemoryByteSource(SampleImages.fsbl(for: board.configuration.soc)), phase: 0x01, deviceMayLeave: true)
        if board.configuration.soc != .mp15 {
            #expect(try await device.getPhase().needsDetach)
            try await device.detach()
            device = try #require(try await next())
        }
        var phase = try await device.getPhase()
        if phase.phase == 0x02 {
            _ = try await device.download(MemoryByteSource(SampleImages.fip(payloadSize: 1000)), phase: 0x02)
            #expect(try await device.getPhase().needsDetach)
            try await device.detach()
            device = try #require(try await next())
            phase = try await device.getPhase()
        }
        #expect(phase.phase == 0x03)
        _ = try await device.download(MemoryByteSource(fip), phase: 0x03)
        #expect(try await device.getPhase().needsDetach)
        try await device.detach()
        return try await next()
    }

    /// Sends `tsv` (normalized, with its STM32 header) in enumeration 1, DETACH, and returns
    /// enumeration 2.
    func sendLayout(_ tsv: String, to uboot: DFUDevice) async throws -> DFUDevice? {
        let lines = try UBootLayout.parse(Array(tsv.utf8)).get()
        _ = try await uboot.download(MemoryByteSource(LayoutPayload.normalized(lines).bytes), phase: 0x00)
        let phase = try await uboot.getPhase()
        guard phase.needsDetach else { return nil }
        try await uboot.detach()
        return try await next()
    }

    /// Sends `script` as a legacy script image in enumeration 1, DETACH, and opens whatever
    /// enumerates next on the port (the fastboot gadget, or stm32prog again).
    func sendScript(_ script: String, to uboot: DFUDevice) async throws -> (any USBControlTransport)? {
        _ = try await uboot.download(MemoryByteSource(LegacyScriptImage(script: script).bytes), phase: 0x00)
        #expect(try await uboot.getPhase().phase == 0xFE)
        try await uboot.detach()
        let deadline = clock.now + .seconds(60)
        while let event = try await events.next(until: deadline) {
            if event.action == .add, event.device.port == board.port { return try await bus.open(port: board.port) }
        }
        return nil
    }

    /// A fastboot client on an opened gadget (interface claimed from its descriptors).
    func fastboot(_ transport: any USBControlTransport) async throws -> FastbootClient {
        let interface = try #require(FastbootInterface.find(in: try await transport.configurationDescriptor()))
        let bulk = try #require(transport as? any USBBulkTransport)
        try await bulk.claimBulk(
            interface: interface.interface, outEndpoint: interface.outEndpoint, inEndpoint: interface.inEndpoint)
        return FastbootClient(transport: bulk)
    }

    /// The GetPhase loop of enumeration 2: send what the board asks for until END or an error.
    func programPartitions(_ device: DFUDevice, files: [UInt8: [UInt8]]) async throws -> GetPhaseReply {
        var reply = try await device.getPhase()
        for _ in 0..<64 where reply.phase != 0xFE && reply.phase != 0xFF {
            let data = try #require(files[reply.phase], "no file for phase \(reply.phase)")
            _ = try await device.download(MemoryByteSource(data), phase: reply.phase)
            reply = try await device.getPhase()
        }
        return reply
    }

    /// (wValue, data length) of every DNLOAD.
    var downloads: [(block: UInt16, length: Int)] {
        board.trace.filter { $0.isDFU(DFURequest.download) }.map { ($0.setup.value, $0.dataLength) }
    }
}

/// The layouts the tests flash.
enum TestLayouts {
    /// An SD card full update on mmc0 (MP15 distribution shape).
    static let sdCard = """
        #Opt\tId\tName\tType\tIP\tOffset\tBinary
        -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\ttf-a.stm32
        -\t0x03\tfip-boot\tFIP\tnone\t0x0\tfip.bin
        P\t0x04\tfsbl1\tBinary\tmmc0\t0x00004400\ttf-a.stm32
        P\t0x05\tfsbl2\tBinary\tmmc0\t0x00044400\ttf-a.stm32
        P\t0x06\tfip-a\tFIP\tmmc0\t0x00084400\tfip.bin
        PED\t0x07\tu-boot-env\tENV\tmmc0\t0x00484400\tnone
        P\t0x10\tbootfs\tSystem\tmmc0\t0x004C4400\tbootfs.ext4
        P\t0x11\trootfs\tFileSystem\tmmc0\t0x044C4400\trootfs.ext4

        """

    /// An eMMC layout: FSBLs in the hardware boot partitions, the rest on the user area of mmc1.
    static let eMMC = """
        #Opt\tId\tName\tType\tIP\tOffset\tBinary
        -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\ttf-a.stm32
        -\t0x03\tfip-boot\tFIP\tnone\t0x0\tfip.bin
        P\t0x04\tfsbl1\tBinary\tmmc1\tboot1\ttf-a.stm32
        P\t0x05\tfsbl2\tBinary\tmmc1\tboot2\ttf-a.stm32
        P\t0x06\tfip-a\tFIP\tmmc1\t0x00080000\tfip.bin
        P\t0x10\tbootfs\tSystem\tmmc1\t0x00480000\tbootfs.ext4
        P\t0x11\trootfs\tFileSystem\tmmc1\t0x04480000\trootfs.ext4

        """

    /// The SD card layout as a partial update (fsbl1 not selected): no GPT is written, the
    /// existing one must match.
    static let partial = sdCard.replacingOccurrences(of: "P\t0x04\tfsbl1", with: "-\t0x04\tfsbl1")

    /// One file per requested ID, sizes chosen to need several U-Boot buffer drains.
    static func files(for tsv: String) throws -> [UInt8: [UInt8]] {
        let lines = try UBootLayout.parse(Array(tsv.utf8)).get()
        var files: [UInt8: [UInt8]] = [:]
        for line in lines where line.isRequested {
            files[line.id] = SampleImages.pattern(line.id >= 0x10 ? 200_000 : 9_000, seed: line.id)
        }
        return files
    }
}
