import DfuSe
import Foundation
import MCUImages
import TestSupport
import Testing

@Suite("MCU firmware files and write plans")
struct ImageTests {
    static func randomBytes(_ count: Int, seed: UInt64 = 7) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }

    @Test("Intel HEX written by objcopy reads back as the binary at its address")
    func objcopyHex() throws {
        let folder = try TemporaryDirectory()
        let data = Self.randomBytes(70_000)
        try Data(data).write(to: URL(fileURLWithPath: folder.file("in.bin")))
        let objcopy = try ExternalTool("objcopy", package: "binutils")
        let result = try objcopy.run([
            "-I", "binary", "-O", "ihex", "--change-addresses", "0x08004000", folder.file("in.bin"),
            folder.file("out.hex"),
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let image = try MCUImage.load(path: folder.file("out.hex"), address: nil)
        #expect(image.format == .intelHex)
        #expect(image.segments == [MCUSegment(address: 0x0800_4000, bytes: data)])
    }

    @Test("a HEX record with a bad checksum is refused with its line and field")
    func badChecksum() {
        let text = ":020000040800F2\n:0400000001020304F1\n:00000001FF\n"
        #expect {
            _ = try MCUImage.parse(Array(text.utf8), path: "app.hex", address: nil)
        } throws: { error in
            let error = error as? MCUImageError
            return error?.line == 2 && error?.field == "checksum"
                && error?.description.hasPrefix("app.hex:2: error: checksum:") == true
        }
    }

    @Test("a raw binary needs an address")
    func binaryNeedsAddress() {
        #expect(throws: MCUImageError.self) { _ = try MCUImage.parse([1, 2, 3], path: "a.bin", address: nil) }
        let image = try? MCUImage.parse([1, 2, 3], path: "a.bin", address: 0x0800_0000)
        #expect(image?.segments.first?.address == 0x0800_0000)
    }

    @Test("a DfuSe file made by dfuse-pack reads back; ours passes dfu-suffix and dfuse-pack")
    func dfuseFiles() throws {
        let folder = try TemporaryDirectory()
        let data = Self.randomBytes(5000, seed: 3)
        try Data(data).write(to: URL(fileURLWithPath: folder.file("in.bin")))
        let pack = try ExternalTool("dfuse-pack", package: "dfu-util")
        let made = try pack.run(["-b", "0x08008000:" + folder.file("in.bin"), folder.file("theirs.dfu")])
        #expect(made.status == 0, "\(made.standardError)")
        let image = try MCUImage.load(path: folder.file("theirs.dfu"), address: nil)
        #expect(image.format == .dfuse)
        #expect(image.segments == [MCUSegment(address: 0x0800_8000, bytes: data, alternate: 0)])

        let ours = DfuSeFile.build([MCUSegment(address: 0x0800_0000, bytes: data, alternate: 0)])
        try Data(ours).write(to: URL(fileURLWithPath: folder.file("ours.dfu")))
        let suffix = try ExternalTool("dfu-suffix", package: "dfu-util").run(["-c", folder.file("ours.dfu")])
        #expect(suffix.status == 0 && suffix.standardOutput.contains("0x011A"), "\(suffix.standardOutput)")
        let dump = try pack.run(["-d", folder.file("ours.dfu")])
        #expect(dump.standardOutput.contains("address: 0x08000000, size: 5000"), "\(dump.standardOutput)")
    }

    @Test("a damaged DfuSe file is refused by its suffix CRC")
    func damagedDfuse() throws {
        var file = DfuSeFile.build([MCUSegment(address: 0x0800_0000, bytes: [1, 2, 3, 4], alternate: 0)])
        file[300] ^= 0xFF
        #expect {
            _ = try MCUImage.parse(file, path: "x.dfu", address: nil)
        } throws: { ($0 as? MCUImageError)?.field == "suffix CRC" }
    }

    @Test("an ELF linked by ld puts initialised data at its load address (p_paddr), not its RAM address")
    func elfLoadAddress() throws {
        let folder = try TemporaryDirectory()
        let data = Self.randomBytes(3000, seed: 9)
        try Data(data).write(to: URL(fileURLWithPath: folder.file("in.bin")))
        let objcopy = try ExternalTool("objcopy", package: "binutils")
        let ld = try ExternalTool("ld", package: "binutils")
        #expect(
            try objcopy.run([
                "-I", "binary", "-O", "elf32-i386", "-B", "i386", folder.file("in.bin"), folder.file("in.o"),
            ]).status == 0)
        try "SECTIONS { . = 0x20000000; .data : AT(0x08000100) { *(.data) } }\n".write(
            toFile: folder.file("s.ld"), atomically: true, encoding: .utf8)
        let linked = try ld.run([
            "-m", "elf_i386", "-n", "-T", folder.file("s.ld"), folder.file("in.o"), "-o", folder.file("app.elf"),
        ])
        #expect(linked.status == 0, "\(linked.standardError)")
        let image = try MCUImage.load(path: folder.file("app.elf"), address: nil)
        #expect(image.format == .elf)
        #expect(image.segments == [MCUSegment(address: 0x0800_0100, bytes: data)])
    }

    @Test("the write plan erases only the F746 sectors the data touches")
    func planErasesTouchedSectors() throws {
        let family = MCUFamily.f746
        let maps = family.alternates.map(DfuSeMemoryMap.init)
        let image = MCUImage(
            format: .binary,
            segments: [MCUSegment(address: 0x0800_0000, bytes: [UInt8](repeating: 1, count: 512 << 10))])
        let plan = try MCUWritePlan(image: image, maps: maps)
        // 4 × 32 KiB + 128 KiB + part of the first 256 KiB sector.
        #expect(
            plan.erase.map(\.address) == [0x0800_0000, 0x0800_8000, 0x0801_0000, 0x0801_8000, 0x0802_0000, 0x0804_0000])
        #expect(plan.runs.map(\.alternate) == [0])
    }

    @Test("a file past the end of flash is refused with the first address outside and the flash range")
    func planRefusesOutside() throws {
        let maps = MCUFamily.f105.alternates.map(DfuSeMemoryMap.init)
        let image = MCUImage(
            format: .binary, segments: [MCUSegment(address: 0x0803_F000, bytes: [UInt8](repeating: 0, count: 8192))])
        #expect {
            _ = try MCUWritePlan(image: image, maps: maps)
        } throws: { error in
            guard let error = error as? MCUPlanError else { return false }
            return error.firstBadAddress == 0x0804_0000
                && error.description.contains("0x08040000 is outside every memory")
                && error.description.contains("Internal Flash 0x08000000–0x0803FFFF")
        }
    }

    @Test("read-only sectors of an application's map are refused")
    func planRefusesReadOnly() throws {
        let maps = [DfuSeMemoryMap("@Internal Flash   /0x08000000/06*002Ka,122*002Kg")]
        let image = MCUImage(format: .binary, segments: [MCUSegment(address: 0x0800_0000, bytes: [1])])
        #expect(throws: MCUPlanError.self) { _ = try MCUWritePlan(image: image, maps: maps) }
    }
}
