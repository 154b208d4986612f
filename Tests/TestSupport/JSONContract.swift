import Foundation

/// docs/json.md as a checker: the `flash --json` event table (each event's exact fields) and the
/// key names each command's section documents. Tests run the built tool and hold every line to
/// it, so the page stays the contract.
public struct JSONContract: Sendable {
    /// Event name → its documented fields (`event` itself not included).
    public let flashEvents: [String: Set<String>]
    /// Section heading (`check --json`, `plan --json`, …) → the identifiers written in backticks
    /// anywhere in that section.
    public let sectionWords: [String: Set<String>]

    public init(path: String = TestPaths.repositoryRoot + "/docs/json.md") throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var events: [String: Set<String>] = [:]
        var sections: [String: Set<String>] = [:]
        var current = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("## ") {
                current = Self.backticked(line).first ?? line
                continue
            }
            sections[current, default: []].formUnion(Self.backticked(line).flatMap(Self.identifiers))
            guard current.hasPrefix("flash"), line.hasPrefix("| `") else { continue }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard cells.count >= 4, let name = Self.backticked(cells[1]).first else { continue }
            events[name] = Set(Self.backticked(Self.topLevel(cells[2])))
        }
        flashEvents = events
        sectionWords = sections
    }

    /// Every `…` span of `text`.
    static func backticked(_ text: String) -> [String] {
        let parts = text.split(separator: "`", omittingEmptySubsequences: false)
        return stride(from: 1, to: parts.count, by: 2).map { String(parts[$0]) }
    }

    /// The text without parenthesized remarks and `[{…}]` nested shapes: only the fields of the
    /// event itself remain.
    static func topLevel(_ text: String) -> String {
        var out = ""
        var depth = 0
        for character in text {
            if "([{".contains(character) { depth += 1 }
            if depth == 0 { out.append(character) }
            if ")]}".contains(character) { depth = max(0, depth - 1) }
        }
        return out
    }

    static func identifiers(_ token: String) -> [String] {
        token.split { !($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }.map(String.init)
    }

    /// Problems with one `flash --json` line: not an object, no `event` first, an event the
    /// table does not have, or fields that differ from its row.
    public func flashLineProblems(_ line: String) -> [String] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            return ["not a JSON object: \(line)"]
        }
        guard line.hasPrefix("{\"event\":"), let event = object["event"] as? String else {
            return ["no \"event\" first: \(line)"]
        }
        guard let fields = flashEvents[event] else { return ["event '\(event)' is not in docs/json.md"] }
        let keys = Set(object.keys).subtracting(["event"])
        if keys != fields {
            return [
                "event '\(event)': fields \(keys.sorted()) but docs/json.md says \(fields.sorted())"
            ]
        }
        return []
    }

    /// Problems with a whole `flash --json` run: each line, `start` first, exactly one final
    /// `done`/`failed` and nothing after it.
    public func flashRunProblems(_ output: String) -> [String] {
        let lines = output.split(separator: "\n").map(String.init)
        var problems = lines.flatMap(flashLineProblems)
        let events = lines.compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["event"] as? String
        }
        if events.first != "start" { problems.append("the first event is \(events.first ?? "none"), not start") }
        let finals = events.filter { $0 == "done" || $0 == "failed" }
        if finals.count != 1 { problems.append("\(finals.count) final done/failed lines") }
        if let last = events.last, last != "done" && last != "failed" {
            problems.append("the last event is \(last)")
        }
        return problems
    }

    /// Every key (at any depth) of a JSON document that the command's section does not name.
    public func undocumentedKeys(_ json: Any, section: String) -> [String] {
        let words = sectionWords[section] ?? []
        return Self.keys(json).filter { !words.contains($0) }.sorted()
    }

    static func keys(_ value: Any) -> Set<String> {
        if let object = value as? [String: Any] {
            return Set(object.keys).union(object.values.flatMap { keys($0) })
        }
        if let array = value as? [Any] { return array.reduce(into: Set<String>()) { $0.formUnion(keys($1)) } }
        return []
    }

    /// Objects of one kind (array elements) that do not all have the same keys: a missing key
    /// where another object has null.
    public static func inconsistentArrays(_ value: Any, path: String = "$") -> [String] {
        if let object = value as? [String: Any] {
            return object.flatMap { inconsistentArrays($0.value, path: path + "." + $0.key) }
        }
        guard let array = value as? [Any] else { return [] }
        let shapes = Set(array.compactMap { ($0 as? [String: Any]).map { Set($0.keys) } })
        var problems = shapes.count > 1 ? ["\(path)[]: objects with different keys \(shapes.map { $0.sorted() })"] : []
        for element in array { problems += inconsistentArrays(element, path: path + "[]") }
        return problems
    }
}
