import Foundation
import Testing

@testable import FlashLayout

let sdLayout = """
    #Opt\tId\tName\tType\tIP\tOffset\tBinary
    -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\ttf-a.stm32
    -\t0x03\tfip-boot\tFIP\tnone\t0x0\tfip.bin
    P\t0x04\tfsbl1\tBinary\tmmc0\t0x00004400\tfsbl.stm32
    P\t0x05\tfsbl2\tBinary\tmmc0\t0x00044400\tfsbl.stm32
    P\t0x06\tfip-a\tFIP\tmmc0\t0x00084400\tfip.bin
    PED\t0x07\tfip-b\tFIP\tmmc0\t0x00484400\tnone
    P\t0x10\tbootfs\tSystem\tmmc0\t0x00884400\tbootfs.ext4
    P\t0x12\trootfs\tFileSystem\tmmc0\t0x04884400\trootfs.ext4
    P\t0x11\tvendorfs\tFileSystem\tmmc0\t0x02884400\tvendorfs.ext4

    """

func checked(_ text: String) throws -> [LayoutLine] {
    let result = LayoutChecker.check(bytes: Array(text.utf8), path: "t.tsv", options: .init(layoutOnly: true))
    try #require(!result.hasErrors, "\(result.diagnostics)")
    return result.lines
}

@Suite("phase 0x00 payload")
struct PayloadTests {
    @Test("six TAB-joined columns, LF, no comments, behind an STM32 header v1")
    func bytes() throws {
        let payload = LayoutPayload.normalized(
            try checked("#c\n-\t1\tfsbl-boot\tBinary\tnone\t0\tf\r\nP\t0x4\tfsbl1\tBinary\t\tmmc0\t0x4400\tg\t\n"))
        let expectedText = "-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\nP\t0x04\tfsbl1\tBinary\tmmc0\t0x4400\n"
        #expect(payload.text == Array(expectedText.utf8))
        #expect(payload.bytes.count == 256 + expectedText.utf8.count)
        #expect(Array(payload.bytes[0..<4]) == [0x53, 0x54, 0x4D, 0x32])
        let sum = expectedText.utf8.reduce(UInt32(0)) { $0 &+ UInt32($1) }
        #expect(
            Array(payload.bytes[68..<72]) == [
                UInt8(sum & 0xFF), UInt8(sum >> 8 & 0xFF), UInt8(sum >> 16 & 0xFF), UInt8(sum >> 24),
            ])
        #expect(Array(payload.bytes[72..<76]) == [0x00, 0x00, 0x01, 0x00])
        #expect(Array(payload.bytes[76..<80]) == [UInt8(expectedText.utf8.count), 0, 0, 0])
        #expect(Array(payload.bytes[100..<104]) == [0x01, 0x00, 0x00, 0x00])
        let zeroRanges = [4..<68, 80..<100, 104..<256]
        for range in zeroRanges { #expect(payload.bytes[range].allSatisfy { $0 == 0 }, "\(range)") }
        #expect(payload.sourceLines == [2, 3])
        #expect(payload.sourceLine(forPayloadLine: 2) == 3)
    }
}

@Suite("partition plan")
struct PlanTests {
    @Test("sizes from the next offset, last one to (LBA − 35) × 512, GPT numbers by offset")
    func sdCard() throws {
        let plan = try PartitionPlanner.plan(
            try checked(sdLayout), options: PlanOptions(deviceSizes: ["mmc0": 8 << 30])
        ).get()
        let device = try #require(plan.devices.first)
        #expect(device.writesGPT)
        #expect(
            device.partitions.map(\.line.name) == ["fsbl1", "fsbl2", "fip-a", "fip-b", "bootfs", "vendorfs", "rootfs"])
        #expect(device.partitions.map(\.gptNumber) == [1, 2, 3, 4, 5, 6, 7])
        #expect(device.partitions[0].size == 0x40000)
        #expect(device.partitions[5].size == 0x0200_0000)
        let lastUsable: UInt64 = ((8 << 30) / 512 - 35) * 512
        #expect(device.partitions[6].size == lastUsable - 0x0488_4400)
        #expect(device.partitions[6].gptUniqueGUID == "E91C4E10-16E6-4C0E-BD0E-77BECF4A3582")
        #expect(device.partitions[2].gptUniqueGUID == "4FD84C93-54EF-463F-A7EF-AE25FF887087")
        #expect(device.partitions[3].gptUniqueGUID == "09C54952-D5BF-45AF-ACEE-335303766FB3")
        #expect(device.partitions[4].bootable)
        #expect(device.partitions[0].gptTypeGUID == GPTTypes.linuxReserved)
        #expect(device.partitions[4].gptTypeGUID == GPTTypes.linuxData)
        #expect(device.partitions[0].altName == "@fsbl1/0x04/1*256Ke")
        #expect(device.partitions[3].altName == "@fip-b/0x07/1*4Ma")
        #expect(device.partitions[6].altName.hasPrefix("@rootfs/0x12/1*"))
        #expect(plan.requestOrder == [0x04, 0x05, 0x06, 0x10, 0x11, 0x12])
        #expect(plan.bootStages.map(\.line.id) == [1, 3])
    }

    @Test("unknown device size leaves the last size unknown and says so")
    func unknownSize() throws {
        let plan = try PartitionPlanner.plan(try checked(sdLayout)).get()
        #expect(plan.devices[0].partitions.last?.size == nil)
        #expect(plan.notes.contains { $0.contains("--device-size mmc0=SIZE") })
    }

    @Test("eMMC: boot2 then boot1 first, 512 KiB alignment, boot partitions outside the GPT")
    func eMMC() throws {
        let text = """
            -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tf
            P\t0x04\tfsbl1\tBinary\tmmc1\tboot1\tf
            P\t0x05\tfsbl2\tBinary\tmmc1\tboot2\tf
            P\t0x06\tfip\tFIP\tmmc1\t0x00080000\tf
            P\t0x10\trootfs\tFileSystem\tmmc1\t0x00480000\tf

            """
        let plan = try PartitionPlanner.plan(try checked(text), options: PlanOptions(deviceSizes: ["mmc1": 4 << 30]))
            .get()
        let device = plan.devices[0]
        #expect(device.partitions.map(\.line.name) == ["fsbl2", "fsbl1", "fip", "rootfs"])
        #expect(device.partitions.map(\.hardwarePartition) == [2, 1, nil, nil])
        #expect(device.partitions.map(\.gptNumber) == [nil, nil, 1, 2])
        #expect(device.partitions[0].size == 4 << 20)
        #expect(device.partitions[3].size == ((4 << 30) / 512 - 1024) * 512 - 0x0048_0000)
        #expect(device.partitions[3].gptUniqueGUID == "491F6117-415D-4F53-88C9-6E0DE54DEAC6")
    }

    @Test("a non-P line means a partial update: no GPT")
    func partialUpdate() throws {
        let text = sdLayout.replacingOccurrences(of: "P\t0x12\trootfs", with: "-\t0x12\trootfs")
        let plan = try PartitionPlanner.plan(try checked(text)).get()
        #expect(!plan.devices[0].writesGPT)
        #expect(plan.devices[0].partitions.allSatisfy { $0.gptTypeGUID == nil })
        #expect(plan.notes.contains { $0.contains("partial update") })
        #expect(!plan.requestOrder.contains(0x12))
    }

    @Test(
        "U-Boot's device errors, in its words",
        arguments: [
            (
                "P\t0x04\ta\tBinary\tmmc0\t0x4400\tf\nP\t0x05\tb\tBinary\tmmc0\t0x4400\tf\n",
                "a (0x4): same address : 0x4400 == b (0x5): 0x4400"
            ),
            ("P\t0x04\ta\tBinary\tmmc0\t0x4000\tf\n", "a (0x4): invalid address 0x4000 (min=0x4400)"),
            ("P\t0x04\ta\tBinary(2)\tmmc0\t0x4400\tf\n", "a (0x4): multiple binary 2 not supported"),
            (
                "P\t0x04\tfsbl1\tBinary(2)\tnand0\t0x1000\tf\n",
                "fsbl1 (0x4): not aligned address : 0x1000 on erase size 0x40000"
            ),
            ("P\t0x04\ta\tBinary\tmmc0\t0x300000000\tf\n", "a (0x4): invalid address 0x300000000 (max=0xffffba00)"),
        ])
    func deviceErrors(text: String, message: String) throws {
        // check reports the geometry-independent ones itself (errors); the planner must agree.
        let lines = LayoutChecker.check(bytes: Array((fsblLine + text).utf8), path: "t.tsv").lines
        let plan = PartitionPlanner.plan(lines, options: PlanOptions(deviceSizes: ["mmc0": 4 << 30]))
        #expect(plan.failure?.message == message)
    }

    @Test("NAND Binary(2) on an fsbl line below 0x10 is accepted")
    func nandCopies() throws {
        let plan = PartitionPlanner.plan(try checked(fsblLine + "P\t0x04\tfsbl1\tBinary(2)\tnand0\t0x0\tf\n"))
        #expect(plan.failure == nil)
    }
}

@Suite("byte sizes")
struct ByteSizeTests {
    @Test(
        "parse",
        arguments: [
            ("8GiB", UInt64(8) << 30), ("512KiB", 512 << 10), ("4G", 4 << 30), ("0x80000", 0x80000), ("1000", 1000),
            ("2 MiB", 2 << 20), ("8GB", 8_000_000_000), ("16MB", 16_000_000), ("4KB", 4000), ("1TB", 1_000_000_000_000),
            ("1TiB", 1 << 40),
        ])
    func parse(text: String, value: UInt64) { #expect(ByteSize.parse(text) == value) }

    @Test("reject", arguments: ["", "G", "12Q", "0x", "99999999999999999999"])
    func reject(text: String) { #expect(ByteSize.parse(text) == nil) }

    @Test("format")
    func format() {
        #expect(ByteSize.format(512) == "512 B")
        #expect(ByteSize.format(256 << 10) == "256 KiB")
        #expect(ByteSize.format(3 << 29) == "1.5 GiB")
    }
}
