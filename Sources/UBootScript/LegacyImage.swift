import GPT

/// A U-Boot legacy image ("uImage", `include/image.h`): a 64-byte big-endian header, then the
/// data. `stm32prog` runs one of type script when it arrives on the FlashLayout alternate
/// instead of a FlashLayout (U-Boot ≥ v2022.07 with `LEGACY_IMAGE_FORMAT`; fastboot reference
/// §1.3), which is how the host hands U-Boot a script without boot-pin changes.
public struct LegacyScriptImage: Sendable, Hashable {
    /// `IH_MAGIC`.
    public static let magic: UInt32 = 0x2705_1956
    /// `IH_TYPE_SCRIPT`.
    public static let scriptType: UInt8 = 6
    /// `IH_OS_LINUX` and `IH_ARCH_ARM`, what `mkimage -A arm -O linux -T script` writes; U-Boot's
    /// `source` looks only at the type and the CRCs.
    static let osLinux: UInt8 = 5
    static let archARM: UInt8 = 2
    static let headerSize = 64
    static let nameLength = 32

    /// The script text U-Boot's hush runs.
    public var script: String
    /// `ih_name`, at most 31 bytes (NUL-terminated in the header).
    public var name: String

    public init(script: String, name: String = "stm32mp-flash fastboot") {
        self.script = script
        self.name = name
    }

    /// The image: header, then the multi-image length table `mkimage -T script` writes (the
    /// script length and a zero terminator, both big-endian u32), then the script.
    public var bytes: [UInt8] {
        let text = Array(script.utf8)
        var data: [UInt8] = []
        data.appendBigEndian(UInt32(text.count))
        data.appendBigEndian(UInt32(0))
        data += text
        var header = [UInt8](repeating: 0, count: Self.headerSize)
        header.storeBigEndian(Self.magic, at: 0)
        header.storeBigEndian(UInt32(data.count), at: 12)
        header.storeBigEndian(CRC32.checksum(of: data), at: 24)
        header[28] = Self.osLinux
        header[29] = Self.archARM
        header[30] = Self.scriptType
        header[31] = 0  // IH_COMP_NONE
        for (index, byte) in name.utf8.prefix(Self.nameLength - 1).enumerated() { header[32 + index] = byte }
        header.storeBigEndian(CRC32.checksum(of: header), at: 4)
        return header + data
    }

    /// Decodes an image the way U-Boot's `cmd_source_script()` checks it: magic, header CRC,
    /// type script, data CRC, then the first entry of the length table.
    public static func decode(_ bytes: [UInt8]) throws(LegacyImageError) -> LegacyScriptImage {
        guard bytes.count >= headerSize, bytes.bigEndianUInt32(at: 0) == magic else { throw .notLegacyImage }
        var header = Array(bytes[0..<headerSize])
        let headerCRC = header.bigEndianUInt32(at: 4)
        header.storeBigEndian(UInt32(0), at: 4)
        guard CRC32.checksum(of: header) == headerCRC else { throw .badHeaderChecksum }
        guard header[30] == scriptType else { throw .notScript(type: header[30]) }
        let size = Int(header.bigEndianUInt32(at: 12))
        guard bytes.count >= headerSize + size else { throw .truncated }
        let data = Array(bytes[headerSize..<headerSize + size])
        guard CRC32.checksum(of: data) == header.bigEndianUInt32(at: 24) else { throw .badDataChecksum }
        var offset = 0
        var lengths: [Int] = []
        while offset + 4 <= data.count {
            let length = Int(data.bigEndianUInt32(at: offset))
            offset += 4
            if length == 0 { break }
            lengths.append(length)
        }
        guard let first = lengths.first, offset + first <= data.count else { throw .truncated }
        let nameBytes = header[32..<32 + nameLength].prefix { $0 != 0 }
        return LegacyScriptImage(
            script: String(decoding: data[offset..<offset + first], as: UTF8.self),
            name: String(decoding: nameBytes, as: UTF8.self))
    }

    /// True when `bytes` start with the legacy magic (`genimg_get_format() == IMAGE_FORMAT_LEGACY`).
    public static func isLegacyImage(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 4 && bytes.bigEndianUInt32(at: 0) == magic
    }
}

/// Why U-Boot would refuse to run an image as a script.
public enum LegacyImageError: Error, Sendable, Hashable, CustomStringConvertible {
    case notLegacyImage, badHeaderChecksum, badDataChecksum, truncated
    case notScript(type: UInt8)

    public var description: String {
        switch self {
        case .notLegacyImage: "not a legacy U-Boot image (no 0x27051956 magic)"
        case .badHeaderChecksum: "bad header checksum"
        case .badDataChecksum: "bad data checksum"
        case .truncated: "image truncated"
        case .notScript(let type): "image type \(type) is not a script (6)"
        }
    }
}

extension Array where Element == UInt8 {
    mutating func appendBigEndian(_ value: UInt32) {
        append(contentsOf: (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) })
    }

    mutating func storeBigEndian(_ value: UInt32, at offset: Int) {
        for index in 0..<4 { self[offset + index] = UInt8(truncatingIfNeeded: value >> (24 - 8 * index)) }
    }

    func bigEndianUInt32(at offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(self[offset + $1]) }
    }
}
