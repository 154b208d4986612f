import Diagnostics
import Foundation
import TestSupport
import Testing

/// docs/troubleshooting.md is where every diagnosis points (`More: docs/troubleshooting.md#<code>`).
@Suite("docs/troubleshooting.md")
struct TroubleshootingDocTests {
    let lines: [String]

    init() throws {
        let text = try String(contentsOfFile: TestPaths.repositoryRoot + "/docs/troubleshooting.md", encoding: .utf8)
        lines = text.components(separatedBy: "\n")
    }

    var headings: Set<String> { Set(lines.filter { $0.hasPrefix("## ") }.map { String($0.dropFirst(3)) }) }

    @Test func everyCodeHasASection() {
        for code in DiagnosisCode.allCodes {
            #expect(headings.contains(code.rawValue), "no `## \(code.rawValue)` heading")
        }
    }

    @Test func everySectionSaysSymptomCauseConfirmAndFix() {
        for code in DiagnosisCode.allCodes {
            guard let start = lines.firstIndex(of: "## " + code.rawValue) else { continue }
            let end = lines[(start + 1)...].firstIndex { $0.hasPrefix("## ") } ?? lines.endIndex
            let section = lines[start..<end].joined(separator: "\n")
            for part in ["**Symptom.**", "**Cause.**", "**How to confirm.**", "**Fix.**"] {
                #expect(section.contains(part), "\(code.rawValue) lacks \(part)")
            }
        }
    }

    @Test func everyInternalLinkPointsAtACode() throws {
        let text = lines.joined(separator: "\n")
        let pattern = try NSRegularExpression(pattern: #"\]\(#([a-z0-9-]+)\)"#)
        let anchors = pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap {
            Range($0.range(at: 1), in: text).map { String(text[$0]) }
        }
        #expect(!anchors.isEmpty)
        let codes = Set(DiagnosisCode.allCodes.map(\.rawValue))
        for anchor in anchors {
            #expect(codes.contains(anchor), "link to #\(anchor), which is no code")
        }
    }
}
