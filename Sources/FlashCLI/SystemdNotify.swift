import Glibc

/// systemd's `sd_notify` protocol, done here because it is a few lines: datagrams of
/// `KEY=VALUE` lines to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the
/// abstract namespace). `READY=1` once the station takes boards (`Type=notify`), `RELOADING=1`
/// and `READY=1` around a SIGHUP reload, `STOPPING=1` when draining, `STATUS=` for
/// `systemctl status`. Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing.
struct SystemdNotifier: Sendable {
    let socketPath: String?

    init(environment: (String) -> String? = { getenv($0).map { String(cString: $0) } }) {
        let path = environment("NOTIFY_SOCKET")
        socketPath = path.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Sends `fields` as one datagram. Failures are ignored, as sd_notify's callers do: the
    /// service works the same without a supervisor listening.
    /// - Returns: whether the datagram was sent.
    @discardableResult
    func notify(_ fields: [String: String]) -> Bool {
        guard let socketPath else { return false }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(socketPath.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // abstract namespace
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = byte }
        }
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        let message = Array(fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "\n").utf8)
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                message.withUnsafeBytes { sendto(descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT), socketAddress, length) }
            }
        }
        return sent == message.count
    }
}
