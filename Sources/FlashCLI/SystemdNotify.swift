import Glibc

/// systemd's readiness protocol (`Type=notify`): one datagram of `KEY=value` lines to the unix
/// socket named by `$NOTIFY_SOCKET` (`@name` is an abstract socket). Written here rather than
/// linking libsystemd for one `sendto`. Without the variable (not under systemd) it does nothing.
struct SystemdNotify: Sendable {
    /// The socket path from the environment, nil when not run by systemd with `Type=notify`.
    let socketPath: String?

    init(environment: (String) -> String? = { getenv($0).map { String(cString: $0) } }) {
        socketPath = environment("NOTIFY_SOCKET").flatMap { $0.isEmpty ? nil : $0 }
    }

    /// `READY=1`: the station listens for boards (and serves its page when asked to).
    func ready(status: String) { send("READY=1\nSTATUS=\(status)") }

    /// A one-line state for `systemctl status`.
    func status(_ text: String) { send("STATUS=\(text)") }

    /// `RELOADING=1` while a new layout is checked, `READY=1` after.
    func reloading() { send("RELOADING=1\nSTATUS=checking the new layout") }

    /// `STOPPING=1`: no new boards; running flashes finish.
    func stopping(status: String) { send("STOPPING=1\nSTATUS=\(status)") }

    /// Sends one datagram; a failure is reported on stderr once per call and never stops the station
    /// (systemd then times the start out, which names the cause in the journal).
    func send(_ message: String) {
        guard let socketPath else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            Terminal.error("warning: NOTIFY_SOCKET \(socketPath): socket: \(String(cString: strerror(errno)))")
            return
        }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socketPath.utf8)
        // An abstract socket starts with a NUL instead of '@' and is not NUL-terminated.
        let abstract = path.first == UInt8(ascii: "@")
        if abstract { path[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else {
            Terminal.error("warning: NOTIFY_SOCKET \(socketPath): path longer than \(capacity - 1) bytes")
            return
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.enumerated() { buffer[index] = byte }
        }
        let length = MemoryLayout<sa_family_t>.size + path.count + (abstract ? 0 : 1)
        let bytes = Array(message.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bytes.withUnsafeBytes {
                    sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), socketAddress, socklen_t(length))
                }
            }
        }
        if sent < 0 {
            Terminal.error("warning: NOTIFY_SOCKET \(socketPath): sendto: \(String(cString: strerror(errno)))")
        }
    }
}
