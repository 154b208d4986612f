import DFU
import Testing

@Suite("Alternate names (§3)")
struct AlternateNameTests {
    @Test(
        "ROM/TF-A spelling: space before the slash, upper-case hex",
        arguments: [
            ("@FSBL /0x01/1*1Me", "FSBL", UInt8(0x01), UInt64(1 << 20), Character("M"), Character("e")),
            ("@virtual /0xF1/1*512Ba", "virtual", 0xF1, 512, "B", "a"),
            ("@Partition3 /0x03/1*16Me", "Partition3", 0x03, 16 << 20, "M", "e"),
            ("@DDR FIP /0x02/1*32Ke", "DDR FIP", 0x02, 32 << 10, "K", "e"),
        ])
    func romSpelling(text: String, name: String, id: UInt8, size: UInt64, unit: Character, access: Character) throws {
        let parsed = try #require(DFUAlternateName.parse(text))
        #expect(parsed.name == name)
        #expect(parsed.phaseID == id)
        #expect(parsed.size == size)
        #expect(parsed.unit == unit)
        #expect(parsed.access == access)
        #expect(parsed.formatted(style: .romOrTFA) == text)
    }

    @Test(
        "U-Boot spelling: no space, lower-case hex",
        arguments: [
            ("@fsbl1/0x04/1*256Ke", "fsbl1", UInt8(0x04), UInt64(256 << 10)),
            ("@virtual/0xf1/1*512Be", "virtual", 0xF1, 512),
            ("@OTP/0xf2/1*776Be", "OTP", 0xF2, 776),
            ("@rootfs/0x11/1*3G" + "e", "rootfs", 0x11, 3 << 30),
        ])
    func ubootSpelling(text: String, name: String, id: UInt8, size: UInt64) throws {
        let parsed = try #require(DFUAlternateName.parse(text))
        #expect(parsed.name == name)
        #expect(parsed.phaseID == id)
        #expect(parsed.size == size)
        #expect(parsed.formatted(style: .uboot) == text)
    }

    @Test("hex is case-insensitive and the ID is what keys an alternate")
    func hexCase() {
        #expect(DFUAlternateName.parse("@virtual /0xf1/1*512Ba")?.phaseID == 0xF1)
        #expect(DFUAlternateName.parse("@virtual/0XF1/1*512Be")?.phaseID == 0xF1)
        #expect(DFUAlternateName.parse("@x/0xAb/1*1Ka")?.phaseID == 0xAB)
    }

    @Test("U-Boot's unit rule is 'strictly greater': 1 MiB is written 1024K, 1 KiB is 1024B")
    func ubootUnitRule() {
        #expect(
            DFUAlternateName(name: "p", phaseID: 0x10, byteSize: 1 << 20, access: "e").formatted(style: .uboot)
                == "@p/0x10/1*1024Ke")
        #expect(
            DFUAlternateName(name: "p", phaseID: 0x10, byteSize: 1024, access: "a").formatted(style: .uboot)
                == "@p/0x10/1*1024Ba")
        #expect(
            DFUAlternateName(name: "p", phaseID: 0x10, byteSize: (1 << 20) + 1, access: "e").formatted(style: .uboot)
                == "@p/0x10/1*1Me")
        // Truncating division, as U-Boot's u32 arithmetic.
        #expect(
            DFUAlternateName(name: "p", phaseID: 0x10, byteSize: (3 << 30) - 1, access: "e").formatted(style: .uboot)
                == "@p/0x10/1*2Ge")
        // The ROM spelling of the same entity keeps its written unit.
        #expect(DFUAlternateName.parse("@FSBL /0x01/1*1Me")?.formatted(style: .uboot) == "@FSBL/0x01/1*1024Ke")
    }

    @Test(
        "malformed strings are rejected",
        arguments: [
            "FSBL /0x01/1*1Me", "@/0x01/1*1Me", "@FSBL /01/1*1Me", "@FSBL /0x/1*1Me", "@FSBL /0x100/1*1Me",
            "@FSBL /0x01/1*1Xe", "@FSBL /0x01/1*1M", "@FSBL /0x01/1*Me", "@FSBL /0x01/11Me", "@FSBL /0x01/1*1Mz", "",
        ])
    func malformed(text: String) {
        #expect(DFUAlternateName.parse(text) == nil)
    }

    @Test("an alternate without a parsable string has no name")
    func alternateWithoutName() {
        #expect(DFUAlternate(interface: 0, alternateSetting: 2, string: "UNKNOWN").name == nil)
        #expect(DFUAlternate(interface: 0, alternateSetting: 2, string: nil).name == nil)
        #expect(DFUAlternate(interface: 0, alternateSetting: 1, string: "@FSBL /0x01/1*1Me").name?.phaseID == 0x01)
    }
}

@Suite("GetPhase replies (§4.2)")
struct GetPhaseReplyTests {
    @Test("TF-A MP1 before any data: phase 3 at 0xC7000000, 9 bytes")
    func tfaPhase3() throws {
        let reply = try GetPhaseReply(bytes: [0x03, 0x00, 0x00, 0x00, 0xC7, 0x00, 0x00, 0x00, 0x00])
        #expect(reply.phase == 0x03)
        #expect(reply.address == 0xC700_0000)
        #expect(reply.offset == 0)
        #expect(!reply.needsDetach)
        #expect(reply.message == nil)
        #expect(reply.bytes == [0x03, 0x00, 0x00, 0x00, 0xC7, 0x00, 0x00, 0x00, 0x00])
    }

    @Test("phase 0 with the 10th byte = 1 asks for DETACH; = 0 or absent does not")
    func detachByte() throws {
        let asks = try GetPhaseReply(bytes: [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0x01])
        #expect(asks.needsDetach)
        #expect(asks.address == 0xFFFF_FFFF)
        #expect(asks.bytes.count == 10)
        let ubootNoLayout = try GetPhaseReply(bytes: [0x00, 0x00, 0x00, 0x00, 0xC2, 0, 0, 0, 0, 0x00])
        #expect(!ubootNoLayout.needsDetach)
        #expect(ubootNoLayout.hasDetachByte)
        #expect(ubootNoLayout.bytes == [0x00, 0x00, 0x00, 0x00, 0xC2, 0, 0, 0, 0, 0x00])
        let nine = try GetPhaseReply(bytes: [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0])
        #expect(!nine.needsDetach)
        #expect(nine.bytes.count == 9)
    }

    @Test("the 10th byte means nothing outside phase 0")
    func detachByteOnlyInPhaseZero() throws {
        let reply = try GetPhaseReply(bytes: [0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0x01])
        #expect(!reply.needsDetach)
    }

    @Test("0xFF carries an ASCII message after 9 bytes")
    func errorMessage() throws {
        let text = "FIP Header check failed for phase 3"
        let reply = try GetPhaseReply(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0] + Array(text.utf8))
        #expect(reply.phase == 0xFF)
        #expect(reply.message == text)
        #expect(reply.bytes.count == 9 + text.utf8.count)
    }

    @Test("offsets are little-endian")
    func littleEndian() throws {
        let reply = try GetPhaseReply(bytes: [0x12, 0x78, 0x56, 0x34, 0x12, 0x04, 0x03, 0x02, 0x01])
        #expect(reply.address == 0x1234_5678)
        #expect(reply.offset == 0x0102_0304)
    }

    @Test("a reply shorter than 9 bytes is malformed")
    func short() {
        #expect(throws: DFUError.self) { try GetPhaseReply(bytes: [0x03, 0, 0, 0]) }
    }
}

@Suite("Descriptors and status (§1.1, §2.2)")
struct DescriptorTests {
    @Test("TF-A functional descriptor 09 21 0F FF 00 00 04 10 01")
    func tfaFunctional() throws {
        let bytes: [UInt8] = [0x09, 0x21, 0x0F, 0xFF, 0x00, 0x00, 0x04, 0x10, 0x01]
        let descriptor = try #require(DFUFunctionalDescriptor(bytes: bytes))
        #expect(descriptor.attributes == 0x0F)
        #expect(descriptor.detachTimeoutMS == 255)
        #expect(descriptor.transferSize == 1024)
        #expect(descriptor.dfuVersion == 0x0110)
        #expect(descriptor.bytes == bytes)
    }

    @Test("U-Boot functional descriptor 09 21 0F 00 00 00 10 10 01")
    func ubootFunctional() throws {
        let bytes: [UInt8] = [0x09, 0x21, 0x0F, 0x00, 0x00, 0x00, 0x10, 0x10, 0x01]
        let descriptor = try #require(DFUFunctionalDescriptor(bytes: bytes))
        #expect(descriptor.transferSize == 4096)
        #expect(descriptor.detachTimeoutMS == 0)
        #expect(!descriptor.isDfuSe)
        #expect(descriptor.bytes == bytes)
    }

    @Test("DfuSe version and DFU 1.0 (7 bytes)")
    func versions() throws {
        #expect(
            DFUFunctionalDescriptor(bytes: [0x09, 0x21, 0x0B, 0xFF, 0x00, 0x00, 0x04, 0x1A, 0x01])?.isDfuSe == true)
        let old = try #require(DFUFunctionalDescriptor(bytes: [0x07, 0x21, 0x03, 0x10, 0x00, 0x00, 0x02]))
        #expect(old.dfuVersion == 0x0100)
        #expect(old.transferSize == 512)
        #expect(DFUFunctionalDescriptor(bytes: [0x09, 0x04, 0, 0, 0, 0, 0, 0, 0]) == nil)
    }

    @Test("GETSTATUS record: 24-bit little-endian poll timeout in ms")
    func statusRecord() throws {
        let reply = try #require(DFUStatusReply(bytes: [0x00, 0x10, 0x27, 0x00, 0x04, 0x00]))
        #expect(reply.pollTimeout == .milliseconds(10_000))
        #expect(reply.state == .dnBusy)
        #expect(reply.bytes == [0x00, 0x10, 0x27, 0x00, 0x04, 0x00])
        #expect(DFUStatusReply(bytes: [0x0E, 0, 0, 0, 0x0A, 0])?.state == .error)
        #expect(DFUStatusReply(bytes: [0x00, 0, 0, 0, 0x0B, 0]) == nil)
        #expect(DFUStatusReply(bytes: [0x00, 0, 0, 0, 0x02]) == nil)
    }
}
