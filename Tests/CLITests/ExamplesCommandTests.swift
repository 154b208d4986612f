import BootImages
import FlashCLI
import FlashLayout
import Foundation
import GPT
import TestSupport
import Testing

@Suite("make-examples")
struct ExamplesCommandTests {
    /// A fresh set per test: generation takes about 0.1 s, mke2fs included.
    let directory: TemporaryDirectory
    let report: ExampleSetReport

    init() throws {
        directory = try TemporaryDirectory(prefix: "examples")
        report = try ExampleSetGenerator(outputDirectory: directory.path + "/layouts").generate()
    }

    func generatedSet() -> (root: String, report: ExampleSetReport) { (directory.path + "/layouts", report) }

    func size(of path: String) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? -1
    }

    @Test func committedLayoutsAreTheGeneratorsOwn() throws {
        for layout in ExampleSetGenerator.layouts {
            let committed = try String(
                contentsOfFile: TestPaths.exampleLayouts + "/\(layout.name).tsv", encoding: .utf8)
            #expect(committed == layout.text, "layouts/\(layout.name).tsv differs from ExampleSetGenerator.layouts")
            #expect(!committed.contains("\r") && !committed.contains(" "))
        }
        #expect(ExampleSetGenerator.layouts.map(\.name) == ["mp15-sdcard", "mp15-emmc", "mp13-sdcard", "mp25-sdcard"])
    }

    /// Every Binary the layouts name exists after generation, and the lead's checker (U-Boot's
    /// rules, file existence and sizes) finds nothing to say against a recent U-Boot.
    @Test func layoutsPassTheCheckerWithTheirFiles() throws {
        let (root, report) = generatedSet()
        #expect(report.layouts.count == 4)
        for path in report.layouts {
            let result = LayoutChecker.check(
                path: path, options: .init(ubootVersion: UBootVersion(year: 2023, month: 10)))
            #expect(result.diagnostics.filter { $0.severity >= .warning }.isEmpty, "\(result.diagnostics)")
            let binaries = result.lines.compactMap(\.binary)
            #expect(binaries.count >= 10)
            for binary in binaries { #expect(FileManager.default.fileExists(atPath: root + "/" + binary), "\(binary)") }
        }
    }

    @Test func stm32ImagesHaveTheRightHeaderAndChecksum() throws {
        let (_, report) = generatedSet()
        let images = report.files.filter { $0.kind == .stm32Image }
        #expect(images.count == 8)
        for image in images {
            let inspected = try BootImageInspector.inspect(path: image.path)
            guard case .stm32(let header) = inspected.kind else {
                Issue.record("\(image.path) is not an STM32 image")
                continue
            }
            #expect(inspected.checksumMatches == true, "\(image.path)")
            #expect(inspected.isSigned == false)
            #expect(header.binaryType == 0x10)
            #expect(inspected.fileSize == Int64(image.size))
            #expect(image.size <= 100 * 1024, "FSBLs stay small so the emulator flashes them quickly")
            let expected: (STM32ImageHeader.Version, ChipFamily) =
                image.path.contains("/mp15-")
                ? (.v1, .mp15) : image.path.contains("/mp13-") ? (.v2, .mp13) : (.v2, .mp2)
            #expect(header.version == expected.0 && inspected.chipHint == [expected.1], "\(image.path)")
        }
        // U-Boot's dumpimage accepts the v1 ones.
        let dumpimage = try ExternalTool("dumpimage", package: "u-boot-tools")
        for image in images where image.path.contains("/mp15-") {
            let listed = try dumpimage.run(["-l", image.path])
            #expect(listed.status == 0 && listed.standardOutput.contains("STM32 V1.0"), "\(listed.standardError)")
        }
    }

    @Test func fipsHaveAValidToCThatFiptoolReads() throws {
        let (_, report) = generatedSet()
        let fips = report.files.filter { $0.kind == .fip }
        #expect(fips.count == 5)
        let fiptool = try ExternalTool("fiptool", package: "arm-trusted-firmware-tools")
        for fip in fips {
            let inspected = try BootImageInspector.inspect(path: fip.path)
            guard case .fip(let header) = inspected.kind else {
                Issue.record("\(fip.path) has no valid FIP ToC header")
                continue
            }
            #expect(header.isValid && header.serialNumber != 0)
            let info = try fiptool.run(["info", fip.path])
            #expect(info.status == 0, "\(info.standardError)")
            if fip.path.hasSuffix("fip-ddr.bin") {
                #expect(fip.size <= 0xA000, "TF-A's MP2 DDR buffer is 40 KiB")
            } else {
                #expect(info.standardOutput.contains("Non-Trusted Firmware BL33"))
                #expect(info.standardOutput.contains("FW_CONFIG"))
                #expect(fip.size <= 256 * 1024)
            }
        }
    }

    @Test func fwuMetadataCarriesItsCRC() throws {
        let (_, report) = generatedSet()
        let blobs = report.files.filter { $0.kind == .fwuMetadata }
        #expect(blobs.count == 4)
        for blob in blobs {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: blob.path)))
            func word(_ offset: Int) -> UInt32 {
                bytes[offset..<offset + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) }
            }
            #expect(word(4) == 2, "version 2")
            #expect(Int(word(16)) == bytes.count, "metadata_size")
            #expect(word(0) == CRC32.checksum(of: bytes[4...]))
        }
    }

    @Test func fileSystemsAreRealExt4() throws {
        let (_, report) = generatedSet()
        let fileSystems = report.files.filter { $0.kind == .ext4 }
        #expect(fileSystems.count == 12)
        #expect(report.notes.isEmpty)
        let e2fsck = try ExternalTool("e2fsck", package: "e2fsprogs")
        let dumpe2fs = try ExternalTool("dumpe2fs", package: "e2fsprogs")
        for fileSystem in fileSystems {
            let checked = try e2fsck.run(["-fn", fileSystem.path])
            #expect(checked.status == 0, "\(fileSystem.path): \(checked.standardOutput)")
            let header = try dumpe2fs.run(["-h", fileSystem.path])
            let name = URL(fileURLWithPath: fileSystem.path).deletingPathExtension().lastPathComponent
            #expect(header.standardOutput.contains("Filesystem volume name:   \(name)"))
            #expect(header.standardOutput.contains("extent"), "ext4 features")
            #expect(try size(of: fileSystem.path) == fileSystem.size)
        }
    }

    @Test func totalSizeStaysSmallForTheEmulator() throws {
        let (_, report) = generatedSet()
        let total = report.files.reduce(0) { $0 + $1.size }
        #expect(total < 4 * 3 * 1024 * 1024, "whole set \(total) bytes")
    }

    @Test func sameBytesOnEveryRun() throws {
        let (root, _) = generatedSet()
        let again = try TemporaryDirectory(prefix: "examples-again")
        let report = try ExampleSetGenerator(outputDirectory: again.path, mke2fsPath: nil).generate()
        #expect(report.notes.count == 1 && report.notes[0].contains("mke2fs was not found"))
        for file in report.files where file.kind != .zeroFilled {
            let relative = String(file.path.dropFirst(again.path.count))
            #expect(
                FileManager.default.contents(atPath: file.path)
                    == FileManager.default.contents(atPath: root + relative), "\(relative)")
        }
        let placeholders = report.files.filter { $0.kind == .zeroFilled }
        #expect(placeholders.count == 12)
        for file in placeholders {
            #expect(FileManager.default.contents(atPath: file.path) == Data(count: file.size))
        }
    }
}
