import Testing

@testable import FlashLayout

@Suite("U-Boot's number and field rules")
struct UBootFieldTests {
    @Test(
        "Ids are base 0: 0x hex, leading 0 octal, else decimal",
        arguments: [
            ("0x10", UInt8(0x10)), ("0X0a", 0x0A), ("0x1", 1), ("16", 16), ("010", 8), ("0", 0), ("0xF0", 0xF0),
            ("0x", 0),
        ])
    func ids(text: String, value: UInt8) throws {
        #expect(try UBootField.id(Array(text.utf8)).get() == value)
    }

    @Test("bad Ids are refused", arguments: ["0xF1", "09", "x1", "1a", "0x1g", "-1", "0x10000000000000000"])
    func badIDs(text: String) {
        #expect(UBootField.id(Array(text.utf8)).failure?.kind == .invalidPhase)
    }

    @Test("offsets are base 10 with the 0x fix-up: a leading 0 is not octal")
    func offsets() throws {
        #expect(try UBootField.offset(Array("010".utf8)).get() == .address(10))
        #expect(try UBootField.offset(Array("0x105984400".utf8)).get() == .address(0x1_0598_4400))
        #expect(try UBootField.offset(Array("boot2".utf8)).get() == .boot2)
        #expect(UBootField.offset(Array("0x12G".utf8)).failure?.kind == .invalidOffset)
        #expect(UBootField.offset(Array("bootX".utf8)).failure?.kind == .invalidPart)
    }

    @Test("options: '-' or P/E/D letters including P")
    func options() throws {
        #expect(try UBootField.option(Array("-".utf8)).get() == [])
        #expect(try UBootField.option(Array("PDE".utf8)).get() == [.select, .delete, .empty])
        #expect(try UBootField.option(Array("DP".utf8)).get() == [.select, .delete])
        #expect(UBootField.option(Array("ED".utf8)).failure?.kind == .missingSelect)
        #expect(UBootField.option(Array("-P".utf8)).failure?.kind == .invalidOption(UInt8(ascii: "-")))
        #expect(
            UBootField.option(Array("p".utf8)).failure?.ubootMessage(line: 4)
                == "Layout line 4: invalid option 'p' in p)")
    }

    @Test("IPs: one digit after mmc/nor/nand/spi-nand, any ram suffix")
    func ips() throws {
        #expect(try UBootField.ip(Array("spi-nand0".utf8)).get() == LayoutTarget(kind: .spiNand, index: 0))
        #expect(try UBootField.ip(Array("ram0".utf8)).get().kind == .ram)
        #expect(try UBootField.ip(Array("ramXYZ".utf8)).get().kind == .ram)
        for bad in ["mmc", "mmc10", "mmcA", "SDMMC1", "nand", "usb0"] {
            #expect(UBootField.ip(Array(bad.utf8)).failure?.kind == .ipError, "\(bad)")
        }
    }

    @Test("types: case-sensitive, Binary(n) needs parentheses")
    func types() throws {
        #expect(try UBootField.type(Array("Binary(2)".utf8)).get() == .binary(copies: 2))
        #expect(try UBootField.type(Array("FWU_MDATA".utf8)).get() == .fwuMetadata)
        for bad in ["binary", "Binary2", "Binary(2", "Empty", "fip"] {
            #expect(UBootField.type(Array(bad.utf8)).failure?.kind == .typeError, "\(bad)")
        }
    }

    @Test("names longer than 16 bytes are refused")
    func names() {
        #expect((try? UBootField.name(Array("sixteen-chars-ok".utf8)).get()) == "sixteen-chars-ok")
        #expect(UBootField.name(Array("seventeen-chars-x".utf8)).failure?.kind == .nameTooLong)
    }
}

@Suite("U-Boot's raw byte loop")
struct UBootRawParseTests {
    func parse(_ text: String) -> Result<[LayoutLine], UBootLayoutError> { UBootLayout.parse(Array(text.utf8)) }

    @Test("comments after leading TABs, blank and TAB-only lines, CRLF and no final newline")
    func lexical() throws {
        let text =
            "#Opt\tId\n\t#indented comment\n\n\t\t\n-\t0x01\tfsbl\tBinary\tnone\t0x0\tf\r\nP\t0x04\tfsbl1\tBinary\tmmc0\t0x4400"
        let lines = try parse(text).get()
        #expect(lines.map(\.id) == [1, 4])
        #expect(lines.map(\.line) == [5, 6])
        #expect(lines[0].binary == "f")
        #expect(lines[1].binary == nil)
    }

    @Test("a TAB before the newline swallows the next line's first field")
    func trailingTab() {
        let text = "-\t0x01\tfsbl\tBinary\tnone\t0x0\tf\t\nP\t0x04\tfsbl1\tBinary\tmmc0\t0x4400\tg\n"
        #expect(parse(text).failure?.message == "Layout line 2: invalid option '0' in 0x04)")
    }

    @Test("a TAB before the final newline drops the last row")
    func trailingTabLastLine() {
        #expect(parse("-\t0x01\tfsbl\tBinary\tnone\t0x0\tf\t\n").failure?.message == "Layout: no partition found")
    }

    @Test("a space before '#' is data, line numbers count comments")
    func spacedComment() {
        #expect(
            parse("#c\n #Opt\tId\tName\tType\tIP\tOffset\n").failure?.message
                == "Layout line 2: invalid option ' ' in  #Opt)")
    }

    @Test("an STM32 header is unwrapped and its checksum checked")
    func header() throws {
        let text = Array("-\t0x01\tfsbl\tBinary\tnone\t0x0\tf\n".utf8)
        var wrapped = STM32LayoutHeader.wrap(text)
        #expect(try UBootLayout.parse(wrapped).get().count == 1)
        wrapped[wrapped.count - 2] ^= 1
        #expect(UBootLayout.parse(wrapped).failure?.message.hasPrefix("Layout: invalid checksum : 0x") == true)
    }

    @Test("more than 240 rows counted U-Boot's way")
    func tooMany() {
        let text = String(repeating: "-\t0x01\tf\tBinary\tnone\t0x0\n", count: 240)
        #expect(parse(text).failure?.message == "Layout: too many partition (241)")
    }
}
