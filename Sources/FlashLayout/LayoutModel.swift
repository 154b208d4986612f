/// The Opt column: `-`, or letters P (select), E (empty), D (delete).
public struct LayoutOptions: OptionSet, Sendable, Hashable, Codable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// `P`: U-Boot programs this line (asks the host for its data unless `E`).
    public static let select = LayoutOptions(rawValue: 1)
    /// `E`: created but left empty; read-only alternate.
    public static let empty = LayoutOptions(rawValue: 2)
    /// `D`: erased before programming.
    public static let delete = LayoutOptions(rawValue: 4)
}

/// The Type column.
public enum PartitionType: Sendable, Hashable, Codable, CustomStringConvertible {
    /// `Binary` or `Binary(n)`: raw data; `n` copies on NAND (U-Boot writes n−1 extra FSBL copies).
    case binary(copies: Int)
    case fip, fwuMetadata, env, system, esp, fileSystem, rawImage

    /// The spelling in a layout file.
    public var description: String {
        switch self {
        case .binary(let copies): copies == 1 ? "Binary" : "Binary(\(copies))"
        case .fip: "FIP"
        case .fwuMetadata: "FWU_MDATA"
        case .env: "ENV"
        case .system: "System"
        case .esp: "ESP"
        case .fileSystem: "FileSystem"
        case .rawImage: "RawImage"
        }
    }

    /// The oldest ST U-Boot release that parses this type (protocol reference §C.10.1).
    public var minimumUBootVersion: UBootVersion? {
        switch self {
        case .fip: UBootVersion(year: 2021, month: 10)
        case .fwuMetadata, .env, .esp: UBootVersion(year: 2022, month: 10)
        default: nil
        }
    }
}

/// The IP column's device kind.
public enum TargetKind: String, Sendable, Hashable, Codable, CaseIterable {
    case none, mmc, nor, nand, spiNand = "spi-nand", ram
}

/// The IP column: a device kind and its one-digit index (`mmc1`); `none` for RAM-loaded stages.
public struct LayoutTarget: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    public var kind: TargetKind
    public var index: Int

    public init(kind: TargetKind, index: Int) {
        self.kind = kind
        self.index = index
    }

    public static let none = LayoutTarget(kind: .none, index: 0)

    /// `mmc0`, `spi-nand0`, `ram0`, `none`.
    public var description: String { kind == .none ? "none" : "\(kind.rawValue)\(index)" }

    /// True for NOR/NAND/SPI-NAND, whose partitions U-Boot never creates (they must match MTD).
    public var isMTD: Bool { kind == .nor || kind == .nand || kind == .spiNand }

    public static func < (a: LayoutTarget, b: LayoutTarget) -> Bool { a.description < b.description }
}

/// The Offset column.
public enum PartitionOffset: Sendable, Hashable, Codable, CustomStringConvertible {
    /// A byte offset on the device (a RAM address for `ram`).
    case address(UInt64)
    /// An eMMC hardware boot partition.
    case boot1, boot2

    public var description: String {
        switch self {
        case .address(let value): "0x" + String(value, radix: 16, uppercase: true)
        case .boot1: "boot1"
        case .boot2: "boot2"
        }
    }

    /// The byte offset, nil for boot partitions.
    public var address: UInt64? {
        if case .address(let value) = self { return value }
        return nil
    }
}

/// One data row of a FlashLayout, as U-Boot understands it, plus the host's Binary column.
public struct LayoutLine: Sendable, Hashable, Codable {
    /// 1-based physical line in the file it came from.
    public var line: Int
    public var options: LayoutOptions
    /// The Opt text as written (`-`, `P`, `PED` …).
    public var optionText: String
    public var id: UInt8
    public var name: String
    public var type: PartitionType
    public var target: LayoutTarget
    public var offset: PartitionOffset
    /// The 7th column: a host file path, nil when absent or `none`.
    public var binary: String?

    public init(
        line: Int, options: LayoutOptions, optionText: String, id: UInt8, name: String, type: PartitionType,
        target: LayoutTarget, offset: PartitionOffset, binary: String?
    ) {
        self.line = line
        self.options = options
        self.optionText = optionText
        self.id = id
        self.name = name
        self.type = type
        self.target = target
        self.offset = offset
        self.binary = binary
    }

    public var isSelected: Bool { options.contains(.select) }
    public var isEmpty: Bool { options.contains(.empty) }
    public var isDelete: Bool { options.contains(.delete) }
    /// True when U-Boot will ask the host for this line's data (`P` without `E`, on a device).
    public var isRequested: Bool { isSelected && !isEmpty && target.kind != .none }
    /// True for RAM-loaded boot stages (IP `none`): FSBL 0x01, DDR FIP 0x02, SSBL/FIP 0x03.
    public var isBootStage: Bool { target.kind == .none }
}

/// An ST U-Boot release, `vYYYY.MM` (also accepts `YYYY.MM`).
public struct UBootVersion: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var year: Int
    public var month: Int

    public init(year: Int, month: Int) {
        self.year = year
        self.month = month
    }

    public init?(_ text: String) {
        var body = Substring(text)
        if body.hasPrefix("v") || body.hasPrefix("V") { body = body.dropFirst() }
        let parts = body.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].count == 4, let year = Int(parts[0]),
            let month = Int(parts[1].prefix { $0.isNumber }), (1...12).contains(month)
        else { return nil }
        self.year = year
        self.month = month
    }

    public var description: String { "v\(year)." + (month < 10 ? "0" : "") + "\(month)" }

    public static func < (a: UBootVersion, b: UBootVersion) -> Bool { (a.year, a.month) < (b.year, b.month) }
}

/// An error exactly as U-Boot's `stm32prog` reports it (first error wins on the board).
public struct UBootLayoutError: Error, Sendable, Hashable, CustomStringConvertible {
    /// U-Boot's text, e.g. `Layout line 5: invalid option ' ' in P )`.
    public var message: String
    /// The 1-based physical line it refers to, when it refers to one.
    public var line: Int?

    public init(_ message: String, line: Int? = nil) {
        self.message = message
        self.line = line
    }

    public var description: String { message }
}
