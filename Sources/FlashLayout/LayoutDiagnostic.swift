/// How bad a finding is, ordered note < warning < error. Errors make `check` exit 1.
public enum Severity: String, Sendable, Hashable, Codable, Comparable {
    case error, warning, note

    private var rank: Int {
        switch self {
        case .note: 0
        case .warning: 1
        case .error: 2
        }
    }

    public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
}

/// One finding about a layout file, located like a compiler diagnostic.
public struct LayoutDiagnostic: Sendable, Hashable, Codable {
    /// 1-based line; 0 for the file as a whole.
    public var line: Int
    /// 1-based byte column on that line; 0 for the whole line or file.
    public var column: Int
    public var severity: Severity
    /// Stable kebab-case code, documented in docs/layout-format.md.
    public var code: String
    /// Lower-case sentence; quotes U-Boot's own message where U-Boot has one.
    public var message: String

    public init(line: Int, column: Int, severity: Severity, code: DiagnosticCode, message: String) {
        self.line = line
        self.column = column
        self.severity = severity
        self.code = code.rawValue
        self.message = message
    }

    /// `path:line:col: severity: message [code]`, the format editors and CI annotators parse.
    public func formatted(path: String) -> String {
        var location = path
        if line > 0 { location += ":\(line)" + (column > 0 ? ":\(column)" : "") }
        return "\(location): \(severity.rawValue): \(message) [\(code)]"
    }
}

/// Every diagnostic code the checker emits. docs/layout-format.md has a section per code.
public enum DiagnosticCode: String, Sendable, CaseIterable, Codable {
    // Input that is not a layout at all.
    case unreadable = "unreadable"
    case fileTooLarge = "file-too-large"
    case binaryInput = "binary-input"
    case invalidUTF8 = "invalid-utf8"
    case notALayout = "not-a-layout"
    // U-Boot rejects these (errors).
    case invalidOption = "invalid-option"
    case missingSelect = "missing-select"
    case invalidID = "invalid-id"
    case nameTooLong = "name-too-long"
    case invalidType = "invalid-type"
    case invalidIP = "invalid-ip"
    case invalidOffset = "invalid-offset"
    case missingColumns = "missing-columns"
    case selectedNone = "selected-none"
    case invalidPhase = "invalid-phase"
    case duplicateID = "duplicate-id"
    case tooManyDevices = "too-many-devices"
    case tooManyLines = "too-many-lines"
    case noPartition = "no-partition"
    case layoutTooLarge = "layout-too-large"
    case typeTooNew = "type-too-new"
    case unexpandedTemplate = "unexpanded-template"
    case sameOffset = "same-offset"
    case offsetInGPT = "offset-in-gpt"
    case multipleBinary = "multiple-binary"
    case selectedWithoutFile = "selected-without-file"
    // Files named in the Binary column.
    case missingFile = "missing-file"
    case unusableFile = "unusable-file"
    case shadowedBinary = "shadowed-binary"
    case binaryOutsideLayout = "binary-outside-layout"
    case fileLargerThanPartition = "file-larger-than-partition"
    case badBootImage = "bad-boot-image"
    case fsblWrongChip = "fsbl-wrong-chip"
    case badFIP = "bad-fip"
    case bootImageInfo = "boot-image"
    case badBlockMap = "bad-block-map"
    case badCompressedImage = "bad-compressed-image"
    case imageInfo = "image-info"
    // Formatting that only a raw parser trips on (warnings: we send a normalized copy).
    case trailingTab = "trailing-tab"
    case tabRun = "tab-run"
    case crlf = "crlf"
    case noFinalNewline = "no-final-newline"
    case rawParseDiffers = "raw-parse-differs"
    case extraColumns = "extra-columns"
    // Accepted by U-Boot but probably not what was meant (warnings).
    case octalID = "octal-id"
    case decimalID = "decimal-id"
    case spaceInField = "space-in-field"
    case bootStageWithoutFile = "boot-stage-without-file"
    case missingBootStage = "missing-boot-stage"
    case duplicateName = "duplicate-name"
    case templatePlaceholder = "template-placeholder"
    case binaryCount = "binary-count"
    case deviceCheck = "device-check"
}
