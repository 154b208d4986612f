import DfuSe
import Testing

@Suite("DfuSe memory maps and MCU families")
struct MemoryMapTests {
    @Test("the F405 flash string gives 12 sectors of 16, 64 and 128 KiB, all readable, erasable, writable")
    func f4Flash() throws {
        let map = try #require(DfuSeMemoryMap("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg"))
        #expect(map.name == "Internal Flash")
        #expect(map.sectors.count == 12)
        #expect(map.sectors[4].address == 0x0801_0000 && map.sectors[4].size == 64 << 10)
        #expect(map.sectors[11].address == 0x080E_0000)
        #expect(map.end == 0x0810_0000)
        #expect(map.sectors.allSatisfy { $0.readable && $0.erasable && $0.writable })
    }

    @Test("byte units with a space before the access letter, and several groups (OTP of an F4)")
    func otpGroups() throws {
        let map = try #require(DfuSeMemoryMap("@OTP Memory /0x1FFF7800/01*512 e,01*016 e"))
        #expect(map.sectors.map(\.size) == [512, 16])
        #expect(map.sectors[1].address == 0x1FFF_7A00)
        #expect(map.sectors.allSatisfy { $0.readable && $0.writable && !$0.erasable })
    }

    @Test("several regions in one string, and read-only sectors of an application's DFU template")
    func regionsAndReadOnly() throws {
        let map = try #require(DfuSeMemoryMap("@Internal Flash   /0x08000000/03*016Ka,01*016Kg/0x08020000/01*128Kg"))
        #expect(map.sectors.count == 5)
        #expect(!map.sectors[0].writable && map.sectors[0].readable)
        #expect(map.sectors[4].address == 0x0802_0000)
        #expect(map.firstUncovered(0x0801_0000, length: 0x20000) == 0x0801_0000)
    }

    @Test(
        "names outside the grammar are not maps (`B` is no DfuSe unit)",
        arguments: ["@virtual /0xF1/1*512Ba", "DFU Interface", "@Flash//", "@Internal Flash /0x08000000/04*016Kz"])
    func notMaps(_ text: String) {
        #expect(DfuSeMemoryMap(text) == nil)
    }

    @Test("an STM32MP ROM alternate is valid DfuSe syntax but names no MCU family")
    func mpAlternateIsNoFamily() {
        #expect(DfuSeMemoryMap("@Partition0 /0x00/1*256Ke") != nil)
        #expect(MCUFamily.identify(alternates: ["@Partition0 /0x00/1*256Ke", "@FSBL /0x01/1*1Me"]) == nil)
    }

    @Test("formatting a family's map gives back the same sectors")
    func roundTrip() throws {
        for family in MCUFamily.all {
            let text = family.flash.formatted()
            #expect(DfuSeMemoryMap(text) == family.flash, "\(family.id): \(text)")
        }
    }

    @Test("families are recognised from their alternates; an F405 string is not an F746")
    func identify() {
        for family in MCUFamily.all {
            #expect(MCUFamily.identify(alternates: family.alternates)?.id == family.id)
        }
        let f405 = ["@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg", "@Option Bytes  /0x1FFFC000/01*016 e"]
        #expect(MCUFamily.identify(alternates: f405) == nil)
        #expect(MCUFamily.seriesName(flashString: f405[0]) == "STM32F405/407/415/417")
    }

    @Test("the USB device library serial: hex8(UID0 + UID2) then hex4(UID1 >> 16)")
    func serialRule() {
        // UID words 0x00280042, 0x32325115, 0x38303631 (little-endian bytes).
        let uid: [UInt8] = [0x42, 0x00, 0x28, 0x00, 0x15, 0x51, 0x32, 0x32, 0x31, 0x36, 0x30, 0x38]
        #expect(MCUFamily.usbdSerial(uid: uid) == "385836733232")
    }

    @Test("F1 option bytes: RDP 0xA5 is level 0; setting a field rewrites its complement")
    func optionBytes() throws {
        let rdp = try #require(MCUFamily.f105.optionBytes.first { $0.name == "RDP" })
        let block: [UInt8] = [
            0xA5, 0x5A, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00, 0xFF, 0x00,
        ]
        #expect(!rdp.isReadProtected(block))
        let protected = rdp.setting(0x00, in: block)
        #expect(protected[0] == 0x00 && protected[1] == 0xFF)
        #expect(rdp.isReadProtected(protected))
        #expect(rdp.describe(0x00).contains("level 1"))
    }
}
