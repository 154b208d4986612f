/// Why bytes that should start with an STM32 image header cannot be decoded. Each case reads as a
/// sentence, because these reach users who picked the wrong file (a storage build, a raw BL2).
public enum STM32HeaderError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Fewer bytes than the header needs (`needed` counts the v2 extension headers once known).
    case tooShort(available: Int, needed: Int)
    /// The first four bytes are not `STM2`.
    case badMagic([UInt8])
    /// The header version word (offset 72) is not one this decoder knows.
    case unknownVersion(UInt32)
    /// A reserved word (offset 84 or 92) is not zero.
    case nonzeroReserved(offset: Int)
    /// A padding byte that must be zero is not (v1: 172..<255, v2: 112..<128).
    case nonzeroPadding(offset: Int)
    /// The v2 extension headers do not chain up to the announced total length.
    case malformedExtensionHeaders(announcedLength: UInt32, detail: String)

    public var description: String {
        switch self {
        case .tooShort(let available, let needed):
            "The STM32 header needs \(needed) bytes but only \(available) are present; the file is truncated."
        case .badMagic(let bytes):
            "The file does not start with the STM32 magic \"STM2\" (found \(hex(bytes))); it is not an STM32 image."
        case .unknownVersion(let word):
            "The STM32 header version 0x\(hex32(word)) is unknown; expected 0x00010000 (v1) or 0x0002xx00 (v2)."
        case .nonzeroReserved(let offset):
            "The reserved word at offset \(offset) of the STM32 header is not zero, so U-Boot and TF-A reject it."
        case .nonzeroPadding(let offset):
            "The padding byte at offset \(offset) of the STM32 header is not zero, so U-Boot and TF-A reject it."
        case .malformedExtensionHeaders(let length, let detail):
            "The STM32 v2 extension headers (announced length \(length) bytes) are malformed: \(detail)."
        }
    }
}

func hex(_ bytes: [UInt8]) -> String {
    bytes.map { byte in
        let digits = String(byte, radix: 16, uppercase: true)
        return digits.count == 1 ? "0" + digits : digits
    }.joined(separator: " ")
}

/// Eight upper-case hex digits, no prefix.
package func hex32(_ value: UInt32) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: 8 - digits.count) + digits
}
