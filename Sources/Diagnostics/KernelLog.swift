import Glibc

/// The kernel's USB messages that tell a broken enumeration or supply from a silent board:
/// `-71` (EPROTO), `-110` (ETIMEDOUT), address and descriptor failures, over-current, and the
/// announcements of ST devices.
public enum KernelLog {
    /// Reads the kernel log below `root` and keeps the USB lines worth showing, oldest first.
    ///
    /// `/dev/kmsg` first (records `prio,seq,usec,flags;text`); on the live system, when that
    /// is refused, `dmesg` (which can also read the syslog(2) buffer; the same `dmesg_restrict`
    /// rule applies). Empty when neither can be read.
    public static func usbLines(root: String = "/", last limit: Int = 200) -> [String] {
        let lines = readAll(HostFiles(root: root)) ?? []
        return Array(filterUSB(lines).suffix(limit))
    }

    /// True when the kernel log can be read here.
    public static func isReadable(root: String = "/") -> Bool {
        readAll(HostFiles(root: root)) != nil
    }

    /// The lines of `lines` that concern USB enumeration, supply or ST devices.
    public static func filterUSB(_ lines: [String]) -> [String] {
        lines.filter(isRelevant)
    }

    static let problemMarkers = [
        "error -71", "error -110", "device not accepting address", "device descriptor read",
        "not responding to setup address", "unable to enumerate", "over-current", "overcurrent",
        "cannot enable", "reset high-speed", "reset full-speed",
    ]

    static func isRelevant(_ line: String) -> Bool {
        let lower = line.lowercased()
        guard lower.contains("usb") else { return false }
        return problemMarkers.contains { lower.contains($0) } || lower.contains("idvendor=0483")
    }

    /// Enumeration failures: the device tried and the link or its USB setup broke (§E row 3).
    public static func enumerationErrors(in lines: [String]) -> [String] {
        lines.filter { line in
            let lower = line.lowercased()
            return [
                "error -71", "error -110", "device not accepting address", "device descriptor read",
                "not responding to setup address", "unable to enumerate",
            ]
            .contains { lower.contains($0) }
        }
    }

    /// Over-current reports from a hub or root port (a board drawing too much, or a short).
    public static func overCurrent(in lines: [String]) -> [String] {
        lines.filter { $0.lowercased().contains("over-current") || $0.lowercased().contains("overcurrent") }
    }

    static func readAll(_ files: HostFiles) -> [String]? {
        if let records = readKmsg(files) { return records }
        return files.isLiveSystem ? readSyslogBuffer() : nil
    }

    /// `/dev/kmsg` gives one record per `read`, and EAGAIN at the end when opened non-blocking;
    /// a plain file (a test's fake) simply ends.
    static func readKmsg(_ files: HostFiles) -> [String]? {
        let fd = open(files.resolve("/dev/kmsg"), O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 16384)
        var text: [UInt8] = []
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                text += buffer[0..<count]
                if text.last != 0x0A { text.append(0x0A) }
                continue
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno == EPIPE { continue }  // records overwritten while reading
            if count < 0 && errno != EAGAIN && text.isEmpty { return nil }
            break
        }
        return String(decoding: text, as: UTF8.self).split(separator: "\n").compactMap(kmsgMessage)
    }

    /// The message of one `/dev/kmsg` record, prefixed with its time as dmesg prints it;
    /// continuation lines (starting with a space: `KEY=value` dictionaries) are dropped.
    static func kmsgMessage(_ record: Substring) -> String? {
        guard !record.hasPrefix(" ") else { return nil }
        guard let semicolon = record.firstIndex(of: ";") else { return String(record) }
        let header = record[..<semicolon].split(separator: ",")
        let message = String(record[record.index(after: semicolon)...])
        guard header.count >= 3, let micros = UInt64(header[2]) else { return message }
        let fraction = String(micros % 1_000_000)
        return "[" + String(micros / 1_000_000) + "." + String(repeating: "0", count: 6 - fraction.count) + fraction
            + "] "
            + message
    }

    /// `dmesg` (it falls back to the syslog(2) buffer; the same `dmesg_restrict` rule applies).
    static func readSyslogBuffer() -> [String]? {
        guard let output = Subprocess.capture(["dmesg"]), output.status == 0 else { return nil }
        return output.text.split(separator: "\n").map(String.init)
    }
}
