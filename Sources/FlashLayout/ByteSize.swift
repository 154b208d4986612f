/// Byte sizes as people write them on command lines (`8GiB`, `512K`, `0x80000`) and as the tool
/// prints them.
public enum ByteSize {
    /// Parses a decimal or 0x-hex number with an optional unit, each with its real meaning:
    /// KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB powers of 1000 (what a card's label
    /// says: an "8 GB" card holds 8 000 000 000 bytes), and the bare K/M/G/T are binary, as
    /// in sfdisk and U-Boot.
    public static func parse(_ text: String) -> UInt64? {
        let trimmed = text.filter { $0 != " " && $0 != "_" }
        let digits: Substring
        let unit: Substring
        var radix = 10
        if trimmed.lowercased().hasPrefix("0x") {
            let body = trimmed.dropFirst(2)
            digits = body.prefix { $0.isHexDigit }
            unit = body.dropFirst(digits.count)
            radix = 16
        } else {
            digits = trimmed.prefix { $0.isNumber }
            unit = trimmed.dropFirst(digits.count)
        }
        guard !digits.isEmpty, let value = UInt64(digits, radix: radix) else { return nil }
        let multiplier: UInt64
        switch unit.lowercased() {
        case "", "b": multiplier = 1
        case "k", "kib": multiplier = 1 << 10
        case "m", "mib": multiplier = 1 << 20
        case "g", "gib": multiplier = 1 << 30
        case "t", "tib": multiplier = 1 << 40
        case "kb": multiplier = 1_000
        case "mb": multiplier = 1_000_000
        case "gb": multiplier = 1_000_000_000
        case "tb": multiplier = 1_000_000_000_000
        default: return nil
        }
        let (result, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : result
    }

    /// `512 B`, `256 KiB`, `1.5 MiB`, `3.64 GiB`.
    public static func format(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var index = 0
        while value >= 1024, index < units.count - 1 {
            value /= 1024
            index += 1
        }
        if index == 0 { return "\(bytes) B" }
        let rounded = (value * 100).rounded() / 100
        let text = rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
        return "\(text) \(units[index])"
    }
}
