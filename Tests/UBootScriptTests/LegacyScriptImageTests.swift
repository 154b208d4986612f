import FlashLayout
import Foundation
import TestSupport
import Testing

@testable import UBootScript

@Suite struct LegacyScriptImageTests {
    let script = "env set partitions \"name=a,start=0x80000,size=0x1000;\"; fastboot usb 0 || stm32prog usb 0"

    @Test func matchesMkimageByteForByte() throws {
        let mkimage = try ExternalTool("mkimage", package: "u-boot-tools")
        let folder = try TemporaryDirectory()
        let text = folder.file("script.txt")
        try Data(script.utf8).write(to: URL(fileURLWithPath: text))
        // SOURCE_DATE_EPOCH=0 makes mkimage write ih_time 0, as we do.
        let result = try ExternalTool("env", package: "coreutils").run([
            "SOURCE_DATE_EPOCH=0", mkimage.executable, "-A", "arm", "-O", "linux", "-T", "script", "-C", "none", "-n",
            "stm32mp-flash fastboot", "-d", text, folder.file("reference.img"),
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let reference = Array(try Data(contentsOf: URL(fileURLWithPath: folder.file("reference.img"))))
        #expect(LegacyScriptImage(script: script).bytes == reference)
    }

    @Test func mkimageListsItAsAnARMScript() throws {
        let folder = try TemporaryDirectory()
        let image = LegacyScriptImage(script: script).bytes
        try Data(image).write(to: URL(fileURLWithPath: folder.file("s.img")))
        let listing = try ExternalTool("mkimage", package: "u-boot-tools").run(["-l", folder.file("s.img")])
        #expect(listing.status == 0)
        #expect(listing.standardOutput.contains("Image Type:   ARM Linux Script (uncompressed)"))
        #expect(listing.standardOutput.contains("Image 0: \(script.utf8.count) Bytes"))
        let dump = try ExternalTool("dumpimage", package: "u-boot-tools").run(["-l", folder.file("s.img")])
        #expect(dump.status == 0)
        #expect(dump.standardOutput.contains("Image Name:   stm32mp-flash fastboot"))
    }

    @Test func decodesWhatItEncodesAndChecksLikeUBoot() throws {
        let bytes = LegacyScriptImage(script: script).bytes
        #expect(try LegacyScriptImage.decode(bytes).script == script)
        #expect(LegacyScriptImage.isLegacyImage(bytes))
        var corruptData = bytes
        corruptData[corruptData.count - 1] ^= 1
        #expect(throws: LegacyImageError.badDataChecksum) { try LegacyScriptImage.decode(corruptData) }
        var corruptHeader = bytes
        corruptHeader[12] ^= 1
        #expect(throws: LegacyImageError.badHeaderChecksum) { try LegacyScriptImage.decode(corruptHeader) }
        #expect(throws: LegacyImageError.notLegacyImage) { try LegacyScriptImage.decode(Array("#Opt\tId".utf8)) }
    }

    @Test func refusesAnImageOfAnotherType() throws {
        let folder = try TemporaryDirectory()
        try Data("kernel".utf8).write(to: URL(fileURLWithPath: folder.file("k")))
        let made = try ExternalTool("mkimage", package: "u-boot-tools").run([
            "-A", "arm", "-O", "linux", "-T", "kernel", "-C", "none", "-a", "0", "-e", "0", "-d", folder.file("k"),
            folder.file("k.img"),
        ])
        #expect(made.status == 0)
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: folder.file("k.img"))))
        #expect(throws: LegacyImageError.notScript(type: 2)) { try LegacyScriptImage.decode(bytes) }
    }
}

@Suite struct HandoffScriptTests {
    func plan(_ layout: String, sizes: [String: UInt64]) throws -> PartitionPlan {
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: TestPaths.exampleLayouts + "/" + layout)))
        let lines = try UBootLayout.parse(bytes).get()
        return try PartitionPlanner.plan(lines, options: PlanOptions(deviceSizes: sizes)).get()
    }

    @Test func gptStringFollowsCreateGPTPartitions() throws {
        let plan = try plan("mp15-emmc.tsv", sizes: ["mmc1": 4 << 30])
        let device = try #require(plan.devices.first { $0.target.description == "mmc1" })
        let spec = try #require(GPTWriteSpec.partitions(device))
        let entries = spec.split(separator: ";").map(String.init)
        // Boot partitions are not in the GPT; every other line is, in offset order.
        #expect(
            entries.map { $0.split(separator: ",")[0] } == [
                "name=metadata1", "name=metadata2", "name=fip-a", "name=fip-b", "name=u-boot-env", "name=bootfs",
                "name=rootfs", "name=userfs",
            ])
        #expect(
            entries[2]
                == "name=fip-a,start=0x180000,size=0x200000,type=19D5DF83-11B0-457B-BE2C-7559C13142A5,uuid=4FD84C93-54EF-463F-A7EF-AE25FF887087"
        )
        // U-Boot's ENV type GUID (95BD), not the toolbox's 95DB typo.
        #expect(entries[4].contains("type=3DE21764-95BD-54BD-A5C3-4ABE786F38A8"))
        #expect(entries[5].hasSuffix(",bootable"))
        #expect(entries[6].contains("uuid=491F6117-415D-4F53-88C9-6E0DE54DEAC6"))
        #expect(spec.hasSuffix(";"))
        // The last partition ends where U-Boot's usable area ends (4 GiB minus one erase group).
        #expect(entries[7].contains("size=0x\(String((4 << 30) - 512 * 1024 - 0x0120_0000, radix: 16))"))
    }

    @Test func lastPartitionRunsToTheEndWhenTheSizeIsUnknown() throws {
        let plan = try plan("mp15-sdcard.tsv", sizes: [:])
        let device = try #require(plan.devices.first { $0.target.kind == .mmc })
        let spec = try #require(GPTWriteSpec.partitions(device))
        #expect(spec.split(separator: ";").last?.contains("size=-") == true)
    }

    @Test func scriptGuardsTheDeviceAndFallsBackToDFU() throws {
        let plan = try plan("mp13-sdcard.tsv", sizes: ["mmc0": 1 << 30])
        let device = try #require(plan.devices.first { $0.target.kind == .mmc })
        let script = HandoffScript(device: device)
        #expect(script.text.hasPrefix("env set partitions \"name="))
        #expect(script.text.contains("test \"${fastboot.mmcdev}\" = 0"))
        #expect(script.text.contains("gpt write mmc 0 \"${partitions}\""))
        #expect(script.text.hasSuffix("; fastboot usb 0; stm32prog usb 0"))
        #expect(try LegacyScriptImage.decode(script.image.bytes).script == script.text)
        #expect(!HandoffScript(device: device, fallbackToDFU: false).text.contains("stm32prog"))
    }
}

@Suite("HandoffScript with the CRC stage of --verify")
struct HandoffVerifyScriptTests {
    @Test("the stage runs only after a session that downloaded, and fastboot starts again for the results")
    func guardedByFilesize() {
        let stage = CRCReadbackStage(
            mmcIndex: 1, bufferAddress: 0x8400_0000,
            checks: [
                CRCReadbackStage.Check(
                    lineID: 0x10, hardwarePartition: 0, start: 0, length: 0x1000, deviceOffset: 0x10_0000),
                CRCReadbackStage.Check(lineID: 0x04, hardwarePartition: 1, start: 0, length: 0x200, deviceOffset: 0),
            ])
        let script = HandoffScript(mmcIndex: 1, partitions: "name=a,start=0x100000,size=-;", verify: stage)
        #expect(
            script.text.hasSuffix(
                "env set filesize; fastboot usb 0; if test -n \"${filesize}\"; then mmc dev 1 0; "
                    + "mmc read 84000000 800 8 && crc32 84000000 1000 84000000 && setexpr.l fastboot.vcrc0 *84000000; "
                    + "mmc dev 1 1; mmc read 84000000 0 1 && crc32 84000000 200 84000000 && setexpr.l fastboot.vcrc1 *84000000; "
                    + "mmc dev 1 0; fastboot usb 0; fi; stm32prog usb 0"))
        let plain = HandoffScript(mmcIndex: 1, partitions: nil)
        #expect(plain.text == "env set fastboot.gptstat kept; fastboot usb 0; stm32prog usb 0")
        #expect(CRCReadbackStage.crc(fromAnswer: "78563412") == 0x1234_5678)
        #expect(CRCReadbackStage.crc(fromAnswer: "nonsense") == nil)
    }
}
