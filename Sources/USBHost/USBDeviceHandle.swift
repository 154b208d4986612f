import CLibUSB
import Timekeeping
public import USBModel

/// An opened USB device over libusb. Every blocking libusb call runs on this handle's own serial
/// queue, never on the cooperative pool; a synchronous transfer can only end by completing,
/// failing or reaching its timeout, so keep timeouts short.
public final class USBDeviceHandle: USBControlTransport {
    public let identity: USBDeviceIdentity
    private let core: HandleCore
    private let descriptor: DeviceDescriptor
    private let configuration: ConfigurationDescriptor

    init(
        core: HandleCore, identity: USBDeviceIdentity, descriptor: DeviceDescriptor,
        configuration: ConfigurationDescriptor
    ) {
        self.core = core
        self.identity = identity
        self.descriptor = descriptor
        self.configuration = configuration
    }

    /// From libusb's cache, read at enumeration. The corresponding C function is
    /// `libusb_get_device_descriptor`.
    public func deviceDescriptor() async throws -> DeviceDescriptor { descriptor }

    /// From libusb's cache, read at enumeration. The corresponding C function is
    /// `libusb_get_config_descriptor`.
    public func configurationDescriptor() async throws -> ConfigurationDescriptor { configuration }

    /// String `index` in US English, retried while the device STALLs right after enumeration.
    /// The corresponding C function is `libusb_get_string_descriptor`.
    public func string(index: UInt8) async throws -> String { try await core.string(index: index) }

    /// Claims `interface` (detaching a kernel driver if one is bound) and selects `alternate`.
    /// The corresponding C function is `libusb_set_interface_alt_setting`.
    public func setAlternate(interface: UInt8, alternate: UInt8) async throws {
        try await core.setAlternate(interface: interface, alternate: alternate)
    }

    /// The corresponding C function is `libusb_control_transfer`.
    public func controlIn(_ setup: SetupPacket, timeout: Duration) async throws -> [UInt8] {
        precondition(setup.isIn, "controlIn needs a device-to-host request type")
        return try await core.control(setup, data: [], timeout: timeout)
    }

    /// The corresponding C function is `libusb_control_transfer`.
    public func controlOut(_ setup: SetupPacket, data: [UInt8], timeout: Duration) async throws {
        precondition(
            !setup.isIn && Int(setup.length) == data.count, "controlOut needs an OUT request and wLength == data.count")
        _ = try await core.control(setup, data: data, timeout: timeout)
    }

    /// Releases claimed interfaces and closes the handle. The corresponding C function is `libusb_close`.
    public func close() async { await core.close() }
}

/// The libusb handle and its state, confined to one serial queue.
///
/// After the device is gone the handle is never used again except for one `libusb_close`:
/// libusb 1.0.26 (Debian 12) unlocks the handle's mutex without locking it when
/// `libusb_set_interface_alt_setting` runs on a device it already marked detached, and the close
/// that follows aborts (`usbi_mutex_destroy: Assertion … failed`; libusb issue #1199, fixed in
/// 1.0.27). So every call that returns LIBUSB_ERROR_NO_DEVICE marks the handle gone, a gone handle
/// answers `noDevice` without calling libusb, and SET_INTERFACE first checks that libusb still
/// lists the device (its list drops a device in the same step that marks it detached).
///
/// `@unchecked Sendable`: `handle`, `claimed`, `closed` and `gone` are only touched inside
/// `worker.run` (one serial queue) or in `deinit` (no other reference exists then).
final class HandleCore: @unchecked Sendable {
    private let handle: OpaquePointer
    private let worker: BlockingWorker
    /// Keeps the libusb context alive as long as a handle exists.
    private let context: USBContext
    private var claimed: Set<UInt8> = []
    private var closed = false
    /// The device disconnected: nothing but `libusb_close` may touch the handle any more.
    private var gone = false

    init(opened: OpenedDevice, context: USBContext) {
        handle = opened.handle
        self.context = context
        worker = BlockingWorker(label: "stm32mp-flash.usb-device.\(opened.identity.port)")
    }

    deinit { if !closed { libusb_close(handle) } }

    func string(index: UInt8) async throws -> String {
        let policy = context.stringRetry
        let transient: Set<USBTransferError.Kind> = [.stall, .io, .timeout, .other]
        var attempt = 1
        while true {
            let result = await worker.runCatching { () throws(USBTransferError) in try self.readString(index: index) }
            switch result {
            case .success(let text): return text
            case .failure(let error) where attempt < policy.attempts && transient.contains(error.kind):
                attempt += 1
                try await context.clock.sleep(for: policy.interval)
            case .failure(let error): throw error
            }
        }
    }

    /// nil for index 0 (no such string); errors other than a gone device give nil too.
    func optionalString(index: UInt8) async throws -> String? {
        guard index != 0 else { return nil }
        do {
            return try await string(index: index)
        } catch let error as USBTransferError {
            if error.kind == .noDevice { throw error }
            return nil
        }
    }

    func setAlternate(interface: UInt8, alternate: UInt8) async throws {
        try await worker.run { () throws(USBTransferError) in
            try self.ensureUsable("libusb_set_interface_alt_setting")
            if !self.claimed.contains(interface) {
                // Detaching is best effort: NOT_SUPPORTED where the platform has no such notion.
                _ = libusb_set_auto_detach_kernel_driver(self.handle, 1)
                try self.check(libusb_claim_interface(self.handle, Int32(interface)), "libusb_claim_interface")
                self.claimed.insert(interface)
            }
            // libusb 1.0.26 must not see this call on a device it marked detached (see above).
            guard self.context.lists(libusb_get_device(self.handle)) else {
                self.gone = true
                throw USBTransferError(
                    .noDevice, operation: "libusb_set_interface_alt_setting", detail: "the board disconnected")
            }
            try self.check(
                libusb_set_interface_alt_setting(self.handle, Int32(interface), Int32(alternate)),
                "libusb_set_interface_alt_setting")
        }
    }

    func control(_ setup: SetupPacket, data: [UInt8], timeout: Duration) async throws -> [UInt8] {
        let milliseconds = UInt32(clamping: max(1, Int64((timeout.inSeconds * 1000).rounded(.up))))
        return try await worker.run { () throws(USBTransferError) in
            try self.ensureUsable("libusb_control_transfer")
            var buffer = setup.isIn ? [UInt8](repeating: 0, count: Int(setup.length)) : data
            let count = libusb_control_transfer(
                self.handle, setup.requestType, setup.request, setup.value, setup.index, &buffer, setup.length,
                milliseconds)
            try self.check(count, "libusb_control_transfer")
            return setup.isIn ? Array(buffer.prefix(Int(count))) : []
        }
    }

    /// Closes once. A gone device's interfaces are not released (the kernel dropped them with the
    /// device; libusb is not asked about a device it marked detached).
    func close() async {
        _ = try? await worker.run { () throws(USBTransferError) in
            guard !self.closed else { return }
            if !self.gone {
                for interface in self.claimed { _ = libusb_release_interface(self.handle, Int32(interface)) }
            }
            self.claimed = []
            libusb_close(self.handle)
            self.closed = true
        }
    }

    /// Runs on the worker queue.
    private func readString(index: UInt8) throws(USBTransferError) -> String {
        try ensureUsable("libusb_get_string_descriptor")
        var buffer = [UInt8](repeating: 0, count: 255)
        let count = libusb_get_string_descriptor(self.handle, index, 0x0409, &buffer, Int32(buffer.count))
        try check(count, "libusb_get_string_descriptor")
        guard let text = StringDescriptor.decode(Array(buffer.prefix(Int(count)))) else {
            throw USBTransferError(
                .io, operation: "libusb_get_string_descriptor", detail: "malformed string descriptor \(index)")
        }
        return text
    }

    /// A libusb result; NO_DEVICE marks the handle gone for good. Runs on the worker queue.
    @discardableResult
    private func check(_ code: Int32, _ operation: String) throws(USBTransferError) -> Int32 {
        if code == LIBUSB_ERROR_NO_DEVICE.rawValue { gone = true }
        return try checkLibUSB(code, operation)
    }

    /// Runs on the worker queue.
    private func ensureUsable(_ operation: String) throws(USBTransferError) {
        if closed { throw USBTransferError(.other, operation: operation, detail: "the handle was closed") }
        if gone { throw USBTransferError(.noDevice, operation: operation, detail: "the board disconnected") }
    }
}
