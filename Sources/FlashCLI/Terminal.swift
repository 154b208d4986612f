import Glibc

/// Where output goes and whether it can be decorated.
enum Terminal {
    /// True when `fd` is a terminal that understands ANSI (not `TERM=dumb`).
    static func isInteractive(_ fd: Int32) -> Bool {
        guard isatty(fd) == 1 else { return false }
        if let term = getenv("TERM"), String(cString: term) == "dumb" { return false }
        return true
    }

    /// Colour is used on terminals unless `NO_COLOR` is set.
    static func useColor(_ fd: Int32) -> Bool { isInteractive(fd) && getenv("NO_COLOR") == nil }

    /// Width of the terminal on `fd`, 80 when unknown.
    static func width(_ fd: Int32 = 1) -> Int {
        var size = winsize()
        if ioctl(fd, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        return 80
    }

    /// Writes to standard error.
    static func error(_ text: String) {
        var line = text
        if !line.hasSuffix("\n") { line += "\n" }
        let bytes = Array(line.utf8)
        var written = 0
        while written < bytes.count {
            let result = bytes[written...].withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
            if result <= 0 { break }
            written += result
        }
    }
}

/// The few SGR codes the tool uses.
enum ANSI: String {
    case bold = "1"
    case red = "1;31"
    case yellow = "1;33"
    case green = "1;32"
    case cyan = "36"
    case dim = "2"

    func wrap(_ text: String, enabled: Bool) -> String {
        enabled ? "\u{1B}[\(rawValue)m\(text)\u{1B}[0m" : text
    }
}
