import Foundation
import TestSupport
import Testing

@testable import FlashLayout

/// One case per diagnostic rule: a tiny layout, and where the finding must land.
struct RuleCase: Sendable, CustomTestStringConvertible {
    var code: DiagnosticCode
    var severity: Severity
    var text: String
    var line: Int
    var column: Int
    /// A fragment the message must contain (U-Boot's own wording where it has one).
    var says: String
    var options = LayoutCheckOptions(layoutOnly: true)

    var testDescription: String { code.rawValue }
}

/// A valid SD-card body used as a base for the single-defect cases.
let fsblLine = "-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\ttf-a.stm32\n"
let goodRow = "P\t0x04\tfsbl1\tBinary\tmmc0\t0x00004400\tfsbl.stm32\n"

let ruleCases: [RuleCase] = [
    RuleCase(
        code: .invalidOption, severity: .error, text: fsblLine + "X\t0x04\tfsbl1\tBinary\tmmc0\t0x4400\tf\n", line: 2,
        column: 1, says: "Layout line 2: invalid option 'X' in X)"),
    RuleCase(
        code: .invalidOption, severity: .error, text: fsblLine + "PE \t0x04\tfsbl1\tBinary\tmmc0\t0x4400\tf\n", line: 2,
        column: 1, says: "the field contains a space"),
    RuleCase(
        code: .invalidOption, severity: .error, text: " #Opt\tId\n" + fsblLine, line: 1, column: 1,
        says: "a comment must start with '#'"),
    RuleCase(
        code: .missingSelect, severity: .error, text: fsblLine + "E\t0x04\tfsbl1\tBinary\tmmc0\t0x4400\tf\n", line: 2,
        column: 1, says: "Layout line 2: missing 'P' in option E"),
    RuleCase(
        code: .invalidID, severity: .error, text: fsblLine + "P\t0xF1\tfsbl1\tBinary\tmmc0\t0x4400\tf\n", line: 2,
        column: 3, says: "Layout line 2: invalid phase value = 0xF1"),
    RuleCase(
        code: .invalidID, severity: .error, text: fsblLine + "P\t09\tfsbl1\tBinary\tmmc0\t0x4400\tf\n", line: 2,
        column: 3, says: "invalid phase value = 09"),
    RuleCase(
        code: .nameTooLong, severity: .error, text: fsblLine + "P\t0x04\tabcdefghijklmnopq\tBinary\tmmc0\t0x4400\tf\n",
        line: 2, column: 8, says: "partition name too long [17]: abcdefghijklmnopq"),
    RuleCase(
        code: .invalidType, severity: .error, text: fsblLine + "P\t0x04\tfsbl1\tbinary\tmmc0\t0x4400\tf\n", line: 2,
        column: 14, says: "should be spelled 'Binary'"),
    RuleCase(
        code: .invalidType, severity: .error, text: fsblLine + "P\t0x04\tfsbl1\tBinary(2\tmmc0\t0x4400\tf\n", line: 2,
        column: 14, says: "type parsing error : 'Binary(2'"),
    RuleCase(
        code: .invalidIP, severity: .error, text: fsblLine + "P\t0x04\tfsbl1\tBinary\tsdmmc1\t0x4400\tf\n", line: 2,
        column: 21, says: "mmc0 is usually the SD card"),
    RuleCase(
        code: .invalidIP, severity: .error, text: fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc10\t0x4400\tf\n", line: 2,
        column: 21, says: "ip parsing error: 'mmc10'"),
    RuleCase(
        code: .invalidOffset, severity: .error, text: fsblLine + "-\t0x04\tfsbl1\tBinary\tmmc0\tnone\tf\n", line: 2,
        column: 26, says: "offset 'none' is not accepted"),
    RuleCase(
        code: .invalidOffset, severity: .error, text: fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc0\tboot3\tf\n", line: 2,
        column: 26, says: "invalid part 'boot3'"),
    RuleCase(
        code: .invalidOffset, severity: .error, text: fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc0\t0x4400 \tf\n", line: 2,
        column: 26, says: "invalid offset '0x4400 '"),
    RuleCase(
        code: .invalidOffset, severity: .error, text: fsblLine + "P\t0x04\tfsbl1\tBinary\tnor0\tboot1\tf\n", line: 2,
        column: 26, says: "hw partition not expected"),
    RuleCase(
        code: .missingColumns, severity: .error, text: fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc0\n", line: 2, column: 21,
        says: "no enought column"),
    RuleCase(
        code: .selectedNone, severity: .error, text: "P\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tf\n", line: 1, column: 1,
        says: "Layout: selected none phase = 0x1 for part fsbl-boot"),
    RuleCase(
        code: .invalidPhase, severity: .error, text: fsblLine + "P\t0x00\tx\tBinary\tmmc0\t0x4400\tf\n", line: 2,
        column: 3, says: "Layout: invalid phase = 0x0 for part x"),
    RuleCase(
        code: .duplicateID, severity: .error, text: fsblLine + goodRow + "P\t0x04\tfsbl2\tBinary\tmmc0\t0x44400\tf\n",
        line: 3, column: 3, says: "Layout: duplicated phase 0x4 for part fsbl1 and fsbl2"),
    RuleCase(
        code: .tooManyDevices, severity: .error,
        text: fsblLine
            + (0..<6).map {
                "P\t0x1\($0)\tp\($0)\tBinary\t\(["mmc0", "mmc1", "mmc2", "nor0", "nand0", "spi-nand0"][$0])\t0x80000\tf\n"
            }.joined(), line: 7, column: 18, says: "Layout: too many device"),
    RuleCase(
        code: .noPartition, severity: .error, text: "#Opt\tId\n\n", line: 0, column: 0,
        says: "Layout: no partition found"),
    RuleCase(
        code: .typeTooNew, severity: .warning, text: fsblLine + "P\t0x06\tmetadata1\tFWU_MDATA\tmmc0\t0x84400\tf\n",
        line: 2, column: 18, says: "FWU_MDATA (line 2) needs v2022.10"),
    RuleCase(
        code: .typeTooNew, severity: .error, text: fsblLine + "P\t0x06\tfip-a\tFIP\tmmc0\t0x84400\tf\n", line: 2,
        column: 14, says: "U-Boot v2020.10 rejects",
        options: LayoutCheckOptions(ubootVersion: UBootVersion("v2020.10"), layoutOnly: true)),
    RuleCase(
        code: .unexpandedTemplate, severity: .error,
        text: fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc0\t0x4400\t${DEPLOY}/fsbl.stm32\n", line: 2, column: 33,
        says: "unexpanded template variable"),
    RuleCase(
        code: .trailingTab, severity: .warning, text: fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc0\t0x4400\tf\t\n", line: 2,
        column: 34, says: "merge the next line"),
    RuleCase(
        code: .tabRun, severity: .warning, text: "-\t0x01\tfsbl-boot\t\tBinary\tnone\t0x0\tf\n", line: 1, column: 0,
        says: "run of TABs"),
    RuleCase(
        code: .crlf, severity: .warning, text: "-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tf\r\n", line: 1, column: 0,
        says: "CRLF"),
    RuleCase(
        code: .noFinalNewline, severity: .warning, text: "-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tf", line: 1, column: 0,
        says: "no newline at the end"),
    RuleCase(
        code: .rawParseDiffers, severity: .warning,
        text: fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc0\t0x4400\tf\t\n" + "P\t0x05\tfsbl2\tBinary\tmmc0\t0x44400\tf\n",
        line: 3, column: 0, says: "Layout line 3: invalid option '0' in 0x05)"),
    RuleCase(
        code: .extraColumns, severity: .warning, text: "-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tf\tnone\n", line: 1,
        column: 36, says: "8 columns"),
    RuleCase(
        code: .octalID, severity: .warning, text: fsblLine + "P\t010\tfsbl1\tBinary\tmmc0\t0x4400\tf\n", line: 2,
        column: 3, says: "octal (8 = 0x08)"),
    RuleCase(
        code: .decimalID, severity: .warning, text: fsblLine + "P\t16\tbootfs\tSystem\tmmc0\t0x4400\tf\n", line: 2,
        column: 3, says: "decimal for U-Boot (0x10)"),
    RuleCase(
        code: .spaceInField, severity: .warning, text: fsblLine + "P\t0x04\tmy fsbl\tBinary\tmmc0\t0x4400\tf\n",
        line: 2, column: 8, says: "contains a space"),
    RuleCase(
        code: .selectedWithoutFile, severity: .error,
        text: fsblLine + "P\t0x10\tbootfs\tSystem\tmmc0\t0x4400\tnone\n", line: 2, column: 34,
        says: "use PE to create it empty"),
    RuleCase(
        code: .bootStageWithoutFile, severity: .warning, text: "-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tnone\n", line: 1,
        column: 34, says: "boot stage 0x01"),
    RuleCase(code: .missingBootStage, severity: .warning, text: goodRow, line: 0, column: 0, says: "no FSBL line"),
    RuleCase(
        code: .duplicateName, severity: .warning,
        text: fsblLine + goodRow + "P\t0x05\tfsbl1\tBinary\tmmc0\t0x44400\tf\n", line: 3, column: 8,
        says: "also used on line 2"),
    RuleCase(
        code: .templatePlaceholder, severity: .warning, text: "-\t0x01\tfsbl-boot\tBinary\tnone\t0x0\t%ATFBIN%\n",
        line: 1, column: 34, says: "placeholder"),
    RuleCase(
        code: .binaryCount, severity: .warning, text: fsblLine + "P\t0x04\tfsbl1\tBinary(0)\tnand0\t0x0\tf\n", line: 2,
        column: 14, says: "asks for 0 copies"),
    RuleCase(
        code: .offsetInGPT, severity: .error, text: fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc0\t0x200\tf\n", line: 2,
        column: 26, says: "invalid address 0x200 (min=0x4400)"),
    RuleCase(
        code: .sameOffset, severity: .error,
        text: fsblLine + goodRow + "P\t0x05\tfsbl2\tBinary\tmmc0\t0x4400\tf\n", line: 2, column: 26,
        says: "fsbl1 (0x4): same address : 0x4400 == fsbl2 (0x5): 0x4400"),
    RuleCase(
        code: .multipleBinary, severity: .error, text: fsblLine + "P\t0x04\tfsbl1\tBinary(2)\tmmc1\t0x80000\tf\n",
        line: 2, column: 14, says: "fsbl1 (0x4): multiple binary 2 not supported"),
    RuleCase(
        code: .deviceCheck, severity: .error, text: fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc1\t0x4400\tf\n", line: 2,
        column: 0, says: "invalid address 0x4400 (min=0x80000)",
        options: LayoutCheckOptions(layoutOnly: true, plan: PlanOptions(eraseSizes: ["mmc1": 512 << 10]))),
    RuleCase(
        code: .deviceCheck, severity: .warning, text: fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc1\t0x4400\tf\n", line: 2,
        column: 0, says: "invalid address 0x4400 (min=0x80000)"),
    RuleCase(code: .binaryInput, severity: .error, text: "-\t0x01\tfsbl\u{0}\n", line: 1, column: 12, says: "NUL byte"),
]

@Suite("check: one rule at a time")
struct LayoutCheckerRuleTests {
    @Test("each rule reports its code where the problem is", arguments: ruleCases)
    func rule(_ rule: RuleCase) {
        let result = LayoutChecker.check(bytes: Array(rule.text.utf8), path: "t.tsv", options: rule.options)
        let hits = result.diagnostics.filter { $0.code == rule.code.rawValue }
        let hit = hits.first { $0.line == rule.line && $0.column == rule.column }
        #expect(
            hit != nil,
            "expected \(rule.code) at \(rule.line):\(rule.column), got \(result.diagnostics.map { $0.formatted(path: "t.tsv") })"
        )
        #expect(hit?.severity == rule.severity)
        #expect(hit?.message.contains(rule.says) == true, "message: \(hit?.message ?? "-")")
    }

    @Test("every code is exercised by a rule case or a dedicated test")
    func everyCodeHasACase() {
        let covered = Set(ruleCases.map(\.code)).union([
            .unreadable, .fileTooLarge, .invalidUTF8, .notALayout, .tooManyLines, .layoutTooLarge, .missingFile,
            .fileLargerThanPartition, .badBootImage, .badFIP, .bootImageInfo, .unusableFile, .shadowedBinary,
            .binaryOutsideLayout,
            // check --soc: CLITests/FSBLChipTests.
            .fsblWrongChip,
            // Binaries read through ImageSources: CLITests/BigImageCommandTests.
            .badBlockMap, .badCompressedImage, .imageInfo,
        ])
        #expect(Set(DiagnosticCode.allCases).subtracting(covered).isEmpty)
    }

    @Test("invalid UTF-8 is one clear error with its position")
    func invalidUTF8() {
        let bytes = Array("-\t0x01\tfs".utf8) + [0xC3, 0x28] + Array("\tBinary\tnone\t0x0\tf\n".utf8)
        let result = LayoutChecker.check(bytes: bytes, path: "t.tsv")
        #expect(result.diagnostics.count == 1)
        #expect(result.diagnostics.first?.code == "invalid-utf8")
        #expect(result.diagnostics.first?.column == 10)
    }

    @Test("a file over 1 MiB is refused without parsing")
    func tooLarge() {
        let bytes = [UInt8](repeating: UInt8(ascii: "#"), count: LayoutChecker.maximumFileSize + 1)
        let result = LayoutChecker.check(bytes: bytes, path: "t.tsv")
        #expect(result.diagnostics.map(\.code) == ["file-too-large"])
    }

    @Test("more than 240 rows is an error")
    func tooManyLines() {
        let rows = (0..<241).map { "-\t0x01\tf\($0)\tBinary\tnone\t0x0\tnone\n" }.joined()
        let result = LayoutChecker.check(bytes: Array(rows.utf8), path: "t.tsv", options: .init(layoutOnly: true))
        #expect(result.diagnostics.contains { $0.code == "too-many-lines" && $0.severity == .error })
    }

    @Test("a missing file is an error on its line, a present one is not")
    func missingFile() throws {
        let text = fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc0\t0x4400\tnot-there.bin\n"
        let result = LayoutChecker.check(bytes: Array(text.utf8), path: "/nonexistent-dir/t.tsv")
        let missing = result.diagnostics.filter { $0.code == "missing-file" }
        #expect(missing.map(\.line) == [1, 2])
        #expect(missing.last?.column == 33)
    }

    @Test("eMMC offsets must sit on the 512 KiB erase group")
    func eMMCAlignment() {
        let text = fsblLine + "P\t0x04\tfsbl1\tBinary\tmmc1\t0x84400\tf\n"
        let result = LayoutChecker.check(bytes: Array(text.utf8), path: "t.tsv", options: .init(layoutOnly: true))
        #expect(
            result.diagnostics.contains {
                $0.code == "device-check" && $0.message.contains("not aligned address : 0x84400 on erase size 0x80000")
            })
    }

    @Test("the same-offset error shows even when another line has a parse error")
    func sameOffsetBesideParseErrors() {
        let text =
            fsblLine + goodRow + "P\t0x05\tfsbl2\tBinary\tmmc0\t0x4400\tf\n"
            + "X\t0x06\tssbl\tBinary\tmmc0\t0x84400\tf\n"
        let result = LayoutChecker.check(bytes: Array(text.utf8), path: "t.tsv", options: .init(layoutOnly: true))
        #expect(result.diagnostics.contains { $0.code == "invalid-option" && $0.line == 4 })
        #expect(result.diagnostics.contains { $0.code == "same-offset" && $0.severity == .error && $0.line == 2 })
    }

    @Test("Binary(n) on NAND FSBL partitions stays allowed; geometry warnings become errors only with stated geometry")
    func geometryDependence() {
        let nand = fsblLine + "P\t0x04\tfsbl1\tBinary(2)\tnand0\t0x0\tf\n"
        #expect(
            !LayoutChecker.check(bytes: Array(nand.utf8), path: "t.tsv", options: .init(layoutOnly: true)).hasErrors)
        let unaligned = fsblLine + "P\t0x04\tfsbl1\tBinary\tnor0\t0x1000\tf\n"
        let assumed = LayoutChecker.check(bytes: Array(unaligned.utf8), path: "t.tsv", options: .init(layoutOnly: true))
        #expect(assumed.diagnostics.first { $0.code == "device-check" }?.severity == .warning)
        let stated = LayoutChecker.check(
            bytes: Array(unaligned.utf8), path: "t.tsv",
            options: .init(layoutOnly: true, plan: PlanOptions(deviceSizes: ["nor0": 64 << 20])))
        #expect(stated.diagnostics.first { $0.code == "device-check" }?.severity == .error)
    }

    @Test("a duplicate name talks of GPT labels only where U-Boot writes a GPT")
    func duplicateNameWording() {
        let nor = fsblLine + "P\t0x04\tfsbl1\tBinary\tnor0\t0x0\tf\n" + "P\t0x05\tfsbl1\tBinary\tnor0\t0x40000\tf\n"
        let onNOR = LayoutChecker.check(bytes: Array(nor.utf8), path: "t.tsv", options: .init(layoutOnly: true))
        let message = onNOR.diagnostics.first { $0.code == "duplicate-name" }?.message ?? ""
        #expect(message.contains("DFU alternates") && !message.contains("GPT"), "\(message)")
        let mmc = fsblLine + goodRow + "P\t0x05\tfsbl1\tBinary\tmmc0\t0x44400\tf\n"
        let onMMC = LayoutChecker.check(bytes: Array(mmc.utf8), path: "t.tsv", options: .init(layoutOnly: true))
        #expect(onMMC.diagnostics.first { $0.code == "duplicate-name" }?.message.contains("GPT label") == true)
    }

    @Test("an invalid option with a space explains the space once")
    func spaceClauseOnce() {
        let text = fsblLine + "PE \t0x04\tfsbl1\tBinary\tmmc0\t0x4400\tf\n"
        let result = LayoutChecker.check(bytes: Array(text.utf8), path: "t.tsv", options: .init(layoutOnly: true))
        let message = result.diagnostics.first { $0.code == "invalid-option" }?.message ?? ""
        #expect(message.components(separatedBy: "the field contains a space").count == 2, "\(message)")
    }

    @Test("all problems of a file are reported in one run")
    func reportsAll() {
        let text = "X\t0x01\tfsbl\tBinary\tnone\t0x0\tf\nP\t0x04\tfsbl1\tBinarx\tsdmmc1\tnone\tf\n"
        let codes = LayoutChecker.check(bytes: Array(text.utf8), path: "t.tsv").diagnostics.map(\.code)
        #expect(codes.filter { $0 == "invalid-option" }.count == 1)
        #expect(codes.contains("invalid-type"))
        #expect(codes.contains("invalid-ip"))
        #expect(codes.contains("invalid-offset"))
    }

    @Test("diagnostics print as file:line:col: severity: message [code]")
    func format() {
        let diagnostic = LayoutDiagnostic(line: 3, column: 7, severity: .error, code: .invalidID, message: "bad")
        #expect(diagnostic.formatted(path: "a.tsv") == "a.tsv:3:7: error: bad [invalid-id]")
        let whole = LayoutDiagnostic(line: 0, column: 0, severity: .warning, code: .noPartition, message: "m")
        #expect(whole.formatted(path: "a.tsv") == "a.tsv: warning: m [no-partition]")
    }
}

@Suite("docs/layout-format.md")
struct LayoutFormatDocTests {
    @Test("every diagnostic code has a section")
    func everyCodeDocumented() throws {
        let doc = try String(contentsOfFile: TestPaths.repositoryRoot + "/docs/layout-format.md", encoding: .utf8)
        let headings = Set(doc.split(separator: "\n").filter { $0.hasPrefix("### ") }.map { String($0.dropFirst(4)) })
        for code in DiagnosticCode.allCases {
            #expect(headings.contains(code.rawValue), "no section for \(code.rawValue)")
        }
    }
}
