/// Intel HEX (record types 00–05) into segments; every record's length and checksum is checked.
enum IntelHex {
    static func parse(_ bytes: [UInt8], path: String) throws(MCUImageError) -> MCUImage {
        var segments: [MCUSegment] = []
        var base: UInt64 = 0
        var sawEnd = false
        var lineNumber = 0
        for rawLine in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = rawLine
            while let last = line.last, last == 0x0D || last == 0x20 || last == 0x09 { line = line.dropLast() }
            if line.isEmpty { continue }
            func fail(_ field: String, _ message: String) -> MCUImageError {
                MCUImageError(path: path, line: lineNumber, field: field, message: message)
            }
            guard !sawEnd else { throw fail("record", "data after the end-of-file record") }
            guard line.first == UInt8(ascii: ":") else { throw fail("start code", "a record starts with ':'") }
            let hex = line.dropFirst()
            guard hex.count % 2 == 0, hex.count >= 10 else {
                throw fail("record", "a record needs an even number of at least 10 hex digits")
            }
            var record: [UInt8] = []
            var index = hex.startIndex
            while index < hex.endIndex {
                guard let high = hexValue(hex[index]), let low = hexValue(hex[index + 1]) else {
                    throw fail("record", "'\(String(decoding: hex[index...index + 1], as: UTF8.self))' is not hex")
                }
                record.append(high << 4 | low)
                index += 2
            }
            let length = Int(record[0])
            guard record.count == length + 5 else {
                throw fail("byte count", "says \(length) data bytes, the record has \(record.count - 5)")
            }
            let sum = record.reduce(UInt8(0)) { $0 &+ $1 }
            guard sum == 0 else {
                throw fail(
                    "checksum", "0x\(String(record.last!, radix: 16, uppercase: true)) does not match the record")
            }
            let offset = UInt64(record[1]) << 8 | UInt64(record[2])
            let data = Array(record[4..<4 + length])
            switch record[3] {
            case 0x00: segments.append(MCUSegment(address: base + offset, bytes: data))
            case 0x01: sawEnd = true
            case 0x02:
                guard length == 2 else { throw fail("record type 02", "an extended segment address has 2 bytes") }
                base = (UInt64(data[0]) << 8 | UInt64(data[1])) << 4
            case 0x04:
                guard length == 2 else { throw fail("record type 04", "an extended linear address has 2 bytes") }
                base = (UInt64(data[0]) << 8 | UInt64(data[1])) << 16
            case 0x03, 0x05: break  // start address: not needed to program
            default: throw fail("record type", "unknown record type 0x\(String(record[3], radix: 16))")
            }
        }
        guard sawEnd else {
            throw MCUImageError(
                path: path, line: lineNumber, field: "record",
                message: "no end-of-file record (:00000001FF); is the file truncated?")
        }
        return MCUImage(format: .intelHex, segments: segments)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x41...0x46: c - 0x41 + 10
        case 0x61...0x66: c - 0x61 + 10
        default: nil
        }
    }
}
