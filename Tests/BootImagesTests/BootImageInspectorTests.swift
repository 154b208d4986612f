import BootImages
import Foundation
import SystemPackage
import TestSupport
import Testing

@Suite("Boot image inspector on real files")
struct BootImageInspectorTests {
    let directory: TemporaryDirectory

    init() throws { directory = try TemporaryDirectory(prefix: "bootimages") }

    func write(_ bytes: [UInt8], to name: String) throws -> String {
        let path = directory.file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// A payload larger than several 64 KiB chunks with an uneven tail, so chunk edges are crossed.
    static let bigPayload: [UInt8] = (0..<(3 * 65_536 + 1_234)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }

    @Test func validV1ImageAcrossChunks() throws {
        let path = try write(
            STM32ImageHeader.wrap(payload: Self.bigPayload, loadAddress: 0x2FFC_2400), to: "tf-a.stm32")
        let report = try BootImageInspector.inspect(path: path)
        guard case .stm32(let header) = report.kind else { Issue.record("not STM32: \(report.kind)"); return }
        #expect(header.imageLength == UInt32(Self.bigPayload.count))
        #expect(report.fileSize == Int64(256 + Self.bigPayload.count))
        #expect(report.checksumMatches == true)
        #expect(report.computedChecksum == STM32ImageHeader.checksum(of: Self.bigPayload))
        #expect(report.missingPayloadBytes == 0)
        #expect(report.isSigned == false)
        #expect(report.chipHint == [.mp15])
    }

    @Test func corruptedPayloadIsDetected() throws {
        var bytes = STM32ImageHeader.wrap(payload: Self.bigPayload, version: .v2, loadAddress: 0x2FFE_0000)
        bytes[512 + 100_000] &+= 1
        let report = try BootImageInspector.inspect(path: try write(bytes, to: "corrupt.stm32"))
        #expect(report.checksumMatches == false)
        #expect(report.computedChecksum == STM32ImageHeader.checksum(of: Self.bigPayload) &+ 1)
        #expect(report.chipHint == [.mp13])
    }

    @Test func truncatedPayloadIsReported() throws {
        let bytes = STM32ImageHeader.wrap(payload: Self.bigPayload)
        let report = try BootImageInspector.inspect(path: try write(Array(bytes.dropLast(1000)), to: "short.stm32"))
        #expect(report.missingPayloadBytes == 1000)
        #expect(report.checksumMatches == false)
    }

    @Test func truncatedHeaderThrows() throws {
        let bytes = STM32ImageHeader.wrap(payload: [], version: .v2)
        let path = try write(Array(bytes.prefix(400)), to: "header.stm32")
        #expect(throws: BootImageInspectionError.invalidSTM32Header(path: path, .tooShort(available: 400, needed: 512)))
        {
            try BootImageInspector.inspect(path: path)
        }
    }

    @Test func trailingBytesAfterPayloadAreIgnored() throws {
        let bytes = STM32ImageHeader.wrap(payload: [1, 2, 3]) + [UInt8](repeating: 0xFF, count: 4096)
        let report = try BootImageInspector.inspect(path: try write(bytes, to: "padded.stm32"))
        #expect(report.checksumMatches == true)
    }

    @Test func fipFiles() throws {
        let valid = FIPHeader(serialNumber: 0x1234_5678).encoded() + [UInt8](repeating: 0, count: 200_000)
        let report = try BootImageInspector.inspect(path: try write(valid, to: "fip.bin"))
        #expect(report.kind == .fip(FIPHeader(serialNumber: 0x1234_5678)))
        #expect(report.checksumMatches == nil && report.isSigned == nil && report.chipHint.isEmpty)
        #expect(report.fileSize == 200_016)

        let zeroSerial = FIPHeader(serialNumber: 0).encoded() + [1, 2, 3]
        #expect(try BootImageInspector.inspect(path: try write(zeroSerial, to: "bad-fip.bin")).kind == .unknown)
    }

    @Test func unknownAndMissingFiles() throws {
        let report = try BootImageInspector.inspect(path: try write(Array("hello".utf8), to: "text"))
        #expect(report.kind == .unknown && report.fileSize == 5)
        let missing = directory.file("nope")
        #expect(throws: BootImageInspectionError.cannotOpen(path: missing, .noSuchFileOrDirectory)) {
            try BootImageInspector.inspect(path: missing)
        }
    }

    /// U-Boot's own `mkimage` makes the v1 image; we must decode it, and its `dumpimage` must
    /// accept ours.
    @Test func interoperatesWithUBootMkimage() throws {
        let mkimage = try ExternalTool("mkimage", package: "u-boot-tools")
        let payloadPath = try write(Self.bigPayload, to: "payload.bin")
        let theirs = directory.file("theirs.stm32")
        let made = try mkimage.run([
            "-T", "stm32image", "-a", "0x2FFC2400", "-e", "0x2FFC2500", "-d", payloadPath, theirs,
        ])
        #expect(made.status == 0, "\(made.standardError)")
        let report = try BootImageInspector.inspect(path: theirs)
        guard case .stm32(let header) = report.kind else { Issue.record("not STM32"); return }
        #expect(header.loadAddress == 0x2FFC_2400 && header.entryPoint == 0x2FFC_2500)
        #expect(report.checksumMatches == true && report.isSigned == false)

        let ours = try write(
            STM32ImageHeader.wrap(payload: Self.bigPayload, entryPoint: 0x2FFC_2500, loadAddress: 0x2FFC_2400),
            to: "ours.stm32")
        let listed = try ExternalTool("dumpimage", package: "u-boot-tools").run(["-l", ours])
        #expect(listed.status == 0, "\(listed.standardError)")
        #expect(listed.standardOutput.contains("STM32 V1.0"))
        #expect(listed.standardOutput.contains(String(format: "Checksum     : 0x%08x", header.checksum)))
        #expect(listed.standardOutput.contains("Image Size   : \(Self.bigPayload.count) bytes"))
    }
}
