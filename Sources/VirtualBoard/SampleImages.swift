import BootImages

/// Small, well-formed boot images for demos, benchmarks and tests of the virtual board: the board
/// checks headers (FIP ToC, STM32 magic), not what the code inside does.
public enum SampleImages {
    /// A FIP: ToC header (name 0xAA640001, serial 0x12345678, flags 0), a terminating zero entry,
    /// then `payloadSize` pattern bytes.
    public static func fip(payloadSize: Int = 4096) -> [UInt8] {
        let header: [UInt8] = [0x01, 0x00, 0x64, 0xAA, 0x78, 0x56, 0x34, 0x12] + [UInt8](repeating: 0, count: 8)
        return header + [UInt8](repeating: 0, count: 40) + pattern(payloadSize, seed: 0x3C)
    }

    /// An FSBL the virtual ROM of `soc` starts: an STM32 header v1 (MP15) or v2 with the chip's
    /// SYSRAM as load address (MP13, MP25), and `payloadSize` pattern bytes.
    public static func fsbl(payloadSize: Int = 8192, for soc: VirtualSoC = .mp15) -> [UInt8] {
        let payload = pattern(payloadSize, seed: 0x5A)
        switch soc {
        case .mp15: return STM32ImageHeader.wrap(payload: payload, version: .v1)
        case .mp13: return STM32ImageHeader.wrap(payload: payload, version: .v2, loadAddress: 0x2FFE_0000)
        case .mp25: return STM32ImageHeader.wrap(payload: payload, version: .v2, loadAddress: 0x0E00_0000)
        }
    }

    /// `count` bytes of a deterministic pattern (so that read-back comparisons mean something).
    public static func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
        var state = UInt32(seed) | 0x100
        return (0..<count).map { _ in
            state = state &* 1_103_515_245 &+ 12345
            return UInt8(truncatingIfNeeded: state >> 16)
        }
    }

    private static func put(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt32) {
        for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }
}
