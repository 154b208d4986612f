/// What this tool sends as phase 0x00: one line per row, the six U-Boot columns joined by single
/// TABs, LF line ends, no comments and no Binary column, behind a 256-byte STM32 header v1
/// (protocol reference §C.10.3). Normalizing removes every formatting quirk a raw parser trips on.
public struct LayoutPayload: Sendable, Hashable {
    /// The normalized TSV text.
    public var text: [UInt8]
    /// Header + text: exactly what goes to the board.
    public var bytes: [UInt8]
    /// `sourceLines[n - 1]` is the file line that payload line `n` came from, so that a board
    /// message `Layout line n: …` can be traced back to the user's file.
    public var sourceLines: [Int]

    /// Builds the payload for `lines` (all rows, `-` ones included: U-Boot needs them).
    public static func normalized(_ lines: [LayoutLine]) -> LayoutPayload {
        var text: [UInt8] = []
        for line in lines {
            let fields = [
                line.optionText.isEmpty ? "-" : line.optionText, hexByte(line.id), line.name, line.type.description,
                line.target.description, line.offset.description,
            ]
            text += Array(fields.joined(separator: "\t").utf8) + [UInt8(ascii: "\n")]
        }
        return LayoutPayload(text: text, bytes: STM32LayoutHeader.wrap(text), sourceLines: lines.map(\.line))
    }

    /// The file line that board message line `payloadLine` refers to.
    public func sourceLine(forPayloadLine payloadLine: Int) -> Int? {
        sourceLines.indices.contains(payloadLine - 1) ? sourceLines[payloadLine - 1] : nil
    }
}

/// The STM32 header v1 that U-Boot and ST's TF-A v2.4 check on a layout: magic `STM2`, payload
/// byte-sum checksum at 68, version 0x00010000 at 72, length at 76, option flags 1 ("not
/// signed") at 100, everything else zero.
enum STM32LayoutHeader {
    static func wrap(_ payload: [UInt8]) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: LayoutHeader.length)
        header.replaceSubrange(0..<4, with: Array("STM2".utf8))
        put(&header, 68, payload.reduce(UInt32(0)) { $0 &+ UInt32($1) })
        put(&header, 72, 0x0001_0000)
        put(&header, 76, UInt32(payload.count))
        put(&header, 100, 1)
        return header + payload
    }

    private static func put(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt32) {
        for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }
}
