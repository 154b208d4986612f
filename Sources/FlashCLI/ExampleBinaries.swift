import BootImages
import GPT
import Glibc
import SystemPackage

/// SplitMix64: a tiny deterministic generator, so `make-examples` writes the same payload bytes
/// on every machine and checksums in docs and tests stay stable.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    /// Seeds from a name (FNV-1a), so each file gets its own stream.
    init(name: String) {
        state = name.utf8.reduce(0xCBF2_9CE4_8422_2325) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01B3 }
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }

    mutating func bytes(_ count: Int) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(count + 8)
        while result.count < count { withUnsafeBytes(of: next().littleEndian) { result.append(contentsOf: $0) } }
        return Array(result.prefix(count))
    }
}

/// Builders for the synthetic boot binaries: right headers and checksums, meaningless payloads.
enum ExampleBinaries {
    /// TF-A BL2 with an STM32 header for `family`, loaded where that family's ROM puts the FSBL.
    static func fsbl(family: ChipFamily, seed: String) -> [UInt8] {
        var random = SplitMix64(name: seed)
        let tfaBinaryType: UInt32 = 0x10
        switch family {
        case .mp15:
            return STM32ImageHeader.wrap(
                payload: random.bytes(64 * 1024), version: .v1, entryPoint: 0x2FFC_2500, loadAddress: 0x2FFC_2400,
                binaryType: tfaBinaryType)
        case .mp13:
            return STM32ImageHeader.wrap(
                payload: random.bytes(80 * 1024), version: .v2, entryPoint: 0x2FFE_0000, loadAddress: 0x2FFE_0000,
                binaryType: tfaBinaryType)
        case .mp2:
            return STM32ImageHeader.wrap(
                payload: random.bytes(96 * 1024), version: .v2, entryPoint: 0x0E00_2600, loadAddress: 0x0E00_2600,
                binaryType: tfaBinaryType)
        }
    }

    /// ToC entry UUIDs as fiptool stores them (raw 16 bytes).
    static let firmwareConfigUUID: [UInt8] = [
        0x58, 0x07, 0xE1, 0x6A, 0x84, 0x59, 0x47, 0xBE, 0x8E, 0xD5, 0x64, 0x8E, 0x8D, 0xDD, 0xAB, 0x0E,
    ]
    static let hardwareConfigUUID: [UInt8] = [
        0x08, 0xB8, 0xF1, 0xD9, 0xC9, 0xCF, 0x93, 0x49, 0xA9, 0x62, 0x6F, 0xBC, 0x6B, 0x72, 0x65, 0xCC,
    ]
    static let trustedOSUUID: [UInt8] = [
        0x05, 0xD0, 0xE1, 0x89, 0x53, 0xDC, 0x13, 0x47, 0x8D, 0x2B, 0x50, 0x0A, 0x4B, 0x7A, 0x3E, 0x38,
    ]
    static let nonTrustedFirmwareUUID: [UInt8] = [
        0xD6, 0xD0, 0xEE, 0xA7, 0xFC, 0xEA, 0xD5, 0x4B, 0x97, 0x82, 0x99, 0x34, 0xF2, 0x34, 0xB6, 0xE4,
    ]
    /// Our own UUID for the DDR firmware blob of the MP2 DDR FIP (ST's platform UUID is not in
    /// upstream fiptool; only the ToC header matters to TF-A's USB check).
    static let exampleDDRFirmwareUUID = GUID("5354D0F1-0000-4000-8000-444452464957")!.canonicalBytes

    /// The boot FIP: FW_CONFIG, HW_CONFIG, BL32 and BL33 entries, about 200 KiB.
    static func fip(seed: String) -> [UInt8] {
        var random = SplitMix64(name: seed)
        return firmwareImagePackage([
            (firmwareConfigUUID, random.bytes(1024)), (hardwareConfigUUID, random.bytes(24 * 1024)),
            (trustedOSUUID, random.bytes(40 * 1024)), (nonTrustedFirmwareUUID, random.bytes(135 * 1024)),
        ])
    }

    /// The MP2 DDR FIP (phase 0x02), kept under TF-A's 40 KiB DDR download buffer.
    static func ddrFIP(seed: String) -> [UInt8] {
        var random = SplitMix64(name: seed)
        return firmwareImagePackage([(exampleDDRFirmwareUUID, random.bytes(24 * 1024))])
    }

    /// ToC header, one 40-byte entry per image (UUID, u64 offset, u64 size, u64 flags), a
    /// terminating all-zero-UUID entry whose offset is the end of the package, then the images.
    static func firmwareImagePackage(_ images: [(uuid: [UInt8], data: [UInt8])]) -> [UInt8] {
        let entrySize = 40
        var offset = UInt64(FIPHeader.length + entrySize * (images.count + 1))
        var toc = FIPHeader(serialNumber: 0x1234_5678).encoded()
        for image in images {
            toc +=
                image.uuid + littleEndianBytes(offset) + littleEndianBytes(UInt64(image.data.count))
                + littleEndianBytes(UInt64(0))
            offset += UInt64(image.data.count)
        }
        toc += [UInt8](repeating: 0, count: 16) + littleEndianBytes(offset) + [UInt8](repeating: 0, count: 16)
        return toc + images.flatMap(\.data)
    }

    /// GUIDs the FWU metadata names: the FIP type, and U-Boot's fixed fip-a/fip-b unique GUIDs.
    static let fipTypeGUID = GUID("19D5DF83-11B0-457B-BE2C-7559C13142A5")!
    static let fipBankGUIDs = [
        GUID("4FD84C93-54EF-463F-A7EF-AE25FF887087")!, GUID("09C54952-D5BF-45AF-ACEE-335303766FB3")!,
    ]
    static let exampleLocationGUID = GUID("5354E5A3-0000-4000-8000-4C4F43415449")!

    /// FWU metadata version 2 (Arm PSA FWU A/B): one image (the FIP) in two banks, bank 0 active
    /// and accepted, bank 1 invalid; CRC32 over everything after the CRC field.
    static func fwuMetadata() -> [UInt8] {
        let bankInfoSize = 24
        let imageEntrySize = 32 + 2 * bankInfoSize
        var descriptor: [UInt8] =
            [2, 0] + littleEndianBytes(UInt16(1)) + littleEndianBytes(UInt16(imageEntrySize))
            + littleEndianBytes(UInt16(bankInfoSize))
        descriptor += fipTypeGUID.diskBytes + exampleLocationGUID.diskBytes
        for (bank, guid) in fipBankGUIDs.enumerated() {
            descriptor += guid.diskBytes + littleEndianBytes(UInt32(bank == 0 ? 1 : 0)) + littleEndianBytes(UInt32(0))
        }
        let headerSize = 32
        var header = littleEndianBytes(UInt32(2)) + littleEndianBytes(UInt32(0)) + littleEndianBytes(UInt32(0))
        header += littleEndianBytes(UInt32(headerSize + descriptor.count)) + littleEndianBytes(UInt16(headerSize))
        header += littleEndianBytes(UInt16(0)) + [0xFC, 0xFF, 0xFF, 0xFF] + littleEndianBytes(UInt32(0))
        let body = header + descriptor
        return littleEndianBytes(CRC32.checksum(of: body)) + body
    }

    static func littleEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }
}
