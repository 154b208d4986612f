/// A failed USB operation, as the host sees it. Environment failures (device gone, access denied,
/// timeout, STALL) are thrown as this; programming errors trap in the wrappers instead.
public struct USBTransferError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Why it failed, in terms the flashing engine and the diagnosis can act on.
    public enum Kind: String, Sendable, Hashable, Codable {
        /// The device answered with a STALL handshake (request refused).
        case stall
        /// The device did not answer within the transfer timeout.
        case timeout
        /// The device is gone (unplugged, re-enumerated, reset).
        case noDevice
        /// The OS refused to open the device node (permissions).
        case access
        /// Another process or driver holds the device or interface.
        case busy
        /// Low-level I/O error (bad link, protocol error).
        case io
        /// No such device or entity.
        case notFound
        /// Anything else; `detail` says what.
        case other
    }

    public var kind: Kind
    /// The operation that failed (`libusb_control_transfer`, `DFU_DNLOAD`, …).
    public var operation: String
    /// Extra detail, e.g. libusb's error name.
    public var detail: String?

    public init(_ kind: Kind, operation: String, detail: String? = nil) {
        self.kind = kind
        self.operation = operation
        self.detail = detail
    }

    public var description: String {
        let what: String
        switch kind {
        case .stall: what = "the device refused the request (STALL)"
        case .timeout: what = "the device did not answer in time"
        case .noDevice: what = "the device disconnected"
        case .access: what = "permission denied opening the device"
        case .busy: what = "the device is in use by another program or driver"
        case .io: what = "USB I/O error"
        case .notFound: what = "no such device"
        case .other: what = "USB error"
        }
        return "\(operation): \(what)" + (detail.map { " (\($0))" } ?? "")
    }
}
