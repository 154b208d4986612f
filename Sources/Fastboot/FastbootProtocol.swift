/// A fastboot command as the host writes it on the bulk OUT endpoint (AOSP's protocol, U-Boot's
/// `drivers/fastboot/fb_command.c`): ASCII, at most 64 bytes, no terminator.
public enum FastbootCommand: Sendable, Hashable, CustomStringConvertible {
    case getvar(String)
    /// `download:%08x`: the device answers DATA, then receives that many bytes.
    case download(UInt32)
    case flash(String)
    case erase(String)
    /// `oem <verb>` with its parameter as U-Boot splits it (`oem partconf: 1 1`).
    case oem(String)
    case reboot
    /// Leaves the fastboot loop; the U-Boot script goes on.
    case continueBoot

    /// The longest command the device accepts (`FASTBOOT_COMMAND_LEN` - 1).
    public static let maximumLength = 64

    public var description: String {
        switch self {
        case .getvar(let name): "getvar:\(name)"
        case .download(let size): "download:" + Self.hex8(size)
        case .flash(let target): "flash:\(target)"
        case .erase(let target): "erase:\(target)"
        case .oem(let text): "oem \(text)"
        case .reboot: "reboot"
        case .continueBoot: "continue"
        }
    }

    /// The wire bytes; nil when the command is longer than the protocol allows.
    public var bytes: [UInt8]? {
        let bytes = Array(description.utf8)
        return bytes.count <= Self.maximumLength ? bytes : nil
    }

    static func hex8(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}

/// One answer on bulk IN (at most 64 bytes): a 4-letter tag and text.
public enum FastbootReply: Sendable, Hashable, CustomStringConvertible {
    case okay(String)
    case fail(String)
    /// Progress or information; more replies follow.
    case info(String)
    /// Free text (newer AOSP devices); more replies follow.
    case text(String)
    /// The device is ready for this many bytes.
    case data(UInt32)

    public init(_ bytes: [UInt8]) throws(FastbootProtocolError) {
        guard bytes.count >= 4 else { throw .malformedReply(bytes) }
        let tag = String(decoding: bytes.prefix(4), as: UTF8.self)
        let rest = String(decoding: bytes.dropFirst(4).prefix { $0 != 0 }, as: UTF8.self)
        switch tag {
        case "OKAY": self = .okay(rest)
        case "FAIL": self = .fail(rest)
        case "INFO": self = .info(rest)
        case "TEXT": self = .text(rest)
        case "DATA":
            guard rest.count == 8, let size = UInt32(rest, radix: 16) else { throw .malformedReply(bytes) }
            self = .data(size)
        default: throw .malformedReply(bytes)
        }
    }

    public var bytes: [UInt8] {
        switch self {
        case .okay(let text): Array(("OKAY" + text).utf8.prefix(64))
        case .fail(let text): Array(("FAIL" + text).utf8.prefix(64))
        case .info(let text): Array(("INFO" + text).utf8.prefix(64))
        case .text(let text): Array(("TEXT" + text).utf8.prefix(64))
        case .data(let size): Array(("DATA" + FastbootCommand.hex8(size)).utf8)
        }
    }

    public var description: String { String(decoding: bytes, as: UTF8.self) }
}

/// The device broke the protocol (not a FAIL: a FAIL is an answer).
public enum FastbootProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    case malformedReply([UInt8])
    case commandTooLong(String)
    case unexpected(FastbootReply, expecting: String)
    case dataSizeMismatch(asked: UInt32, offered: UInt32)

    public var description: String {
        switch self {
        case .malformedReply(let bytes):
            "malformed fastboot reply \(bytes.prefix(64).map { $0 >= 0x20 && $0 < 0x7F ? String(UnicodeScalar($0)) : "." }.joined())"
        case .commandTooLong(let text): "fastboot command longer than 64 bytes: \(text)"
        case .unexpected(let reply, let expecting): "unexpected fastboot reply '\(reply)' while \(expecting)"
        case .dataSizeMismatch(let asked, let offered):
            "device offered DATA\(FastbootCommand.hex8(offered)) for download:\(FastbootCommand.hex8(asked))"
        }
    }
}
