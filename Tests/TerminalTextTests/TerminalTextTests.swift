import Testing

@testable import TerminalText

@Suite("terminal-safe text")
struct TerminalTextTests {
    @Test("control characters are shown, never sent raw")
    func escapes() {
        #expect(TerminalText.escaped("a\u{1B}[31mred\u{07}") == "a\\x1b[31mred\\x07")
        #expect(TerminalText.escaped("tab\there\nline") == "tab\\x09here\\x0aline")
        #expect(TerminalText.escaped("csi\u{9B}2J del\u{7F}") == "csi\\x9b2J del\\x7f")
        #expect(TerminalText.escaped("evil\u{202E}txt.exe") == "evil\\u{202e}txt.exe")
        #expect(TerminalText.escaped("two\nlines", keepNewlines: true) == "two\nlines")
    }

    @Test("ordinary text, UTF-8 included, is unchanged")
    func plain() {
        #expect(TerminalText.escaped("rootfs — données ✓") == "rootfs — données ✓")
    }

    @Test("long fields keep their start and end")
    func shortens() {
        let path = "/very/long/" + String(repeating: "x", count: 200) + "/rootfs.ext4"
        let short = TerminalText.field(path, limit: 40)
        #expect(short.count == 40)
        #expect(short.hasPrefix("/very/long/"))
        #expect(short.hasSuffix("rootfs.ext4"))
        #expect(short.contains("…"))
        #expect(TerminalText.field("short") == "short")
    }
}
