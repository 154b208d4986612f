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
/// `@unchecked Sendable`: `handle`, `claimed` and `closed` are only touched inside `worker.run`
/// (one serial queue) or in `deinit` (no other reference exists then).
final class HandleCore: @unchecked Sendable {
    private let handle: OpaquePointer
    private let worker: BlockingWorker
    /// Keeps the libusb context alive as long as a handle exists.
    private let context: USBContext
    private var claimed: Set<UInt8> = []
    private var closed = false

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
            try self.ensureOpen("libusb_set_interface_alt_setting")
            if !self.claimed.contains(interface) {
                // Detaching is best effort: NOT_SUPPORTED where the platform has no such notion.
                _ = libusb_set_auto_detach_kernel_driver(self.handle, 1)
                try checkLibUSB(libusb_claim_interface(self.handle, Int32(interface)), "libusb_claim_interface")
                self.claimed.insert(interface)
            }
            try checkLibUSB(
                libusb_set_interface_alt_setting(self.handle, Int32(interface), Int32(alternate)),
                "libusb_set_interface_alt_setting")
        }
    }

    func control(_ setup: SetupPacket, data: [UInt8], timeout: Duration) async throws -> [UInt8] {
        let milliseconds = UInt32(clamping: max(1, Int64((timeout.inSeconds * 1000).rounded(.up))))
        return try await worker.run { () throws(USBTransferError) in
            try self.ensureOpen("libusb_control_transfer")
            var buffer = setup.isIn ? [UInt8](repeating: 0, count: Int(setup.length)) : data
            let count = libusb_control_transfer(
                self.handle, setup.requestType, setup.request, setup.value, setup.index, &buffer, setup.length,
                milliseconds)
            try checkLibUSB(count, "libusb_control_transfer")
            return setup.isIn ? Array(buffer.prefix(Int(count))) : []
        }
    }

    func close() async {
        _ = try? await worker.run { () throws(USBTransferError) in
            guard !self.closed else { return }
            for interface in self.claimed { _ = libusb_release_interface(self.handle, Int32(interface)) }
            self.claimed = []
            libusb_close(self.handle)
            self.closed = true
        }
    }

    /// Runs on the worker queue.
    private func readString(index: UInt8) throws(USBTransferError) -> String {
        try ensureOpen("libusb_get_string_descriptor")
        var buffer = [UInt8](repeating: 0, count: 255)
        let count = libusb_get_string_descriptor(self.handle, index, 0x0409, &buffer, Int32(buffer.count))
        try checkLibUSB(count, "libusb_get_string_descriptor")
        guard let text = StringDescriptor.decode(Array(buffer.prefix(Int(count)))) else {
            throw USBTransferError(
                .io, operation: "libusb_get_string_descriptor", detail: "malformed string descriptor \(index)")
        }
        return text
    }

    /// Runs on the worker queue.
    private func ensureOpen(_ operation: String) throws(USBTransferError) {
        if closed { throw USBTransferError(.other, operation: operation, detail: "the handle was closed") }
    }
}
