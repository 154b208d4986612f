/// Text from outside the tool (layout names and paths, file names, USB strings a board chose,
/// console lines) made safe for a terminal: a name with ESC in it must not recolour, move the
/// cursor, retitle the window or ring the bell. Every text output passes such fields through
/// here; JSON output keeps them exact (JSON escapes control characters itself).
public enum TerminalText {
    /// `text` with every control character written as a visible escape: C0 (`\x1b`, `\a` is
    /// `\x07`), DEL, C1 (U+0080–U+009F, which some terminals read as CSI), and the bidirectional
    /// overrides that reorder what is shown. Newlines are kept only when `keepNewlines` (a
    /// multi-line message of our own whose parts were escaped already).
    public static func escaped(_ text: String, keepNewlines: Bool = false) -> String {
        guard text.unicodeScalars.contains(where: { needsEscape($0, keepNewlines: keepNewlines) }) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            if needsEscape(scalar, keepNewlines: keepNewlines) {
                out +=
                    scalar.value < 0x100
                    ? "\\x" + hex(scalar.value, width: 2) : "\\u{" + hex(scalar.value, width: 4) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// An escaped field no longer than `limit` characters: long paths and strings keep their
    /// start and their end (the file name), joined by `…`.
    public static func field(_ text: String, limit: Int = 80) -> String {
        let safe = escaped(text)
        guard safe.count > limit, limit >= 5 else { return safe }
        let tail = (limit - 1) / 2
        let head = limit - 1 - tail
        return String(safe.prefix(head)) + "…" + String(safe.suffix(tail))
    }

    static func needsEscape(_ scalar: Unicode.Scalar, keepNewlines: Bool) -> Bool {
        switch scalar.value {
        case 0x0A: !keepNewlines
        case 0x00...0x1F, 0x7F...0x9F: true
        case 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    static func hex(_ value: UInt32, width: Int) -> String {
        let digits = String(value, radix: 16, uppercase: false)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
