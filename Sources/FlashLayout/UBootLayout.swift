/// U-Boot's view of a FlashLayout, reproduced byte for byte: what the board accepts, and the
/// first error it would print. The virtual board parses what it receives with this; the linter
/// uses it to tell when sending a file raw would fail where our normalized payload does not.
public enum UBootLayout {
    /// Size of the RAM buffer behind the `@FlashLayout` alternate (0x40000 bytes).
    public static let maximumSize = 0x40000
    /// `STM32PROG_MAX_DEV`.
    public static let maximumDevices = 5

    /// Parses `bytes` as `parse_flash_layout()` does, including the optional STM32 header v1
    /// (magic, version, reserved and padding checked; payload checksum verified).
    /// - Returns: the rows, or U-Boot's first error message.
    public static func parse(_ bytes: [UInt8]) -> Result<[LayoutLine], UBootLayoutError> {
        var body = bytes
        if let header = LayoutHeader(bytes) {
            let available = bytes.count - LayoutHeader.length
            let length = min(Int(header.imageLength), available)
            body = Array(bytes[LayoutHeader.length..<LayoutHeader.length + length])
            let sum = body.reduce(UInt32(0)) { $0 &+ UInt32($1) }
            if sum != header.checksum || Int(header.imageLength) > available {
                return .failure(
                    UBootLayoutError(
                        "Layout: invalid checksum : 0x\(hex(sum)) expected 0x\(hex(header.checksum))"))
            }
        }
        guard !body.isEmpty else { return .failure(UBootLayoutError("Layout: invalid FlashLayout")) }
        var scanner = RawScanner(body)
        return scanner.run()
    }

    /// The device-independent checks of `treat_partition_list()`: `P` on a `none` line, phase 0
    /// or > 0xF0 on a device, duplicated phases, more than five devices. U-Boot runs them between
    /// its two enumerations, so the board reports them in enumeration 2.
    /// - Returns: the devices in the order U-Boot finds them, each with its lines in file order.
    public static func devices(_ lines: [LayoutLine]) -> Result<[LayoutDevice], UBootLayoutError> {
        var devices: [LayoutDevice] = []
        for (position, line) in lines.enumerated() {
            if line.target.kind == .none {
                if line.isSelected {
                    return .failure(
                        UBootLayoutError(
                            "Layout: selected none phase = 0x\(hex(line.id)) for part \(line.name)", line: line.line))
                }
                continue
            }
            if line.id == 0 || UInt64(line.id) > UBootField.lastUserPhase {
                return .failure(
                    UBootLayoutError("Layout: invalid phase = 0x\(hex(line.id)) for part \(line.name)", line: line.line)
                )
            }
            if let twin = lines[(position + 1)...].first(where: { $0.id == line.id }) {
                return .failure(
                    UBootLayoutError(
                        "Layout: duplicated phase 0x\(hex(line.id)) for part \(line.name) and \(twin.name)",
                        line: twin.line))
            }
            if let index = devices.firstIndex(where: { $0.target == line.target }) {
                devices[index].lines.append(line)
            } else {
                guard devices.count < maximumDevices else {
                    return .failure(UBootLayoutError("Layout: too many device", line: line.line))
                }
                devices.append(LayoutDevice(target: line.target, lines: [line]))
            }
        }
        return .success(devices)
    }

    /// U-Boot's row budget: one plus every newline not directly followed by `#` (it must stay
    /// ≤ 0xF0, else `Layout: too many partition`).
    static func rowBudget(_ bytes: [UInt8]) -> Int {
        var count = 1
        var index = 0
        while index < bytes.count, bytes[index] != 0 {
            if bytes[index] == UInt8(ascii: "\n") {
                count += 1
                if index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "#") { count -= 1 }
            }
            index += 1
        }
        return count
    }
}

/// One storage device of a layout (U-Boot's `stm32prog_dev_t`) with its lines in file order.
public struct LayoutDevice: Sendable, Hashable {
    public var target: LayoutTarget
    public var lines: [LayoutLine]

    public init(target: LayoutTarget, lines: [LayoutLine]) {
        self.target = target
        self.lines = lines
    }

    /// True when every line on the device is `P`: U-Boot then writes a new GPT (MMC); otherwise
    /// it is a partial update and each partition must match the existing table.
    public var isFullUpdate: Bool { lines.allSatisfy(\.isSelected) }
}

/// The three fields of an STM32 header v1 that U-Boot uses to unwrap a layout.
struct LayoutHeader {
    static let length = 256
    var checksum: UInt32
    var imageLength: UInt32

    /// Recognizes a v1 header as `stm32prog_is_stm32_header_v1()` does; nil otherwise.
    init?(_ bytes: [UInt8]) {
        guard bytes.count >= Self.length, Array(bytes[0..<4]) == Array("STM2".utf8),
            readLE32(bytes, 72) == 0x0001_0000, readLE32(bytes, 84) == 0, readLE32(bytes, 92) == 0,
            bytes[172..<255].allSatisfy({ $0 == 0 })
        else { return nil }
        checksum = readLE32(bytes, 68)
        imageLength = readLE32(bytes, 76)
    }
}

/// The byte loop of `parse_flash_layout()`, kept deliberately close to U-Boot's control flow,
/// including its quirks: runs of TABs are one separator, `\r` is dropped, a `#` at the start of
/// a line (after TABs) comments it out, and a TAB right before a newline leaves the end-of-line
/// flag set so the next line's first field is swallowed as an extra column.
private struct RawScanner {
    private var buffer: [UInt8]
    private let last: Int
    private let lineStarts: [Int]

    init(_ body: [UInt8]) {
        buffer = body + [0]
        last = body.count
        var starts = [0]
        for (index, byte) in body.enumerated() where byte == UInt8(ascii: "\n") { starts.append(index + 1) }
        lineStarts = starts
    }

    /// 1-based physical line of a byte offset.
    private func physicalLine(_ offset: Int) -> Int {
        var low = 0
        var high = lineStarts.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if lineStarts[mid] <= offset { low = mid } else { high = mid - 1 }
        }
        return low + 1
    }

    private func field(at start: Int) -> [UInt8] {
        var end = start
        while end < buffer.count, buffer[end] != 0 { end += 1 }
        return Array(buffer[start..<end])
    }

    mutating func run() -> Result<[LayoutLine], UBootLayoutError> {
        let budget = UBootLayout.rowBudget(buffer)
        if budget > Int(UBootField.lastUserPhase) {
            return .failure(UBootLayoutError("Layout: too many partition (\(budget))"))
        }
        var rows: [LayoutLine] = []
        var ubootLine = 1
        var eof = false
        var p = 0
        var col = 0
        var endOfLine = false
        var column = 0
        var fields: [[UInt8]] = []
        var recordStart = 0
        while !eof {
            switch buffer[p] {
            case UInt8(ascii: "\r"):
                buffer[p] = 0
                p += 1
                continue
            case 0:
                endOfLine = true
                eof = true
            case UInt8(ascii: "\n"):
                endOfLine = true
            case UInt8(ascii: "\t"):
                break
            case UInt8(ascii: "#") where column == 0 && p == col:
                while p < last, buffer[p] != 0 {
                    let byte = buffer[p]
                    p += 1
                    if byte == UInt8(ascii: "\n") { break }
                }
                col = p
                ubootLine += 1
                if p >= last || buffer[p] == 0 {
                    eof = true
                    endOfLine = true
                }
                continue
            default:
                p += 1
                continue
            }
            buffer[p] = 0
            p += 1
            if p >= last {
                eof = true
                endOfLine = true
            }
            let text = field(at: col)
            if text.isEmpty {
                col = p
                if column == 0 && endOfLine {
                    endOfLine = false
                    ubootLine += 1
                }
                continue
            }
            if column == 0 { recordStart = col }
            if column < 6 {
                if let rejection = Self.check(column: column, text) {
                    return .failure(
                        UBootLayoutError(rejection.ubootMessage(line: ubootLine), line: physicalLine(col)))
                }
            }
            fields.append(text)
            column += 1
            col = p
            if !endOfLine { continue }
            endOfLine = false
            if column < 6 {
                return .failure(
                    UBootLayoutError("Layout line \(ubootLine): no enought column", line: physicalLine(recordStart)))
            }
            rows.append(Self.makeLine(fields, line: physicalLine(recordStart)))
            fields = []
            column = 0
            ubootLine += 1
            if rows.count >= budget, !eof {
                return .failure(UBootLayoutError("Layout: no enought memory for \(rows.count) part"))
            }
        }
        if rows.isEmpty { return .failure(UBootLayoutError("Layout: no partition found")) }
        return .success(rows)
    }

    private static func check(column: Int, _ text: [UInt8]) -> UBootField.Rejection? {
        switch column {
        case 0: UBootField.option(text).failure
        case 1: UBootField.id(text).failure
        case 2: UBootField.name(text).failure
        case 3: UBootField.type(text).failure
        case 4: UBootField.ip(text).failure
        default: UBootField.offset(text).failure
        }
    }

    /// Builds a row from fields that all passed their checks.
    private static func makeLine(_ fields: [[UInt8]], line: Int) -> LayoutLine {
        let binary = fields.count > 6 ? String(decoding: fields[6], as: UTF8.self) : nil
        return LayoutLine(
            line: line,
            options: (try? UBootField.option(fields[0]).get()) ?? [],
            optionText: String(decoding: fields[0], as: UTF8.self),
            id: (try? UBootField.id(fields[1]).get()) ?? 0,
            name: (try? UBootField.name(fields[2]).get()) ?? "",
            type: (try? UBootField.type(fields[3]).get()) ?? .binary(copies: 1),
            target: (try? UBootField.ip(fields[4]).get()) ?? .none,
            offset: (try? UBootField.offset(fields[5]).get()) ?? .address(0),
            binary: binary == "none" ? nil : binary)
    }
}

extension Result {
    /// The error, if this is a failure.
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

func readLE32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
    UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
        | UInt32(bytes[offset + 3]) << 24
}

/// Lower-case hex without padding, as U-Boot's `%x`.
func hex(_ value: some BinaryInteger) -> String { String(value, radix: 16) }
