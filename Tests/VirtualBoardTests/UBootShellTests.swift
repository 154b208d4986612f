import Testing
import UBootScript

@testable import VirtualBoard

/// The hush subset the hand-off script runs in: what `--verify` over fastboot relies on.
@Suite("virtual U-Boot shell: the CRC stage of the hand-off script")
struct UBootShellTests {
    /// A 4 KiB MMC 1 whose block n holds the byte n.
    static func machine(log: @escaping @Sendable (String) -> Void = { _ in }) -> UBootShell.Machine {
        UBootShell.Machine(
            env: [:], fastbootBuiltIn: true, gptWrite: { _, _ in nil }, mmc: { _ in true },
            mmcRead: { device, _, block, count in
                guard device == 1, block + UInt64(count) <= 8 else { return nil }
                return (0..<count * 512).map { UInt8(truncatingIfNeeded: Int(block) + $0 / 512) }
            },
            crc32: { CRC32Reference.checksum($0) }, console: log)
    }

    @Test("after fastboot returns inside if … then, the rest of the branch and what follows run")
    func resumesInsideConditionals() {
        var shell = UBootShell(machine: Self.machine())
        let script =
            "env set filesize; fastboot usb 0; if test -n \"${filesize}\"; then env set a 1; fastboot usb 0; env set b 2; fi; stm32prog usb 0"
        #expect(shell.run(script) == .fastboot)
        // No download happened: the branch is skipped, stm32prog starts.
        #expect(shell.resume() == .stm32prog)
        #expect(shell.machine.env["a"] == nil)

        var flashed = UBootShell(machine: Self.machine())
        #expect(flashed.run(script) == .fastboot)
        flashed.machine.env["filesize"] = "1000"  // set by fastboot's download
        #expect(flashed.resume() == .fastboot)
        #expect(flashed.machine.env["a"] == "1")
        #expect(flashed.machine.env["b"] == nil)
        #expect(flashed.resume() == .stm32prog)
        #expect(flashed.machine.env["b"] == "2")
    }

    @Test("mmc read + crc32 + setexpr.l leave the CRC byte-swapped in the env; the host undoes it")
    func crcThroughSetexpr() {
        let stage = CRCReadbackStage(
            mmcIndex: 1, bufferAddress: 0xC000_0000,
            checks: [
                CRCReadbackStage.Check(
                    lineID: 0x10, hardwarePartition: 0, start: 512, length: 1000, deviceOffset: 1024),
                CRCReadbackStage.Check(
                    lineID: 0x10, hardwarePartition: 0, start: 0, length: 8 * 512, deviceOffset: 512),
            ])
        var shell = UBootShell(machine: Self.machine())
        #expect(shell.run(stage.text) == .finished(status: 1))
        // Blocks 3..4 of the device: bytes 3 × 512, then 488 × 4.
        let expected = CRC32Reference.checksum([UInt8](repeating: 3, count: 512) + [UInt8](repeating: 4, count: 488))
        let answer = shell.machine.env["fastboot.vcrc0"]
        #expect(answer.flatMap(CRCReadbackStage.crc(fromAnswer:)) == expected)
        #expect(answer != String(expected, radix: 16))
        // Past the device's end `mmc read` fails and the variable stays unset (never a pass).
        #expect(shell.machine.env["fastboot.vcrc1"] == nil)
    }
}

/// Bit-by-bit CRC-32 (IEEE), independent of the table and zlib implementations.
enum CRC32Reference {
    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return crc ^ 0xFFFF_FFFF
    }
}
