import DFU
import Testing
import USBModel
import VirtualBoard
import VirtualBoardTestSupport

@Suite("USB identities of each stage, byte-exact (§2, §3, §A.2, §B.1, §C.3)")
struct IdentityTests {
    /// Device descriptor fields every stage shares (§2.1).
    func expectCommonDescriptor(_ device: DFUDevice) {
        let descriptor = device.deviceDescriptor
        #expect(descriptor.vendorID == 0x0483)
        #expect(descriptor.productID == 0xDF11)
        #expect(descriptor.bcdDevice == 0x0200)
        #expect(descriptor.bcdUSB == 0x0200)
        #expect(descriptor.maxPacketSize0 == 64)
        #expect([descriptor.manufacturerIndex, descriptor.productIndex, descriptor.serialNumberIndex] == [1, 2, 3])
        #expect(device.identity.manufacturer == "STMicroelectronics")
        #expect(device.identity.serial == "0029002A4C4250110038344D")
    }

    func configuration(_ device: DFUDevice) async throws -> ConfigurationDescriptor {
        try await device.transport.configurationDescriptor()
    }

    @Test("MP15 ROM: six alternates, FSBL at alt 1, DFU class FE/01/02, functional descriptor after the last alt")
    func romMP15() async throws {
        let rig = try BoardRig.smallBuffer()
        let rom = try await rig.open()
        expectCommonDescriptor(rom)
        #expect(rom.identity.product == "DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000")
        #expect(
            rom.alternates.map(\.string) == [
                "@Partition0 /0x00/1*256Ke", "@FSBL /0x01/1*1Me", "@Partition2 /0x02/1*1Me", "@Partition3 /0x03/1*16Me",
                "@Partition4 /0x04/1*16Me", "@virtual /0xF1/1*512Ba",
            ])
        #expect(rom.alternate(forPhase: 0x01)?.alternateSetting == 1)
        let config = try await configuration(rom)
        #expect(
            config.interfaces.allSatisfy {
                $0.interfaceClass == 0xFE && $0.interfaceSubClass == 0x01 && $0.interfaceProtocol == 0x02
            })
        #expect(config.interfaces.last?.extra == [[0x09, 0x21, 0x0F, 0xFF, 0x00, 0x00, 0x04, 0x10, 0x01]])
        #expect(config.interfaces.dropLast().allSatisfy { $0.extra.isEmpty })
        #expect(try await rom.getPhase().phase == 0x01)
    }

    @Test("ROM on a full-speed link says FS Mode; MP13 ROM has FSBL at alt 0 and virtual where configured")
    func romVariants() async throws {
        let fullSpeed = try BoardRig.smallBuffer { $0.speed = .full }
        #expect(try await fullSpeed.open().identity.product == "DFU in FS Mode @Device ID /0x500, @Revision ID /0x0000")
        let mp13 = try BoardRig.smallBuffer {
            $0.soc = .mp13
            $0.romVirtualAlternate = 3
        }
        let rom = try await mp13.open()
        #expect(rom.identity.product == "DFU in HS Mode @Device ID /0x501, @Revision ID /0x1003")
        #expect(rom.alternate(forPhase: 0x01)?.alternateSetting == 0)
        #expect(rom.alternate(forPhase: 0xF1)?.alternateSetting == 3)
        #expect(rom.alternates[3].string == "@virtual /0xF1/1*512Ba")
    }

    @Test("TF-A MP13: SSBL and virtual, iInterface = 6 + alt, product with @Name")
    func tfaMP13() async throws {
        let rig = try BoardRig.smallBuffer { $0.soc = .mp13 }
        let rom = try await rig.open()
        _ = try await rom.download(MemoryByteSource(SampleImages.fsbl(for: .mp13)), phase: 0x01)
        _ = try await rom.getPhase()
        try await rom.detach()
        let tfa = try #require(try await rig.next())
        expectCommonDescriptor(tfa)
        #expect(tfa.identity.product == "DFU @Device ID /0x501, @Revision ID /0x1003, @Name /STM32MP135FAF Rev.Y,")
        #expect(tfa.alternates.map(\.string) == ["@SSBL /0x03/1*16Me", "@virtual /0xF1/1*512Ba"])
        let config = try await configuration(tfa)
        #expect(config.interfaces.map(\.interfaceStringIndex) == [6, 7])
        #expect(try await tfa.transport.string(index: 4) == "DFU Config")
        #expect(try await tfa.transport.string(index: 5) == "DFU Interface")
        #expect(tfa.functional.bytes == [0x09, 0x21, 0x0F, 0xFF, 0x00, 0x00, 0x04, 0x10, 0x01])
        #expect(try await tfa.getPhase().bytes == [0x03, 0x00, 0x00, 0x00, 0xC7, 0x00, 0x00, 0x00, 0x00])
    }

    @Test("TF-A MP25: DDR FIP, FIP, virtual; GetPhase 02 00 00 00 0E 00 00 00 00 before the DDR firmware")
    func tfaMP25() async throws {
        let rig = try BoardRig.smallBuffer { $0.soc = .mp25 }
        let rom = try await rig.open()
        #expect(rom.identity.product == "DFU in HS Mode @Device ID /0x505, @Revision ID /0x2000")
        _ = try await rom.download(MemoryByteSource(SampleImages.fsbl(for: .mp25)), phase: 0x01)
        _ = try await rom.getPhase()
        try await rom.detach()
        let tfa = try #require(try await rig.next())
        #expect(
            tfa.alternates.map(\.string) == ["@DDR FIP /0x02/1*32Ke", "@FIP /0x03/1*16Me", "@virtual /0xF1/1*512Ba"])
        #expect(try await tfa.getPhase().bytes == [0x02, 0x00, 0x00, 0x00, 0x0E, 0x00, 0x00, 0x00, 0x00])
        // GetPhase's address is TF-A's write pointer.
        _ = try await tfa.download(MemoryByteSource(SampleImages.fip(payloadSize: 944)), phase: 0x02)
        #expect(try await tfa.getPhase().bytes == [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0x01])
    }

    @Test("U-Boot enumeration 1: FlashLayout, virtual, OTP, PMIC; U-Boot functional descriptor and product")
    func ubootEnumeration1() async throws {
        let rig = try BoardRig.smallBuffer()
        let uboot = try #require(try await rig.bootToUBoot())
        expectCommonDescriptor(uboot)
        #expect(
            uboot.identity.product
                == "USB download gadget@Device ID /0x500, @Revision ID /0x2000, @Name /STM32MP157CAA Rev.B,")
        #expect(
            uboot.alternates.map(\.string) == [
                "@FlashLayout/0x00/1*256Ke", "@virtual/0xf1/1*512Be", "@OTP/0xf2/1*776Be", "@PMIC/0xf4/1*8Be",
            ])
        #expect(uboot.functional.bytes == [0x09, 0x21, 0x0F, 0x00, 0x00, 0x00, 0x10, 0x10, 0x01])
        #expect(try await uboot.getPhase().bytes == [0x00, 0x00, 0x00, 0x00, 0xC2, 0, 0, 0, 0, 0x00])
        let otp = try await uboot.upload(phase: 0xF2, length: 776)
        #expect(otp.count == 776)
        #expect(otp.prefix(4) == [2, 0, 0, 0])
        #expect(rig.board.enumerationCount == 2)
    }

    @Test("U-Boot without OTP/PMIC; MP25 OTP is 2952 bytes and the load address 0x84000000")
    func ubootOptions() async throws {
        let bare = try BoardRig.smallBuffer {
            $0.otpEnabled = false
            $0.pmicEnabled = false
        }
        let plain = try #require(try await bare.bootToUBoot())
        #expect(plain.alternates.map(\.string) == ["@FlashLayout/0x00/1*256Ke", "@virtual/0xf1/1*512Be"])
        let mp25 = try BoardRig.smallBuffer { $0.soc = .mp25 }
        let uboot = try #require(try await mp25.bootToUBoot())
        #expect(uboot.alternate(forPhase: 0xF2)?.string == "@OTP/0xf2/1*2952Be")
        #expect(try await uboot.getPhase().address == 0x8400_0000)
        #expect(uboot.identity.product?.hasPrefix("USB download gadget@Device ID /0x505, @Revision ID /0x2000") == true)
    }

    @Test("the serial is the same 24 upper-case hex digits in every stage")
    func serialStable() async throws {
        let rig = try BoardRig.smallBuffer()
        let rom = try await rig.open()
        let uboot = try #require(try await rig.bootToUBoot())
        #expect(rom.identity.serial == uboot.identity.serial)
        let serial = try #require(uboot.identity.serial)
        #expect(serial.count == 24 && serial.allSatisfy { $0.isHexDigit && !$0.isLowercase })
    }
}
