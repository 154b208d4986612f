import AndroidSparse
import DFU
import Fastboot
import FlashLayout
import Foundation
import TestSupport
import Testing
import UBootScript
import USBModel
import VirtualBoard
import VirtualBoardTestSupport

@Suite("The fast path on the virtual board: script hand-off, fastboot gadget, sparse pieces")
struct FastbootGadgetTests {
    /// The eMMC layout planned on the board's eMMC geometry.
    func eMMCPlan(_ rig: BoardRig) throws -> DevicePlan {
        let lines = try UBootLayout.parse(Array(TestLayouts.eMMC.utf8)).get()
        let plan = try PartitionPlanner.plan(
            lines, options: PlanOptions(deviceSizes: ["mmc1": 4 << 30], bootPartitionSizes: ["mmc1": 4 << 20])
        ).get()
        return try #require(plan.devices.first { $0.target.description == "mmc1" })
    }

    @Test func flashesByNameInSparsePiecesWithTheScriptsGPT() async throws {
        let rig = try BoardRig.smallBuffer { $0.fastboot.maxDownloadSize = 16 << 10 }
        let device = try eMMCPlan(rig)
        let uboot = try #require(try await rig.bootToUBoot())
        let transport = try #require(try await rig.sendScript(HandoffScript(device: device).text, to: uboot))
        #expect(transport.identity.productID == 0x0AFB)
        #expect(transport.identity.product == "USB download gadget")
        let client = try await rig.fastboot(transport)
        #expect(try await client.getvar("serialno") == rig.board.configuration.serial)
        #expect(try await client.getvar("mmcdev") == "1")
        #expect(try await client.getvar("gptstat") == "ok")
        #expect(try await client.getvar("max-download-size") == "0x00004000")
        let rootfs = try #require(device.partitions.first { $0.line.name == "rootfs" })
        #expect(
            try await client.getvar("partition-size:rootfs")
                == "0x" + String(format: "%016llx", rootfs.size ?? 0))
        await #expect(throws: FastbootFailure.self) { _ = try await client.getvar("partition-size:nothing") }

        let files = try TestLayouts.files(for: TestLayouts.eMMC)
        for partition in device.partitions.sorted(by: { $0.line.id < $1.line.id }) {
            let data = try #require(files[partition.line.id])
            let name = partition.hardwarePartition.map { "mmc1boot\($0 - 1)" } ?? partition.line.name
            let splitter = try SparseSplitter(source: MemoryByteSource(data), maxPieceBytes: 16 << 10)
            var pieces = 0
            while let piece = try splitter.next() {
                pieces += 1
                _ = try await client.run(.download(UInt32(piece.count)), data: piece)
                _ = try await client.run(.flash(name))
            }
            #expect(pieces >= 1)
            let stored = try rig.board.storage.read(
                device: "mmc1", hardwarePartition: partition.hardwarePartition, offset: partition.offset,
                length: data.count)
            #expect(stored == data, "\(name)")
        }
        _ = try await client.run(.oem("bootbus: 0 0 0"))
        _ = try await client.run(.oem("partconf: 1 1"))
        #expect(rig.board.mmcBootSettings[1]?["partconf"] == ["1", "1", "0"])
        #expect(rig.board.mmcBootSettings[1]?["bootbus"] == ["0", "0", "0"])

        // The GPT the script wrote, as sfdisk reads it.
        let listing = try ExternalTool("sfdisk", package: "fdisk").run([
            "--dump", rig.board.storage.path(device: "mmc1"),
        ])
        #expect(listing.status == 0)
        for partition in device.partitions where partition.gptNumber != nil {
            #expect(listing.standardOutput.contains("name=\"\(partition.line.name)\""))
        }
        #expect(listing.standardOutput.contains("uuid=491F6117-415D-4F53-88C9-6E0DE54DEAC6"))

        // reboot: OKAY first, then the ROM (boot pins on USB).
        _ = try await client.run(.reboot)
        let rom = try #require(try await rig.next())
        #expect(rom.identity.product?.hasPrefix("DFU in HS Mode") == true)
    }

    @Test func failsLikeUBoot() async throws {
        let rig = try BoardRig.smallBuffer { $0.fastboot.maxDownloadSize = 4096 }
        let uboot = try #require(try await rig.bootToUBoot())
        // No GPT written: no partition to find by name.
        let transport = try #require(try await rig.sendScript("fastboot usb 0", to: uboot))
        let client = try await rig.fastboot(transport)
        await #expect {
            _ = try await client.run(.download(8192), data: MemoryByteSource([UInt8](repeating: 1, count: 8192)))
        } throws: { ($0 as? FastbootFailure)?.reason == "00002000" }
        _ = try await client.run(.download(16), data: MemoryByteSource([UInt8](repeating: 1, count: 16)))
        await #expect { _ = try await client.run(.flash("rootfs")) } throws: {
            ($0 as? FastbootFailure)?.reason == "no such partition"
        }
        await #expect { _ = try await client.run(.oem("format")) } throws: {
            ($0 as? FastbootFailure)?.reason == "partitions not set"
        }
        await #expect { _ = try await client.run(.getvar("gptstat")) } throws: {
            ($0 as? FastbootFailure)?.reason == "Variable not implemented"
        }
        // `continue`: the gadget leaves, U-Boot sits at its prompt, nothing enumerates.
        _ = try await client.run(.continueBoot)
        #expect(try await rig.next(within: .seconds(10)) == nil)
    }

    @Test func shellSubset() async throws {
        let rig = try BoardRig.smallBuffer()
        let uboot = try #require(try await rig.bootToUBoot())
        let script =
            "env set a \"x;y\"; if test \"${a}\" = \"x;y\" && false; then env set r then; else env set r else; fi; "
            + "setenv b $a; frobnicate || env set c fallback; fastboot usb 0"
        let transport = try #require(try await rig.sendScript(script, to: uboot))
        let client = try await rig.fastboot(transport)
        #expect(try await client.getvar("serialno") == rig.board.configuration.serial)
        #expect(rig.board.ubootEnv["a"] == "x;y")
        #expect(rig.board.ubootEnv["r"] == "else")
        #expect(rig.board.ubootEnv["b"] == "x;y")
        #expect(rig.board.ubootEnv["c"] == "fallback")
        #expect(rig.board.consoleLog.contains("Unknown command 'frobnicate' - try 'help'"))
    }
}
