/// The six column parsers of U-Boot's `stm32prog` (`parse_option` … `parse_offset`), reproduced
/// on bytes so that accepted values and error texts match what the board prints. Shared by the
/// raw emulation (`UBootLayout`) and the linter, so the two can never disagree.
enum UBootField {
    /// A field U-Boot refuses, with enough to print U-Boot's own message.
    struct Rejection: Error, Hashable {
        enum Kind: Hashable {
            case invalidOption(UInt8)
            case missingSelect
            case invalidPhase
            case nameTooLong
            case typeError
            case ipError
            case invalidPart
            case invalidOffset
        }

        var kind: Kind
        /// The field as written.
        var text: String

        /// U-Boot's message for this rejection on its line `line`.
        func ubootMessage(line: Int) -> String {
            switch kind {
            case .invalidOption(let byte): "Layout line \(line): invalid option '\(printable(byte))' in \(text))"
            case .missingSelect: "Layout line \(line): missing 'P' in option \(text)"
            case .invalidPhase: "Layout line \(line): invalid phase value = \(text)"
            case .nameTooLong: "Layout line \(line): partition name too long [\(text.utf8.count)]: \(text)"
            case .typeError: "Layout line \(line): type parsing error : '\(text)'"
            case .ipError: "Layout line \(line): ip parsing error: '\(text)'"
            case .invalidPart: "Layout line \(line): invalid part '\(text)'"
            case .invalidOffset: "Layout line \(line): invalid offset '\(text)'"
            }
        }
    }

    /// Longest partition name U-Boot stores (`char name[16 + 1]`).
    static let maximumNameLength = 16
    /// Highest phase ID of a user partition (`PHASE_LAST_USER`).
    static let lastUserPhase: UInt64 = 0xF0

    static func option(_ field: [UInt8]) -> Result<LayoutOptions, Rejection> {
        let text = String(decoding: field, as: UTF8.self)
        if field == [UInt8(ascii: "-")] { return .success([]) }
        var options: LayoutOptions = []
        for byte in field {
            switch byte {
            case UInt8(ascii: "P"): options.insert(.select)
            case UInt8(ascii: "E"): options.insert(.empty)
            case UInt8(ascii: "D"): options.insert(.delete)
            default: return .failure(Rejection(kind: .invalidOption(byte), text: text))
            }
        }
        guard options.contains(.select) else { return .failure(Rejection(kind: .missingSelect, text: text)) }
        return .success(options)
    }

    /// `strict_strtoul(p, 0, …)`: `0x` hex, leading `0` octal, else decimal; whole field; ≤ 0xF0.
    static func id(_ field: [UInt8]) -> Result<UInt8, Rejection> {
        let text = String(decoding: field, as: UTF8.self)
        guard let parsed = UBootNumber.parse(field, base: 0), parsed.consumed == field.count, !parsed.overflow,
            parsed.value <= lastUserPhase
        else { return .failure(Rejection(kind: .invalidPhase, text: text)) }
        return .success(UInt8(parsed.value))
    }

    static func name(_ field: [UInt8]) -> Result<String, Rejection> {
        let text = String(decoding: field, as: UTF8.self)
        guard field.count <= maximumNameLength else { return .failure(Rejection(kind: .nameTooLong, text: text)) }
        return .success(text)
    }

    static func type(_ field: [UInt8]) -> Result<PartitionType, Rejection> {
        let text = String(decoding: field, as: UTF8.self)
        let reject = Result<PartitionType, Rejection>.failure(Rejection(kind: .typeError, text: text))
        if field.starts(with: Array("Binary".utf8)) {
            if field.count == 6 { return .success(.binary(copies: 1)) }
            // `Binary(n)`: at least 8 bytes, '(' right after, ')' last; n read as decimal digits.
            guard field.count >= 8, field[6] == UInt8(ascii: "("), field.last == UInt8(ascii: ")") else {
                return reject
            }
            let digits = UBootNumber.parse(Array(field[7...]), base: 10)
            return .success(.binary(copies: Int(truncatingIfNeeded: digits?.value ?? 0)))
        }
        switch text {
        case "FIP": return .success(.fip)
        case "FWU_MDATA": return .success(.fwuMetadata)
        case "ENV": return .success(.env)
        case "System": return .success(.system)
        case "ESP": return .success(.esp)
        case "FileSystem": return .success(.fileSystem)
        case "RawImage": return .success(.rawImage)
        default: return reject
        }
    }

    static func ip(_ field: [UInt8]) -> Result<LayoutTarget, Rejection> {
        let text = String(decoding: field, as: UTF8.self)
        let reject = Result<LayoutTarget, Rejection>.failure(Rejection(kind: .ipError, text: text))
        if text == "none" { return .success(.none) }
        // Same order as U-Boot: the first matching prefix decides.
        let prefixes: [(String, TargetKind)] = [("mmc", .mmc), ("nor", .nor), ("nand", .nand), ("spi-nand", .spiNand)]
        for (prefix, kind) in prefixes where field.starts(with: Array(prefix.utf8)) {
            // Exactly one decimal digit after the prefix.
            guard field.count == prefix.utf8.count + 1 else { return reject }
            let digit = field[field.count - 1]
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { return reject }
            return .success(LayoutTarget(kind: kind, index: Int(digit - UInt8(ascii: "0"))))
        }
        // Any `ram…` is accepted; the suffix is ignored.
        if field.starts(with: Array("ram".utf8)) { return .success(LayoutTarget(kind: .ram, index: 0)) }
        return reject
    }

    /// `boot1`/`boot2`, else `simple_strtoull(p, &tail, 10)` (a `0x` prefix still means hex; a
    /// leading 0 does not mean octal) that must consume the whole field.
    static func offset(_ field: [UInt8]) -> Result<PartitionOffset, Rejection> {
        let text = String(decoding: field, as: UTF8.self)
        if field.starts(with: Array("boot".utf8)) {
            switch text {
            case "boot1": return .success(.boot1)
            case "boot2": return .success(.boot2)
            default: return .failure(Rejection(kind: .invalidPart, text: text))
            }
        }
        guard let parsed = UBootNumber.parse(field, base: 10), parsed.consumed == field.count, parsed.consumed > 0,
            !parsed.overflow
        else { return .failure(Rejection(kind: .invalidOffset, text: text)) }
        return .success(.address(parsed.value))
    }

    /// A byte as C's `%c` would show it.
    static func printable(_ byte: UInt8) -> String {
        byte >= 0x20 && byte < 0x7F ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
    }
}

/// U-Boot's `simple_strtoul`/`simple_strtoull` with `_parse_integer_fixup_radix`.
enum UBootNumber {
    struct Parsed: Hashable {
        var value: UInt64
        /// Bytes consumed, including a `0x` prefix; 0 when nothing parsed.
        var consumed: Int
        /// True when the digits do not fit in 64 bits (U-Boot would silently wrap).
        var overflow: Bool
    }

    /// Parses from the start of `bytes`. `base` 0 picks 16 for `0x`, 8 for a leading `0`, else
    /// 10; any base still skips a `0x` prefix and then reads hex. Returns nil when the field is
    /// empty (U-Boot's strict variant rejects that).
    static func parse(_ bytes: [UInt8], base: UInt64) -> Parsed? {
        guard !bytes.isEmpty else { return nil }
        var base = base
        var index = 0
        if bytes[0] == UInt8(ascii: "0") {
            if bytes.count > 1, bytes[1] | 0x20 == UInt8(ascii: "x") {
                base = 16
                index = 2
            } else if base == 0 {
                base = 8
            }
        }
        if base == 0 { base = 10 }
        var value: UInt64 = 0
        var overflow = false
        while index < bytes.count, let digit = hexDigit(bytes[index]), digit < base {
            let (product, o1) = value.multipliedReportingOverflow(by: base)
            let (sum, o2) = product.addingReportingOverflow(digit)
            overflow = overflow || o1 || o2
            value = sum
            index += 1
        }
        return Parsed(value: value, consumed: index, overflow: overflow)
    }

    private static func hexDigit(_ byte: UInt8) -> UInt64? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt64(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt64(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt64(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}
