/// A GUID as GPT stores it. Text is the canonical `8-4-4-4-12` hex form (printed upper-case,
/// parsed in any case); on disk the first three groups are little-endian and the last two are
/// stored as written ("mixed-endian").
public struct GUID: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    /// The 16 bytes in text order (the order they appear in the canonical string).
    public let canonicalBytes: [UInt8]

    public static let zero = GUID(canonicalBytes: [UInt8](repeating: 0, count: 16))

    public init(canonicalBytes: [UInt8]) {
        precondition(canonicalBytes.count == 16, "a GUID is 16 bytes")
        self.canonicalBytes = canonicalBytes
    }

    /// Parses `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`; nil for anything else.
    public init?(_ text: String) {
        let groups = text.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.map(\.count) == [8, 4, 4, 4, 12] else { return nil }
        var bytes: [UInt8] = []
        let digits = Array(groups.joined().utf8)
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = Self.nibble(digits[index]), let low = Self.nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        self.init(canonicalBytes: bytes)
    }

    /// Reads the 16-byte mixed-endian form found in GPT headers and entries.
    public init(diskBytes: [UInt8]) {
        precondition(diskBytes.count == 16, "a GUID is 16 bytes")
        self.init(canonicalBytes: Self.swapFirstGroups(diskBytes))
    }

    /// The 16 bytes as GPT writes them.
    public var diskBytes: [UInt8] { Self.swapFirstGroups(canonicalBytes) }

    public var description: String {
        let hex = canonicalBytes.map { byte in
            let digits = String(byte, radix: 16, uppercase: true)
            return digits.count == 1 ? "0" + digits : digits
        }
        return [0..<4, 4..<6, 6..<8, 8..<10, 10..<16].map { hex[$0].joined() }.joined(separator: "-")
    }

    /// A random (version 4, RFC 4122 variant) GUID from the system's secure generator.
    public static func random() -> GUID {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    /// A version-4 GUID from `generator`, so that tests and examples can be reproducible.
    public static func random(using generator: inout some RandomNumberGenerator) -> GUID {
        var bytes = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        bytes[6] = bytes[6] & 0x0F | 0x40
        bytes[8] = bytes[8] & 0x3F | 0x80
        return GUID(canonicalBytes: bytes)
    }

    public static func < (lhs: GUID, rhs: GUID) -> Bool {
        lhs.canonicalBytes.lexicographicallyPrecedes(rhs.canonicalBytes)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let guid = GUID(text) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "\(text) is not a GUID"))
        }
        self = guid
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    private static func swapFirstGroups(_ bytes: [UInt8]) -> [UInt8] {
        Array(bytes[0..<4].reversed()) + Array(bytes[4..<6].reversed()) + Array(bytes[6..<8].reversed())
            + Array(bytes[8..<16])
    }

    private static func nibble(_ character: UInt8) -> UInt8? {
        switch character {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): character - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): character - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): character - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
