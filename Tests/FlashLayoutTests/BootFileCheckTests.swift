import BootImages
import Foundation
import TestSupport
import Testing

@testable import FlashLayout

@Suite("check: boot files")
struct BootFileCheckTests {
    let directory: TemporaryDirectory

    init() throws { directory = try TemporaryDirectory() }

    func write(_ name: String, _ bytes: [UInt8]) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: directory.file(name)))
    }

    func check(_ layout: String) throws -> [LayoutDiagnostic] {
        try write("layout.tsv", Array(layout.utf8))
        return LayoutChecker.check(path: directory.file("layout.tsv")).diagnostics
    }

    var payload: [UInt8] { (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) } }

    @Test("a valid v1 FSBL and FIP give only notes")
    func valid() throws {
        try write("tf-a-usb.stm32", STM32ImageHeader.wrap(payload: payload, version: .v1))
        try write("fip.bin", FIPHeader(serialNumber: 0x1234).encoded() + payload)
        let found = try check(
            "-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\ttf-a-usb.stm32\n-\t0x03\tfip-boot\tFIP\tnone\t0x0\tfip.bin\n")
        #expect(found.allSatisfy { $0.severity == .note || $0.code == "type-too-new" }, "\(found)")
        #expect(
            found.contains { $0.code == "boot-image" && $0.message.contains("v1") && $0.message.contains("not signed") }
        )
    }

    @Test("a corrupted FSBL payload is an error")
    func checksum() throws {
        var image = STM32ImageHeader.wrap(payload: payload, version: .v1)
        image[image.count - 1] ^= 0xFF
        try write("tf-a-usb.stm32", image)
        let found = try check("-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\ttf-a-usb.stm32\n")
        #expect(
            found.contains {
                $0.code == "bad-boot-image" && $0.severity == .error && $0.message.contains("checksum") && $0.line == 1
                    && $0.column == 34
            })
    }

    @Test("an FSBL without STM32 header is an error")
    func noHeader() throws {
        try write("u-boot.bin", payload)
        let found = try check("-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tu-boot.bin\n")
        #expect(found.contains { $0.code == "bad-boot-image" && $0.message.contains("no STM32 header") })
    }

    @Test("a v1 FSBL in an MP2 layout (with a DDR FIP line) is an error")
    func wrongFamily() throws {
        try write("tf-a.stm32", STM32ImageHeader.wrap(payload: payload, version: .v1))
        try write("ddr.bin", FIPHeader(serialNumber: 1).encoded() + payload)
        let found = try check(
            "-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\ttf-a.stm32\n-\t0x02\tfip-ddr\tFIP\tnone\t0x0\tddr.bin\n")
        #expect(found.contains { $0.code == "bad-boot-image" && $0.message.contains("this layout is for STM32MP2") })
    }

    @Test("a storage TF-A as the USB boot stage is flagged")
    func storageBuild() throws {
        try write("tf-a-stm32mp157c-dk2-sdcard.stm32", STM32ImageHeader.wrap(payload: payload, version: .v1))
        let found = try check("-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\ttf-a-stm32mp157c-dk2-sdcard.stm32\n")
        #expect(
            found.contains {
                $0.code == "bad-boot-image" && $0.severity == .warning
                    && $0.message.contains("Boot interface 6 not supported")
            })
    }

    @Test("a FIP line whose file is not a FIP, or has serial 0, is an error")
    func badFIP() throws {
        try write("notfip.bin", payload)
        try write("zero.bin", FIPHeader(serialNumber: 0).encoded() + payload)
        let found = try check(
            "-\t0x01\tfsbl\tBinary\tnone\t0x0\tnone\nP\t0x06\tfip-a\tFIP\tmmc0\t0x4400\tnotfip.bin\nP\t0x07\tfip-b\tFIP\tmmc0\t0x84400\tzero.bin\n"
        )
        #expect(found.contains { $0.code == "bad-fip" && $0.line == 2 && $0.message.contains("not a FIP") })
        #expect(found.contains { $0.code == "bad-fip" && $0.line == 3 && $0.message.contains("serial 0") })
    }

    @Test("a file larger than its partition is an error")
    func tooLargeForPartition() throws {
        try write("big.bin", [UInt8](repeating: 1, count: 0x40001))
        let found = try check(
            "-\t0x01\tfsbl\tBinary\tnone\t0x0\tnone\nP\t0x10\tdata\tFileSystem\tmmc0\t0x4400\tbig.bin\nP\t0x11\tnext\tFileSystem\tmmc0\t0x44400\tbig.bin\n"
        )
        #expect(
            found.contains {
                $0.code == "file-larger-than-partition" && $0.line == 2 && $0.message.contains("262145 bytes")
                    && $0.message.contains("holds 262144")
            })
    }
}
