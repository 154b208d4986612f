import Foundation
import TestSupport

/// The corpus files and the verdict SOURCES.md records for each (an independent transcription
/// of U-Boot's parser by the corpus researcher, device-independent checks only).
enum Corpus {
    struct Expectation: Sendable, CustomStringConvertible {
        var file: String
        /// nil = OK.
        var error: String?
        var rows: Int?
        var deviceRows: Int?
        var devices: [String]
        var description: String { file }
    }

    static var files: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: TestPaths.realLayouts)) ?? []
        return names.filter { !$0.hasSuffix(".md") && !$0.hasPrefix(".") }.sorted()
    }

    static func bytes(_ file: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: TestPaths.realLayouts + "/" + file)))
    }

    /// Parses SOURCES.md: each `- **\`file\`**` entry and its `U-Boot rules (emulated…)` line.
    static let expectations: [String: Expectation] = {
        guard let text = try? String(contentsOfFile: TestPaths.realLayouts + "/SOURCES.md", encoding: .utf8) else {
            return [:]
        }
        var result: [String: Expectation] = [:]
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("- **`"), let end = trimmed.dropFirst(5).firstIndex(of: "`") {
                current = String(trimmed[trimmed.index(trimmed.startIndex, offsetBy: 5)..<end])
                continue
            }
            guard let file = current, let marker = trimmed.range(of: "U-Boot rules (emulated, see top): ") else {
                continue
            }
            let verdict = trimmed[marker.upperBound...]
            if verdict.hasPrefix("ERROR: `") {
                let message = verdict.dropFirst(8).prefix { $0 != "`" }
                result[file] = Expectation(file: file, error: String(message), rows: nil, deviceRows: nil, devices: [])
            } else if verdict.hasPrefix("OK, ") {
                let words = verdict.split(separator: " ")
                let rows = Int(words[1])
                let deviceRows = Int(words[3].dropFirst())
                let devicesPart = verdict.range(of: "devices=").map { verdict[$0.upperBound...] } ?? ""
                let devices = devicesPart.prefix { $0 != ";" && $0 != " " }.split(separator: ",").map(String.init)
                result[file] = Expectation(file: file, error: nil, rows: rows, deviceRows: deviceRows, devices: devices)
            }
            current = nil
        }
        return result
    }()
}
