public import BootImages
import FoundationEssentials
import TerminalText

/// Settings of one `check` run.
public struct LayoutCheckOptions: Sendable {
    /// The board's U-Boot release; types newer than it become errors instead of warnings.
    public var ubootVersion: UBootVersion?
    /// Judge the layout alone, without opening the files of its Binary column.
    public var layoutOnly: Bool
    /// Device sizes and erase units for the device-level checks (defaults otherwise).
    public var plan: PlanOptions
    /// The chip the layout is meant for (`check --soc`): FSBL headers must fit it.
    public var soc: ChipFamily?

    public init(
        ubootVersion: UBootVersion? = nil, layoutOnly: Bool = false, plan: PlanOptions = .init(),
        soc: ChipFamily? = nil
    ) {
        self.ubootVersion = ubootVersion
        self.layoutOnly = layoutOnly
        self.plan = plan
        self.soc = soc
    }
}

/// Everything `check` learned about one file.
public struct LayoutCheckResult: Sendable {
    public var path: String
    /// Sorted by line, then column.
    public var diagnostics: [LayoutDiagnostic]
    /// The rows whose six U-Boot columns are valid, in file order.
    public var lines: [LayoutLine]
    /// Where each row's fields start, by line: column of Opt, Id, Name, Type, IP, Offset, Binary.
    public var fieldColumns: [Int: [Int]]

    public var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }
    public var errorCount: Int { diagnostics.filter { $0.severity == .error }.count }
    public var warningCount: Int { diagnostics.filter { $0.severity == .warning }.count }
}

/// The FlashLayout linter: U-Boot's rules (shared with `UBootLayout`, so verdicts agree) on a
/// lexer that keeps positions, reporting every problem of a file in one run.
public enum LayoutChecker {
    /// Largest file `check` reads; real layouts are a few KiB.
    public static let maximumFileSize = 1 << 20

    /// Checks the file at `path`.
    public static func check(path: String, options: LayoutCheckOptions = .init()) -> LayoutCheckResult {
        // A FIFO or device as the layout would block the read forever: refuse it by type first.
        if case .failure(let problem) = BinaryFile.inspect(path), !problem.reason.hasPrefix("is empty"),
            problem.reason.hasPrefix("is ")
        {
            return LayoutCheckResult(
                path: path,
                diagnostics: [
                    LayoutDiagnostic(
                        line: 0, column: 0, severity: .error, code: .unreadable,
                        message: "the layout "
                            + (problem.reason.split(separator: ";").first.map(String.init) ?? problem.reason)
                            + "; a layout must be a regular text file")
                ], lines: [], fieldColumns: [:])
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            return LayoutCheckResult(
                path: path,
                diagnostics: [
                    LayoutDiagnostic(
                        line: 0, column: 0, severity: .error, code: .unreadable,
                        message: FileManager.default.fileExists(atPath: path)
                            ? "cannot read the file" : "no such file")
                ], lines: [], fieldColumns: [:])
        }
        return check(bytes: Array(data), path: path, options: options)
    }

    /// Checks layout text already in memory; `path` names it in diagnostics and anchors relative
    /// Binary paths.
    public static func check(bytes: [UInt8], path: String, options: LayoutCheckOptions = .init()) -> LayoutCheckResult {
        var run = CheckRun(path: path, options: options)
        run.check(bytes)
        return run.result
    }
}

/// The state of one check: diagnostics collected so far and the rows read.
private struct CheckRun {
    let path: String
    let options: LayoutCheckOptions
    var diagnostics: [LayoutDiagnostic] = []
    var lines: [LayoutLine] = []
    var fieldColumns: [Int: [Int]] = [:]
    /// Features newer than some U-Boot releases, collected when no `--uboot-version` is given.
    var versionNeeds: [(version: UBootVersion, what: String, line: Int, column: Int)] = []

    init(path: String, options: LayoutCheckOptions) {
        self.path = path
        self.options = options
    }

    var result: LayoutCheckResult {
        LayoutCheckResult(
            path: path,
            diagnostics: diagnostics.sorted { ($0.line, $0.column, $1.severity) < ($1.line, $1.column, $0.severity) },
            lines: lines, fieldColumns: fieldColumns)
    }

    mutating func report(_ line: Int, _ column: Int, _ severity: Severity, _ code: DiagnosticCode, _ message: String) {
        diagnostics.append(
            LayoutDiagnostic(line: line, column: column, severity: severity, code: code, message: message))
    }

    mutating func check(_ raw: [UInt8]) {
        guard screen(raw) else { return }
        var bytes = raw
        if LayoutHeader(raw) != nil {
            report(0, 0, .note, .notALayout, "the file starts with an STM32 header; checking the layout inside it")
            if case .failure(let error) = UBootLayout.parse(raw), error.message.hasPrefix("Layout: invalid checksum") {
                report(
                    0, 0, .error, .notALayout,
                    "the STM32 header does not match its layout (U-Boot: \"\(error.message)\")")
            }
            bytes = Array(raw.dropFirst(LayoutHeader.length).prefix(Int(readLE32(raw, 76))))
        }
        lexAndValidate(bytes)
        reportVersionNeeds()
        checkLayoutWide(bytes)
        compareWithRawParse(raw)
        let plan = checkDevices()
        if !options.layoutOnly { checkFiles(plan) }
    }

    /// Rejects input that is not text at all, with one clear error.
    mutating func screen(_ raw: [UInt8]) -> Bool {
        if raw.count > LayoutChecker.maximumFileSize {
            report(
                0, 0, .error, .fileTooLarge,
                "the file is \(raw.count) bytes; a FlashLayout is a small text file (U-Boot takes at most \(UBootLayout.maximumSize) bytes)"
            )
            return false
        }
        let body = LayoutHeader(raw) != nil ? Array(raw.dropFirst(LayoutHeader.length)) : raw
        if let nul = body.firstIndex(of: 0) {
            let (line, column) = position(of: nul, in: body)
            report(
                line, column, .error, .binaryInput,
                "the file contains a NUL byte: this is binary data, not a FlashLayout")
            return false
        }
        if String(validating: body, as: UTF8.self) == nil {
            var index = 0
            var iterator = body.makeIterator()
            var decoder = UTF8()
            loop: while true {
                switch decoder.decode(&iterator) {
                case .scalarValue(let scalar): index += UTF8.width(scalar)
                case .emptyInput: break loop
                case .error: break loop
                }
            }
            let (line, column) = position(of: index, in: body)
            report(line, column, .error, .invalidUTF8, "the file is not valid UTF-8 text")
            return false
        }
        return true
    }

    private func position(of offset: Int, in bytes: [UInt8]) -> (Int, Int) {
        var line = 1
        var lineStart = 0
        for index in 0..<min(offset, bytes.count) where bytes[index] == UInt8(ascii: "\n") {
            line += 1
            lineStart = index + 1
        }
        return (line, offset - lineStart + 1)
    }

    // MARK: Lines and fields

    mutating func lexAndValidate(_ bytes: [UInt8]) {
        var physicalLines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
        if bytes.last == UInt8(ascii: "\n") { physicalLines.removeLast() }
        if !bytes.isEmpty, bytes.last != UInt8(ascii: "\n") {
            report(
                physicalLines.count, 0, .warning, .noFinalNewline,
                "no newline at the end of the file (harmless here; some tools drop the last line)")
        }
        var crlfLines: [Int] = []
        var tabRunLines: [Int] = []
        for (index, var text) in physicalLines.enumerated() {
            let number = index + 1
            if text.last == UInt8(ascii: "\r") {
                text.removeLast()
                crlfLines.append(number)
            }
            if text.contains(UInt8(ascii: "\r")) {
                report(
                    number, 0, .warning, .crlf,
                    "a carriage return inside the line; U-Boot drops it and everything after it in that field")
                text.removeAll { $0 == UInt8(ascii: "\r") }
            }
            if text.allSatisfy({ $0 == UInt8(ascii: "\t") }) { continue }
            let firstData = text.firstIndex { $0 != UInt8(ascii: "\t") } ?? 0
            if text[firstData] == UInt8(ascii: "#") { continue }
            if lexRow(text, line: number) { tabRunLines.append(number) }
        }
        if let first = crlfLines.first {
            report(
                first, 0, .warning, .crlf,
                "Windows line endings (CRLF) on \(crlfLines.count) line(s); U-Boot drops the CR, and this tool sends LF"
            )
        }
        if let first = tabRunLines.first {
            report(
                first, 0, .warning, .tabRun,
                "TABs used for alignment on \(tabRunLines.count) line(s); U-Boot treats a run of TABs as one separator, but ST's toolbox expects exactly 7 fields"
            )
        }
    }

    /// Splits one data line on TABs and validates it. Returns true when it used a TAB run.
    mutating func lexRow(_ text: [UInt8], line: Int) -> Bool {
        var fields: [(text: [UInt8], column: Int)] = []
        var start = 0
        var usedRun = false
        var index = 0
        while index <= text.count {
            if index == text.count || text[index] == UInt8(ascii: "\t") {
                if index > start {
                    fields.append((Array(text[start..<index]), start + 1))
                } else if index < text.count, !fields.isEmpty {
                    usedRun = true
                }
                start = index + 1
            }
            index += 1
        }
        if text.first == UInt8(ascii: "\t") { usedRun = true }
        if text.last == UInt8(ascii: "\t") {
            report(
                line, text.count, .warning, .trailingTab,
                "TAB at the end of the line; this tool ignores it, but U-Boot given this file raw would merge the next line into this one (or drop this line if it is the last)"
            )
        }
        for (field, column) in fields {
            if let dollar = find(Array("${".utf8), in: field) {
                report(
                    line, column + dollar, .error, .unexpandedTemplate,
                    "unexpanded template variable '\(String(decoding: field, as: UTF8.self))': generate the layout first (the build substitutes ${...})"
                )
            }
        }
        if fields.count < 6 {
            var message =
                "only \(fields.count) column(s); a row needs Opt, Id, Name, Type, IP and Offset (U-Boot: \"Layout line \(line): no enought column\")"
            if fields.count == 1, fields[0].text.contains(UInt8(ascii: " ")) {
                message += "; the columns seem separated by spaces, but only TABs separate columns"
            }
            let keyword = String(decoding: fields[0].text, as: UTF8.self)
            if ["PARTITION", "URI", "UUID", "MODULE", "ARCH"].contains(keyword) {
                message += "; '\(shown(keyword))' is a directive of Linaro's .fld format, which is not a FlashLayout"
            }
            report(line, fields.last.map { $0.column } ?? 1, .error, .missingColumns, message)
            validateRow(fields, line: line)
            return usedRun
        }
        if fields.count > 7 {
            report(
                line, fields[7].column, .warning, .extraColumns,
                "\(fields.count) columns; U-Boot reads the first six, this tool the seventh (Binary), and the rest are ignored"
            )
        }
        fieldColumns[line] = fields.map(\.column)
        validateRow(fields, line: line)
        return usedRun
    }

    mutating func validateRow(_ fields: [(text: [UInt8], column: Int)], line: Int) {
        func reject(_ rejection: UBootField.Rejection, column: Int, code: DiagnosticCode, _ what: String) {
            var message = what + " (U-Boot: \"\(shown(rejection.ubootMessage(line: line), limit: 160))\")"
            if rejection.text.contains(" "), !what.contains("the field contains a space") {
                message += "; the field contains a space, and U-Boot keeps spaces as part of the field"
            }
            report(line, column, .error, code, message)
        }
        guard fields.count >= 6 else {
            // U-Boot checks each column as it reads it: report what the present ones would get.
            let checks: [([UInt8]) -> UBootField.Rejection?] = [
                { UBootField.option($0).failure }, { UBootField.id($0).failure }, { UBootField.name($0).failure },
                { UBootField.type($0).failure }, { UBootField.ip($0).failure },
            ]
            let codes: [DiagnosticCode] = [.invalidOption, .invalidID, .nameTooLong, .invalidType, .invalidIP]
            for (index, field) in fields.enumerated() where index < checks.count {
                if index == 0, let rejection = checks[0](field.text) {
                    let (code, what) = Self.describeOption(rejection)
                    report(
                        line, field.column, .error, code,
                        what + " (U-Boot: \"\(shown(rejection.ubootMessage(line: line), limit: 160))\")")
                } else if let rejection = checks[index](field.text) {
                    let what = ["option", "Id", "name", "type", "IP"][index]
                    report(
                        line, field.column, .error, codes[index],
                        "invalid \(what) '\(shown(rejection.text))' (U-Boot: \"\(shown(rejection.ubootMessage(line: line), limit: 160))\")"
                    )
                }
            }
            return
        }
        let (opt, id, name, type, ip, offset) = (fields[0], fields[1], fields[2], fields[3], fields[4], fields[5])
        var valid = true

        var options: LayoutOptions = []
        switch UBootField.option(opt.text) {
        case .success(let value): options = value
        case .failure(let rejection):
            valid = false
            let (code, what) = Self.describeOption(rejection)
            reject(rejection, column: opt.column, code: code, what)
        }

        var phase: UInt8 = 0
        switch UBootField.id(id.text) {
        case .success(let value):
            phase = value
            let text = String(decoding: id.text, as: UTF8.self)
            let isHex = text.lowercased().hasPrefix("0x")
            if !isHex, text.count > 1, text.hasPrefix("0") {
                report(
                    line, id.column, .warning, .octalID,
                    "Id '\(shown(text))' has a leading 0, so U-Boot reads it as octal (\(value) = \(hexByte(value))); write \(hexByte(value)) if that is what you mean"
                )
            } else if !isHex, value >= 10 {
                report(
                    line, id.column, .warning, .decimalID,
                    "Id '\(shown(text))' is decimal for U-Boot (\(hexByte(value))) but hexadecimal for ST's tools; write it with 0x"
                )
            }
        case .failure(let rejection):
            valid = false
            let text = rejection.text
            let hint =
                Int(text.dropFirst(2), radix: 16).map { $0 > 0xF0 } ?? false
                ? "Id '\(shown(text))' is above 0xF0, the last user partition"
                : "invalid Id '\(shown(text))': write the phase as 0xNN, at most 0xF0"
            reject(rejection, column: id.column, code: .invalidID, hint)
        }

        var partitionName = ""
        switch UBootField.name(name.text) {
        case .success(let value):
            partitionName = value
            if value.contains(" ") {
                report(
                    line, name.column, .warning, .spaceInField,
                    "the name '\(value)' contains a space; U-Boot keeps it, but alternate names and GPT labels with spaces confuse tools"
                )
            }
        case .failure(let rejection):
            valid = false
            reject(
                rejection, column: name.column, code: .nameTooLong,
                "name '\(shown(rejection.text))' is \(name.text.count) bytes; U-Boot and GPT allow \(UBootField.maximumNameLength)"
            )
        }

        var partitionType = PartitionType.binary(copies: 1)
        switch UBootField.type(type.text) {
        case .success(let value):
            partitionType = value
            if case .binary(let copies) = value, copies != 1, !(2...8).contains(copies) {
                report(
                    line, type.column, .warning, .binaryCount,
                    "'\(rejection: type.text)' asks for \(copies) copies; use Binary(n) with n from 2 (NAND only)")
            }
            if let needed = value.minimumUBootVersion {
                typeVersion(needed, what: "type \(value)", line: line, column: type.column)
            }
        case .failure(let rejection):
            valid = false
            let known = ["Binary", "FIP", "FWU_MDATA", "ENV", "System", "ESP", "FileSystem", "RawImage"]
            let text = rejection.text
            var message =
                "unknown type '\(shown(text))'; U-Boot knows " + known.joined(separator: ", ") + " and Binary(n)"
            if let match = known.first(where: { $0.lowercased() == text.lowercased() }) {
                message = "type '\(shown(text))' should be spelled '\(match)' (types are case-sensitive)"
            }
            reject(rejection, column: type.column, code: .invalidType, message)
        }

        var target = LayoutTarget.none
        switch UBootField.ip(ip.text) {
        case .success(let value):
            target = value
            if value.kind == .spiNand || value.kind == .ram {
                typeVersion(
                    UBootVersion(year: 2020, month: 10), what: "IP \(value.kind.rawValue)", line: line,
                    column: ip.column)
            }
        case .failure(let rejection):
            valid = false
            let text = rejection.text
            var message = "unknown IP '\(shown(text))'; use none, mmcN, norN, nandN, spi-nandN or ram (N one digit)"
            if text.lowercased().hasPrefix("sdmmc"), let digit = text.last, digit.isNumber {
                message =
                    "IP '\(shown(text))' is the SoC controller's name; U-Boot wants its MMC index: mmc0 is usually the SD card (SDMMC1), mmc1 the eMMC (SDMMC2)"
            } else if text.lowercased() != text,
                ["none", "mmc", "nor", "nand", "spi-nand", "ram"].contains(where: { text.lowercased().hasPrefix($0) })
            {
                message = "IP '\(shown(text))' must be lower-case"
            }
            reject(rejection, column: ip.column, code: .invalidIP, message)
        }

        var partitionOffset = PartitionOffset.address(0)
        switch UBootField.offset(offset.text) {
        case .success(let value):
            partitionOffset = value
            if (value == .boot1 || value == .boot2), valid, target.kind != .mmc {
                report(
                    line, offset.column, .error, .invalidOffset,
                    "'\(value)' is an eMMC hardware boot partition, but the IP is \(target) (U-Boot: \"\(partitionName) (\(hexByte(phase))): hw partition not expected : \(value == .boot1 ? -1 : -2)\")"
                )
            }
        case .failure(let rejection):
            valid = false
            let text = rejection.text
            let message =
                text == "none"
                ? "offset 'none' is not accepted by U-Boot; use 0x0 on '-' and none lines"
                : "invalid offset '\(shown(text))'; use a number (0x hex or decimal), boot1 or boot2"
            reject(rejection, column: offset.column, code: .invalidOffset, message)
        }

        var binary: String?
        if fields.count > 6 {
            let text = String(decoding: fields[6].text, as: UTF8.self)
            if text != "none" { binary = text }
            if text.hasPrefix(" ") || text.hasSuffix(" ") {
                report(
                    line, fields[6].column, .warning, .spaceInField,
                    "the Binary path '\(shown(text))' starts or ends with a space")
            }
            if isPlaceholder(text) {
                report(
                    line, fields[6].column, .warning, .templatePlaceholder,
                    "the Binary '\(shown(text))' looks like an unsubstituted template placeholder")
            }
        }
        guard valid else { return }
        lines.append(
            LayoutLine(
                line: line, options: options, optionText: String(decoding: opt.text, as: UTF8.self), id: phase,
                name: partitionName, type: partitionType, target: target, offset: partitionOffset, binary: binary))
    }

    /// Our explanation of a rejected Opt field, with the likely cause.
    static func describeOption(_ rejection: UBootField.Rejection) -> (DiagnosticCode, String) {
        let text = rejection.text
        if case .missingSelect = rejection.kind {
            return (.missingSelect, "option '\(shown(text))' lacks 'P'; use '-' to skip the line, or add 'P'")
        }
        if text == "Selected" || text == "1" {
            return (
                .invalidOption,
                "invalid option '\(shown(text))': this looks like the legacy 2018 8-column layout format, which U-Boot no longer reads"
            )
        }
        if text.hasPrefix(" "), text.contains("#") {
            return (
                .invalidOption,
                "invalid option '\(shown(text))': a comment must start with '#' as its first character; the leading space makes it a data line"
            )
        }
        if text.uppercased() != text, text.allSatisfy({ "pedPED".contains($0) }) {
            return (.invalidOption, "invalid option '\(shown(text))': options are upper-case P, E, D")
        }
        if text.contains(" ") {
            return (
                .invalidOption,
                "invalid option '\(shown(text))': the field contains a space, and U-Boot keeps spaces as part of the field"
            )
        }
        return (.invalidOption, "invalid option '\(shown(text))': use '-' or letters from P, E, D including P")
    }

    /// A type or IP that an older U-Boot rejects: one warning per file (see `reportVersionNeeds`),
    /// or an error per line against `--uboot-version`.
    mutating func typeVersion(_ needed: UBootVersion, what: String, line: Int, column: Int) {
        guard let version = options.ubootVersion else {
            versionNeeds.append((needed, what, line, column))
            return
        }
        if version < needed {
            report(
                line, column, .error, .typeTooNew,
                "\(what) needs ST U-Boot \(needed) or later; U-Boot \(version) rejects the whole layout")
        }
    }

    /// One warning naming the newest U-Boot release the layout needs and why.
    mutating func reportVersionNeeds() {
        guard let newest = versionNeeds.map(\.version).max(),
            let first = versionNeeds.first(where: { $0.version == newest })
        else {
            return
        }
        var seen: Set<String> = []
        let reasons = versionNeeds.sorted { $0.version > $1.version }.filter { seen.insert($0.what).inserted }
            .map { "\($0.what) (line \($0.line)) needs \($0.version)" }
        report(
            first.line, first.column, .warning, .typeTooNew,
            "this layout needs ST U-Boot \(newest) or later: " + reasons.joined(separator: ", ")
                + "; an older U-Boot rejects the whole layout (pass --uboot-version to check against yours)")
    }

    // MARK: Whole-layout checks

    mutating func checkLayoutWide(_ bytes: [UInt8]) {
        let hadRowErrors = diagnostics.contains { $0.severity == .error && $0.line > 0 }
        if lines.isEmpty {
            if !hadRowErrors {
                report(0, 0, .error, .noPartition, "no data row (U-Boot: \"Layout: no partition found\")")
            }
            return
        }
        if lines.count > Int(UBootField.lastUserPhase) {
            report(
                0, 0, .error, .tooManyLines,
                "\(lines.count) rows; U-Boot takes at most 240 (U-Boot: \"Layout: too many partition (\(lines.count))\")"
            )
        }
        let payload = LayoutPayload.normalized(lines)
        if payload.bytes.count > UBootLayout.maximumSize {
            report(
                0, 0, .error, .layoutTooLarge,
                "the layout sent to the board would be \(payload.bytes.count) bytes; U-Boot's buffer holds \(UBootLayout.maximumSize)"
            )
        }
        // treat_partition_list(), reporting every problem rather than the first.
        var devices: [LayoutTarget] = []
        var firstLineOfID: [UInt8: LayoutLine] = [:]
        var reportedDevices = false
        for line in lines {
            if line.target.kind == .none {
                if line.isSelected {
                    report(
                        line.line, column(line, 0), .error, .selectedNone,
                        "'\(line.optionText)' on a none line: IP none lines are boot stages loaded over USB, not programmed; use '-' (U-Boot: \"Layout: selected none phase = 0x\(hex(line.id)) for part \(line.name)\")"
                    )
                }
                continue
            }
            if line.id == 0 {
                report(
                    line.line, column(line, 1), .error, .invalidPhase,
                    "Id 0x00 is the FlashLayout itself and cannot be a partition (U-Boot: \"Layout: invalid phase = 0x0 for part \(line.name)\")"
                )
            }
            if let first = firstLineOfID[line.id] {
                report(
                    line.line, column(line, 1), .error, .duplicateID,
                    "Id \(hexByte(line.id)) is already used on line \(first.line) (U-Boot: \"Layout: duplicated phase 0x\(hex(line.id)) for part \(first.name) and \(line.name)\")"
                )
            } else {
                firstLineOfID[line.id] = line
            }
            if !devices.contains(line.target) {
                devices.append(line.target)
                if devices.count > UBootLayout.maximumDevices, !reportedDevices {
                    reportedDevices = true
                    report(
                        line.line, column(line, 4), .error, .tooManyDevices,
                        "a sixth device (\(line.target)); U-Boot handles at most five (U-Boot: \"Layout: too many device\")"
                    )
                }
            }
            if line.isRequested, line.binary == nil {
                report(
                    line.line, column(line, 6), .error, .selectedWithoutFile,
                    "'\(line.optionText)' without E asks U-Boot to program '\(line.name)', but the Binary is none: U-Boot will ask for data this tool cannot send (flash refuses it); use PE to create it empty, or '-'"
                )
            }
        }
        for stage in lines where stage.isBootStage && stage.binary == nil && [1, 2, 3].contains(stage.id) {
            report(
                stage.line, column(stage, 6), .warning, .bootStageWithoutFile,
                "boot stage \(hexByte(stage.id)) (\(stage.name)) has no file; flashing can only start from a board that is already past it"
            )
        }
        if !devices.isEmpty, !lines.contains(where: { $0.isBootStage && $0.id == 1 }) {
            report(
                0, 0, .warning, .missingBootStage,
                "no FSBL line (Id 0x01, IP none): a board in ROM code DFU cannot be started from this layout")
        }
        var names: [String: LayoutLine] = [:]
        for line in lines where line.target.kind != .none {
            if let first = names[line.name] {
                report(line.line, column(line, 2), .warning, .duplicateName, duplicateNameMessage(line, first: first))
            } else {
                names[line.name] = line
            }
        }
        checkUnconditionalDeviceRules()
    }

    /// Only an MMC device on which every line is `P` gets a GPT written; elsewhere the clash is
    /// between DFU alternates (and, on MTD, the board's partition names).
    func duplicateNameMessage(_ line: LayoutLine, first: LayoutLine) -> String {
        let sameDevice = line.target == first.target
        let gptWritten =
            sameDevice && line.target.kind == .mmc
            && lines.filter { $0.target == line.target }.allSatisfy(\.isSelected)
        let consequence =
            gptWritten
            ? "the partitions get the same GPT label on \(line.target)"
            : "U-Boot announces two DFU alternates named '\(line.name)'"
                + (sameDevice ? " on \(line.target)" : " (\(first.target) and \(line.target))")
                + ", and a tool that picks alternates by name takes the first"
        return "name '\(line.name)' is also used on line \(first.line); \(consequence)"
    }

    /// `init_device()` failures that no device geometry avoids, on every device, from the lines
    /// that parsed (so they show even when other lines have errors).
    mutating func checkUnconditionalDeviceRules() {
        var devices: [LayoutDevice] = []
        for line in lines where line.target.kind != .none {
            if let index = devices.firstIndex(where: { $0.target == line.target }) {
                devices[index].lines.append(line)
            } else {
                devices.append(LayoutDevice(target: line.target, lines: [line]))
            }
        }
        for device in devices {
            for problem in DevicePlanner.unconditionalProblems(device) {
                let line = problem.error.line ?? 0
                let quoted = "(U-Boot: \"\(problem.error.message)\")"
                switch problem.rule {
                case .sameOffset:
                    report(
                        line, fieldColumn(line, 5), .error, .sameOffset,
                        "two partitions of \(device.target) start at the same offset; U-Boot rejects the device whatever its size \(quoted)"
                    )
                case .insideGPT:
                    report(
                        line, fieldColumn(line, 5), .error, .offsetInGPT,
                        "offset below 0x\(hex(DevicePlanner.firstUsableMMCByte)), inside the primary GPT of \(device.target) (34 blocks of 512 bytes); U-Boot rejects it whatever the card \(quoted)"
                    )
                case .multipleBinary:
                    report(
                        line, fieldColumn(line, 3), .error, .multipleBinary,
                        "Binary(n) with n > 1 writes FSBL copies only on NAND/SPI-NAND fsbl* boot partitions (Id below 0x10), not on \(device.target) \(quoted)"
                    )
                }
            }
        }
    }

    /// Sending the file raw (as some tools do) may fail where our normalized copy does not.
    mutating func compareWithRawParse(_ raw: [UInt8]) {
        guard !diagnostics.contains(where: { $0.severity == .error }) else { return }
        if case .failure(let error) = UBootLayout.parse(raw) {
            report(
                error.line ?? 0, 0, .warning, .rawParseDiffers,
                "this tool sends a normalized copy and U-Boot accepts it, but U-Boot given this file raw (as some tools send it) stops with: \"\(error.message)\""
            )
        }
    }

    /// `init_device()` needs the board's geometry, which `check` can only assume: its verdicts
    /// are warnings here and errors in `plan`, where the user states the geometry.
    /// With `--device-size`/`--erase-size` given for the device, the verdict is U-Boot's and an
    /// error; with the documented defaults it is a warning.
    mutating func checkDevices() -> PartitionPlan? {
        guard !diagnostics.contains(where: { $0.severity == .error }) else { return nil }
        var planOptions = options.plan
        planOptions.layoutDirectory = parentDirectory(of: path)
        switch PartitionPlanner.plan(lines, options: planOptions) {
        case .success(let plan): return plan
        case .failure(let error):
            let device = lines.first { $0.line == error.line }?.target.description
            let stated = device.map { planOptions.deviceSizes[$0] != nil || planOptions.eraseSizes[$0] != nil } ?? false
            if stated {
                report(
                    error.line ?? 0, 0, .error, .deviceCheck,
                    "with the geometry given for \(device ?? "the device"), U-Boot would reject this device: \"\(error.message)\""
                )
            } else {
                report(
                    error.line ?? 0, 0, .warning, .deviceCheck,
                    "with the default device geometry (docs/layout-format.md), U-Boot would reject this device: \"\(error.message)\"; give the real one with --device-size/--erase-size"
                )
            }
            return nil
        }
    }

    // MARK: Files

    mutating func checkFiles(_ plan: PartitionPlan?) {
        if let plan {
            for device in plan.devices {
                for partition in device.partitions where partition.line.isRequested {
                    guard let size = partition.size, let file = plan.files[partition.line.id], file.size > Int64(size)
                    else { continue }
                    report(
                        partition.line.line, column(partition.line, 6), .error, .fileLargerThanPartition,
                        "'\(partition.line.binary ?? "")' is \(file.size) bytes but partition '\(partition.line.name)' holds \(size) bytes"
                    )
                }
            }
        }
        let directory = parentDirectory(of: path)
        let bootChecks = BootFileChecks(lines: lines, soc: options.soc)
        for line in lines where line.binary != nil && (line.isRequested || (line.isBootStage && line.id <= 3)) {
            guard let binary = line.binary else { continue }
            let location = BinaryPath.locate(binary, layoutDirectory: directory, base: options.plan.binaryBase)
            guard let resolved = location.path else {
                report(
                    line.line, column(line, 6), .error, .missingFile,
                    "file '\(shown(binary))' not found (looked for it as given and relative to \(directory.isEmpty ? "." : directory))"
                )
                continue
            }
            if let (cwd, beside) = location.shadowed {
                let choice =
                    options.plan.binaryBase.map {
                        "--binaries-from \($0.rawValue) picks '\($0 == .cwd ? cwd : beside)'"
                    }
                    ?? "this tool uses '\(beside)' (STM32CubeProgrammer's choice) and flash refuses until --binaries-from layout|cwd picks one"
                report(
                    line.line, column(line, 6), .warning, .shadowedBinary,
                    "'\(shown(binary))' exists both relative to the working directory ('\(cwd)') and next to the layout ('\(beside)'), and they are different files; \(choice)"
                )
            }
            if case .failure(let problem) = BinaryFile.inspect(resolved) {
                report(line.line, column(line, 6), .error, .unusableFile, "\(problem)")
                continue
            }
            if BinaryPath.isOutside(resolved, directory: directory) {
                report(
                    line.line, column(line, 6), .note, .binaryOutsideLayout,
                    "'\(resolved)' is outside the layout's folder tree; copying the layout folder elsewhere will not take it along"
                )
            }
            for (severity, code, message) in bootChecks.findings(for: line, path: resolved) {
                report(line.line, column(line, 6), severity, code, message)
            }
        }
    }

    func column(_ line: LayoutLine, _ field: Int) -> Int { fieldColumn(line.line, field) }

    func fieldColumn(_ line: Int, _ field: Int) -> Int {
        guard let columns = fieldColumns[line], field < columns.count else { return 0 }
        return columns[field]
    }

    func isPlaceholder(_ text: String) -> Bool {
        let percent = text.split(separator: "%", omittingEmptySubsequences: false)
        if percent.count >= 3 { return true }
        if text.contains("#"), text.split(separator: "#", omittingEmptySubsequences: false).count >= 3 { return true }
        return false
    }

    func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where Array(haystack[start..<start + needle.count]) == needle {
            return start
        }
        return nil
    }
}

extension DefaultStringInterpolation {
    fileprivate mutating func appendInterpolation(rejection bytes: [UInt8]) {
        appendLiteral(String(decoding: bytes, as: UTF8.self))
    }
}

/// A field quoted from the file in a message: escaped and, when long, shortened in the middle.
func shown(_ text: String, limit: Int = 80) -> String { TerminalText.field(text, limit: limit) }

/// `0x0A` style: the way layouts write Ids.
public func hexByte(_ value: UInt8) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return "0x" + (digits.count < 2 ? "0" : "") + digits
}

/// The folder part of a path (`""` when there is none).
public func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "" }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}
