import CLibUSB
import Synchronization
import Timekeeping
public import USBModel

/// An opened USB device over libusb. Every blocking libusb call runs on this handle's own serial
/// queue, never on the cooperative pool; a synchronous transfer can only end by completing,
/// failing or reaching its timeout, so keep timeouts short.
public final class USBDeviceHandle: USBControlTransport, USBPortResetting {
    public let identity: USBDeviceIdentity
    let core: HandleCore
    private let descriptor: DeviceDescriptor
    private let configuration: ConfigurationDescriptor
    /// The interface and endpoints `claimBulk` claimed (USBDeviceHandle+Bulk).
    let bulkEndpoints = Mutex<(interface: UInt8, out: UInt8, input: UInt8)?>(nil)

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

    /// Resets the device's port. The corresponding C function is `libusb_reset_device`.
    public func resetPort() async throws { try await core.resetDevice() }

    /// The clock that bulk transfer deadlines are measured on (the context's).
    var clock: any FlashClock { core.clock }
}

/// What one `libusb_bulk_transfer` did: libusb's code and the bytes moved before it returned
/// (a timeout can still have moved some).
struct BulkSlice: Sendable {
    var code: Int32
    var transferred: Int
    /// IN only: the bytes read.
    var data: [UInt8]
    /// Set when the handle refused the call without asking libusb (gone or closed).
    var refusal: USBTransferError?
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

    /// The clock transfer deadlines are measured on.
    var clock: any FlashClock { context.clock }

    /// This enumeration of the device, the key of its strings in the context's cache.
    private let enumeration: StringCache.Enumeration

    init(opened: OpenedDevice, context: USBContext) {
        handle = opened.handle
        self.context = context
        enumeration = StringCache.Enumeration(opened.identity)
        worker = BlockingWorker(label: "stm32mp-flash.usb-device.\(opened.identity.port)")
    }

    deinit { if !closed { libusb_close(handle) } }

    /// A string this enumeration of the device already gave is not asked for again (the cache
    /// keeps answers only, so a STALL or a failed read is tried again next time).
    func string(index: UInt8) async throws -> String {
        if let known = context.strings.string(index, of: enumeration) { return known }
        let text = try await readWithRetries(index: index)
        context.strings.remember(text, index, of: enumeration)
        return text
    }

    private func readWithRetries(index: UInt8) async throws -> String {
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
            try self.claim(interface)
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

    /// Claims `interface` for bulk transfers (fastboot has one alternate: no SET_INTERFACE).
    func claimInterface(_ interface: UInt8) async throws {
        try await worker.run { () throws(USBTransferError) in
            try self.ensureUsable("libusb_claim_interface")
            try self.claim(interface)
        }
    }

    /// One synchronous `libusb_bulk_transfer` of at most `timeout` on this handle's queue: OUT
    /// sends `data[offset...]`, IN (endpoint bit 7 set) reads up to `length` bytes. The code is
    /// libusb's (0, TIMEOUT with a partial count, or an error); NO_DEVICE marks the handle gone
    /// and a gone handle answers NO_DEVICE without calling libusb (1.0.26 asserts otherwise).
    func bulkTransfer(endpoint: UInt8, data: [UInt8], offset: Int, length: Int, timeout: Duration) async -> BulkSlice {
        let milliseconds = UInt32(clamping: max(1, Int64((timeout.inSeconds * 1000).rounded(.up))))
        let result = await worker.runCatching { () throws(USBTransferError) -> BulkSlice in
            try self.ensureUsable("libusb_bulk_transfer")
            var transferred: Int32 = 0
            if endpoint & 0x80 != 0 {
                var buffer = [UInt8](repeating: 0, count: length)
                let code = libusb_bulk_transfer(
                    self.handle, endpoint, &buffer, Int32(length), &transferred, milliseconds)
                if code == LIBUSB_ERROR_NO_DEVICE.rawValue { self.gone = true }
                return BulkSlice(
                    code: code, transferred: Int(transferred), data: Array(buffer.prefix(Int(transferred))))
            }
            let code = data.withUnsafeBufferPointer { all in
                // libusb takes a mutable pointer for both directions; it only reads on OUT.
                let start = UnsafeMutablePointer(mutating: all.baseAddress.map { $0 + offset })
                return libusb_bulk_transfer(self.handle, endpoint, start, Int32(length), &transferred, milliseconds)
            }
            if code == LIBUSB_ERROR_NO_DEVICE.rawValue { self.gone = true }
            return BulkSlice(code: code, transferred: Int(transferred), data: [])
        }
        switch result {
        case .success(let slice): return slice
        case .failure(let error):
            // Gone or closed before libusb was called.
            return BulkSlice(
                code: error.kind == .noDevice ? LIBUSB_ERROR_NO_DEVICE.rawValue : LIBUSB_ERROR_OTHER.rawValue,
                transferred: 0, data: [], refusal: error)
        }
    }

    /// Runs on the worker queue.
    private func claim(_ interface: UInt8) throws(USBTransferError) {
        guard !claimed.contains(interface) else { return }
        // Detaching is best effort: NOT_SUPPORTED where the platform has no such notion.
        _ = libusb_set_auto_detach_kernel_driver(handle, 1)
        try check(libusb_claim_interface(handle, Int32(interface)), "libusb_claim_interface")
        claimed.insert(interface)
    }

    /// `libusb_reset_device`. A device that left in the reset (NOT_FOUND: it re-enumerated, or
    /// NO_DEVICE) marks the handle gone; that is the expected outcome, not an error.
    func resetDevice() async throws {
        try await worker.run { () throws(USBTransferError) in
            try self.ensureUsable("libusb_reset_device")
            let code = libusb_reset_device(self.handle)
            if code == LIBUSB_ERROR_NOT_FOUND.rawValue || code == LIBUSB_ERROR_NO_DEVICE.rawValue {
                self.gone = true
                return
            }
            try self.check(code, "libusb_reset_device")
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
