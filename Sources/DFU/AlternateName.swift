public import USBModel

/// The meaning of an alternate setting's string, `@NAME[ ]/0xID/COUNT*SIZE UNIT ACCESS`
/// (reference §3). Alternates are found by `phaseID`, never by index: the firmwares disagree on
/// the order.
public struct DFUAlternateName: Sendable, Hashable {
    /// How a firmware spells the string.
    public enum Style: Sendable, Hashable {
        /// ROM code and TF-A: a space before the slash, upper-case hex, the unit as written.
        case romOrTFA
        /// U-Boot `stm32prog`: no space, lower-case hex, `1*`, unit chosen by U-Boot's rule.
        case uboot
    }

    public var name: String
    public var phaseID: UInt8
    /// The size in bytes (COUNT × SIZE × unit).
    public var size: UInt64
    /// The unit as written: `B`, `K`, `M` or `G`.
    public var unit: Character
    /// DfuSe access letter: `a` readable, `e` readable and writable (`b`…`g` also accepted).
    public var access: Character
    /// The COUNT before `*` (always 1 on STM32MP).
    public var count: UInt64

    public init(name: String, phaseID: UInt8, size: UInt64, unit: Character, access: Character, count: UInt64 = 1) {
        self.name = name
        self.phaseID = phaseID
        self.size = size
        self.unit = unit
        self.access = access
        self.count = count
    }

    /// A name whose unit follows U-Boot's rule for `size` bytes.
    public init(name: String, phaseID: UInt8, byteSize: UInt64, access: Character) {
        self.init(
            name: name, phaseID: phaseID, size: byteSize, unit: Self.ubootUnit(for: byteSize).unit, access: access)
    }

    /// Bytes per unit letter.
    public static func multiplier(_ unit: Character) -> UInt64? {
        switch unit {
        case "B": 1
        case "K": 1 << 10
        case "M": 1 << 20
        case "G": 1 << 30
        default: nil
        }
    }

    /// U-Boot's `stm32prog_alt_add()` rule: the largest unit the size is *strictly* greater than
    /// (so 1 MiB is written `1024K`), value truncated.
    public static func ubootUnit(for bytes: UInt64) -> (value: UInt64, unit: Character) {
        for unit: Character in ["G", "M", "K"] {
            let scale = multiplier(unit)!
            if bytes > scale { return (bytes / scale, unit) }
        }
        return (bytes, "B")
    }

    /// Parses either spelling; nil when the string does not follow the grammar. Hex digits are
    /// case-insensitive and spaces before the slash are dropped (ST's own parser does the same).
    public static func parse(_ s: String) -> DFUAlternateName? {
        guard s.first == "@", let slash = s.firstIndex(of: "/") else { return nil }
        var name = s[s.index(after: s.startIndex)..<slash]
        while name.last == " " { name = name.dropLast() }
        guard !name.isEmpty else { return nil }
        let fields = s[s.index(after: slash)...].split(separator: "/", omittingEmptySubsequences: false)
        guard fields.count == 2 else { return nil }
        let idField = fields[0]
        guard idField.count > 2, idField.hasPrefix("0x") || idField.hasPrefix("0X"),
            let id = UInt8(idField.dropFirst(2), radix: 16)
        else { return nil }
        let sizeField = fields[1]
        guard let star = sizeField.firstIndex(of: "*"), let count = UInt64(sizeField[..<star]) else { return nil }
        let rest = sizeField[sizeField.index(after: star)...]
        let digits = rest.prefix { $0.isASCII && $0.isNumber }
        let letters = rest.dropFirst(digits.count)
        guard let value = UInt64(digits), letters.count == 2, let unit = letters.first, let access = letters.last,
            let scale = multiplier(unit), ("a"..."g").contains(access)
        else { return nil }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: value)
        let (total, overflow2) = bytes.multipliedReportingOverflow(by: scale)
        guard !overflow, !overflow2 else { return nil }
        return DFUAlternateName(name: String(name), phaseID: id, size: total, unit: unit, access: access, count: count)
    }

    /// The string as the given firmware writes it.
    public func formatted(style: Style) -> String {
        switch style {
        case .romOrTFA:
            let scale = Self.multiplier(unit) ?? 1
            let value = size / max(count, 1) / scale
            return "@\(name) /0x\(hex2(phaseID, uppercase: true))/\(count)*\(value)\(unit)\(access)"
        case .uboot:
            let (value, unit) = Self.ubootUnit(for: size)
            let text = "@\(name)/0x\(hex2(phaseID, uppercase: false))/1*\(value)\(unit)\(access)"
            // U-Boot copies the alternate's name into a 32-byte buffer (strlcpy, NUL included).
            return String(text.prefix(31))
        }
    }
}

/// Two hex digits.
func hex2(_ value: UInt8, uppercase: Bool) -> String {
    let s = String(value, radix: 16, uppercase: uppercase)
    return s.count < 2 ? "0" + s : s
}

/// One alternate setting of the DFU interface, with its string and the decoded meaning.
public struct DFUAlternate: Sendable, Hashable {
    public var interface: UInt8
    public var alternateSetting: UInt8
    /// The iInterface string; nil when the device has none (an unreadable one fails
    /// `DFUDevice.open`; a listing from cached descriptors has none either).
    public var string: String?
    /// The decoded string; nil when absent or not in the §3 grammar.
    public var name: DFUAlternateName?

    public init(interface: UInt8, alternateSetting: UInt8, string: String?) {
        self.interface = interface
        self.alternateSetting = alternateSetting
        self.string = string
        self.name = string.flatMap(DFUAlternateName.parse)
    }
}

extension InterfaceAltSetting {
    /// The DFU functional descriptor among this alternate's class descriptors, if any.
    public var dfuFunctionalDescriptor: DFUFunctionalDescriptor? {
        extra.lazy.compactMap {
            $0.count >= 2 && $0[1] == DescriptorType.dfuFunctional ? DFUFunctionalDescriptor(bytes: $0) : nil
        }.first
    }
}
