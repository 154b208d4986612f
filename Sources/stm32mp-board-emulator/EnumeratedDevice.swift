import CUMockdev
import Glibc
import Timekeeping
import USBModel

/// One enumeration of a device: its devnode and the usbfs ioctl handler behind it. Handles opened
/// on it keep working until the device disconnects; then every ioctl fails with ENODEV, except that
/// URBs still in flight are given back on reap (as with USBDEVFS_CAP_REAP_AFTER_DISCONNECT), so a
/// waiting libusb transfer ends with LIBUSB_ERROR_NO_DEVICE instead of hanging (gotcha 11).
///
/// `@unchecked Sendable`: all state is touched with the host's lock held (ioctls arrive on
/// umockdev's worker thread); the testbed queue only reads the immutable `location` and `handler`.
final class EnumeratedDevice: @unchecked Sendable {
    let location: DeviceLocation
    let model: any USBDeviceModel
    unowned let host: BoardHost
    var connected = true
    /// When the add uevent had gone out, and when the first control request arrived (host clock).
    var announcedAt: Duration?
    var firstRequestAt: Duration?
    /// The umockdev ioctl handler object; lives as long as the process (clients may hold the fd).
    let handler: UnsafeMutablePointer<UMockdevIoctlBase>

    init(location: DeviceLocation, model: any USBDeviceModel, host: BoardHost) {
        self.location = location
        self.model = model
        self.host = host
        handler = umockdev_ioctl_base_new()
        // Retained for the process's life: umockdev calls back with this pointer.
        _ = cumockdev_connect_ioctl_handler(handler, handleIoctl, Unmanaged.passRetained(self).toOpaque())
    }

    func handle(_ call: IoctlCall) {
        host.statistics.ioctls += 1
        let request = call.request
        let urbs = call.clientURBs
        if Self.requestsReachingTheDevice.contains(request) {
            // Bring the board to the present first: it times its answers and schedules from `now`,
            // and a transition already due (the device left) must win over this request.
            host.applyDueTransitions()
        }
        if !connected {
            if request == CUMOCKDEV_USBDEVFS_REAPURBNDELAY || request == CUMOCKDEV_USBDEVFS_REAPURB,
                !urbs.completed.isEmpty || !urbs.inFlight.isEmpty
            {
                for i in urbs.inFlight.indices where !urbs.inFlight[i].isReady(at: host.clock.now) {
                    urbs.inFlight[i].fail(status: -ENODEV)
                }
                reap(call, urbs)
            } else {
                call.fail(ENODEV)
            }
            return
        }
        switch request {
        case CUMOCKDEV_USBDEVFS_SUBMITURB: submit(call, urbs)
        case CUMOCKDEV_USBDEVFS_REAPURBNDELAY, CUMOCKDEV_USBDEVFS_REAPURB: reap(call, urbs)
        case CUMOCKDEV_USBDEVFS_DISCARDURB: discard(call, urbs)
        case CUMOCKDEV_USBDEVFS_GET_CAPABILITIES: call.writeArgument(CUMOCKDEV_CAPABILITIES)
        case CUMOCKDEV_USBDEVFS_SETINTERFACE: setInterface(call)
        case CUMOCKDEV_USBDEVFS_CLAIMINTERFACE:
            let interface = call.readPointee(UInt32.self) ?? .max
            let exists = model.configuration.interfaces.contains { UInt32($0.interfaceNumber) == interface }
            exists ? call.complete(0) : call.fail(EINVAL)
        case CUMOCKDEV_USBDEVFS_RELEASEINTERFACE, CUMOCKDEV_USBDEVFS_SETCONFIGURATION, CUMOCKDEV_USBDEVFS_CLEAR_HALT,
            CUMOCKDEV_USBDEVFS_DISCONNECT_CLAIM:
            call.complete(0)
        case CUMOCKDEV_USBDEVFS_GETDRIVER, CUMOCKDEV_USBDEVFS_IOCTL:
            call.fail(ENODATA)  // No kernel driver is bound to a DFU interface.
        case CUMOCKDEV_USBDEVFS_RESET:
            host.log("USBDEVFS_RESET on \(location.devnode)")
            model.busReset()
            call.complete(0)
            host.applyDueTransitions()
        case CUMOCKDEV_USBDEVFS_GET_SPEED: call.complete(kernelSpeed)
        case CUMOCKDEV_USBDEVFS_CONNECTINFO:
            // struct usbdevfs_connectinfo { unsigned int devnum; unsigned char slow; }
            call.writeArgument(UInt32(location.deviceNumber), extra: [model.speed == .low ? 1 : 0, 0, 0, 0])
        case CUMOCKDEV_USBDEVFS_CONTROL: synchronousControl(call)
        default:
            call.fail(ENOTTY)  // Never let umockdev fall back to its empty ioctl tree (gotcha 13).
        }
    }

    private static let requestsReachingTheDevice: Set<UInt> = [
        CUMOCKDEV_USBDEVFS_SUBMITURB, CUMOCKDEV_USBDEVFS_SETINTERFACE, CUMOCKDEV_USBDEVFS_RESET,
        CUMOCKDEV_USBDEVFS_CONTROL,
    ]

    /// The kernel's `enum usb_device_speed` value.
    private var kernelSpeed: Int {
        switch model.speed {
        case .low: 1
        case .full: 2
        case .high: 3
        case .superSpeed: 5
        case .superPlus: 6
        case .unknown: 0
        }
    }

    private func runControl(_ setup: SetupPacket, data: [UInt8]) -> DeviceControlReply {
        host.statistics.controlTransfers += 1
        if firstRequestAt == nil { firstRequestAt = host.clock.now }
        let reply = answer(setup, data: data, model: model)
        host.log(
            "\(location.devnode) \(setup) -> \(reply.outcome)\(reply.latency > .zero ? " after \(reply.latency)" : "")")
        host.applyDueTransitions()
        return reply
    }

    private func submit(_ call: IoctlCall, _ urbs: ClientURBs) {
        // The argument holds the client's URB address; resolve() overwrites it (gotcha 12).
        let clientAddress: UInt = call.readArgument(UInt.self) ?? 0
        guard let urb = call.resolveArgument(length: Int(CUMOCKDEV_URB_SIZE)) else { return call.fail(EFAULT) }
        let urbBytes = UnsafeMutableRawPointer(urb.pointee.data!)
        let type = urbBytes.load(fromByteOffset: Int(CUMOCKDEV_URB_TYPE), as: UInt8.self)
        let endpoint = urbBytes.load(fromByteOffset: Int(CUMOCKDEV_URB_ENDPOINT), as: UInt8.self)
        let length = Int(urbBytes.load(fromByteOffset: Int(CUMOCKDEV_URB_BUFFER_LENGTH), as: Int32.self))
        let bulk = model as? any USBBulkDeviceModel
        // Endpoint 0 on every stage; bulk endpoints only on U-Boot's fastboot gadget.
        guard type == CUMOCKDEV_URB_TYPE_CONTROL && length >= 8 || type == CUMOCKDEV_URB_TYPE_BULK && bulk != nil,
            length >= 1, let buffer = umockdev_ioctl_data_resolve(urb, gsize(CUMOCKDEV_URB_BUFFER), gsize(length), nil)
        else {
            g_object_unref(urb)
            return call.fail(EINVAL)
        }
        let bytes = UnsafeMutableRawPointer(buffer.pointee.data!)
        var pending: PendingURB
        if let bulk, type == CUMOCKDEV_URB_TYPE_BULK {
            pending = PendingURB(
                clientAddress: clientAddress, urb: urb, buffer: buffer, kind: .bulk(endpoint: endpoint),
                capacity: length)
            host.statistics.bulkTransfers += 1
            if firstRequestAt == nil { firstRequestAt = host.clock.now }
            if endpoint & 0x80 == 0 {
                let data = Array(UnsafeRawBufferPointer(start: bytes, count: length))
                host.statistics.bulkOutBytes += length
                let reply = bulk.bulkOut(endpoint: endpoint, data: data)
                host.log(
                    "\(location.devnode) bulk OUT 0x\(String(endpoint, radix: 16)) \(length) bytes -> \(reply.outcome)")
                pending.finish(reply, at: host.clock.now)
                host.applyDueTransitions()
            } else {
                answerIn(&pending, from: bulk)
            }
        } else {
            let setup = SetupPacket(bytes: UnsafeRawBufferPointer(start: bytes, count: 8))!
            let outCount = setup.isIn ? 0 : min(Int(setup.length), length - 8)
            let data = Array(UnsafeRawBufferPointer(start: bytes + 8, count: outCount))
            let reply = runControl(setup, data: data)
            pending = PendingURB(
                clientAddress: clientAddress, urb: urb, buffer: buffer, kind: .control(setup), capacity: length - 8)
            pending.finish(reply, at: host.clock.now)
        }
        if pending.readyAt == host.clock.now {
            pending.writeResult()  // Written back by this ioctl's completion; reaped by address.
            urbs.completed.append(clientAddress)
            call.complete(0)
            pending.release()
        } else {
            urbs.inFlight.append(pending)
            call.complete(0)
        }
    }

    /// Answers of a bulk IN endpoint that a discarded URB had taken before they were due: the
    /// device still holds them in its FIFO, so the next IN URB on that endpoint gets them.
    private var heldAnswers: [UInt8: (bytes: [UInt8], readyAt: Duration)] = [:]

    /// Gives a waiting bulk IN URB the device's next answer on its endpoint, if it has one yet
    /// (until then the URB stays pending, as on a device that NAKs).
    private func answerIn(_ pending: inout PendingURB, from bulk: any USBBulkDeviceModel) {
        guard case .bulk(let endpoint) = pending.kind else { return }
        if let held = heldAnswers.removeValue(forKey: endpoint) {
            pending.finish(.init(.ok(held.bytes)), at: held.readyAt)
            return
        }
        let reply = bulk.bulkIn(endpoint: endpoint, maxLength: pending.capacity)
        if case .noAnswer = reply.outcome { return }
        host.log(
            "\(location.devnode) bulk IN 0x\(String(endpoint, radix: 16)) -> \(reply.outcome)\(reply.latency > .zero ? " after \(reply.latency)" : "")"
        )
        pending.finish(reply, at: host.clock.now)
        host.applyDueTransitions()  // `reboot`/`continue` end the gadget once their OKAY is out.
    }

    private func reap(_ call: IoctlCall, _ urbs: ClientURBs) {
        if !urbs.completed.isEmpty {
            call.writeArgument(urbs.completed.removeFirst())
            return
        }
        if connected, let bulk = model as? any USBBulkDeviceModel {
            for i in urbs.inFlight.indices where urbs.inFlight[i].readyAt == nil {
                answerIn(&urbs.inFlight[i], from: bulk)
            }
        }
        let now = host.clock.now
        guard let index = urbs.inFlight.firstIndex(where: { $0.isReady(at: now) }) else { return call.fail(EAGAIN) }
        let pending = urbs.inFlight.remove(at: index)
        pending.writeResult()
        // Point the client's `struct usbdevfs_urb *` at the URB resolved at submit time: completing
        // writes the URB and its buffer back into the client (the deferred case of gotcha 12).
        guard let pointer = call.resolveArgument(length: MemoryLayout<UInt>.size) else { return call.fail(EFAULT) }
        umockdev_ioctl_data_set_ptr(pointer, 0, pending.urb)
        call.complete(0)
        g_object_unref(pointer)
        pending.release()
    }

    private func discard(_ call: IoctlCall, _ urbs: ClientURBs) {
        let address: UInt = call.readArgument(UInt.self) ?? 0
        let now = host.clock.now
        guard let index = urbs.inFlight.firstIndex(where: { $0.clientAddress == address && !$0.isReady(at: now) })
        else {
            return call.fail(EINVAL)  // Already complete: not in flight any more.
        }
        // A bulk IN that had taken an answer not yet due: the answer stays in the device's FIFO.
        if case .bulk(let endpoint) = urbs.inFlight[index].kind, endpoint & 0x80 != 0,
            let readyAt = urbs.inFlight[index].readyAt, urbs.inFlight[index].status == 0
        {
            heldAnswers[endpoint] = (urbs.inFlight[index].reply, readyAt)
        }
        urbs.inFlight[index].cancel()
        call.complete(0)
    }

    private func setInterface(_ call: IoctlCall) {
        // struct usbdevfs_setinterface { unsigned int interface; unsigned int altsetting; }
        guard let argument = call.resolveArgument(length: 8) else { return call.fail(EFAULT) }
        defer { g_object_unref(argument) }
        let raw = UnsafeMutableRawPointer(argument.pointee.data!)
        let interface = raw.load(as: UInt32.self)
        let alternate = raw.load(fromByteOffset: 4, as: UInt32.self)
        host.log("\(location.devnode) SETINTERFACE \(interface) alt \(alternate)")
        let accepted = model.setInterface(
            UInt8(truncatingIfNeeded: interface), alternate: UInt8(truncatingIfNeeded: alternate))
        accepted ? call.complete(0) : call.fail(EPIPE)
        host.applyDueTransitions()
    }

    /// USBDEVFS_CONTROL: answered at once (libusb uses URBs; this serves other clients).
    private func synchronousControl(_ call: IoctlCall) {
        guard let transfer = call.resolveArgument(length: Int(CUMOCKDEV_CTRLTRANSFER_SIZE)) else {
            return call.fail(EFAULT)
        }
        defer { g_object_unref(transfer) }
        let raw = UnsafeMutableRawPointer(transfer.pointee.data!)
        let setup = SetupPacket(bytes: UnsafeRawBufferPointer(start: raw, count: 8))!
        var dataBuffer: UnsafeMutablePointer<UMockdevIoctlData>?
        if setup.length > 0 {
            dataBuffer = umockdev_ioctl_data_resolve(
                transfer, gsize(CUMOCKDEV_CTRLTRANSFER_DATA), gsize(setup.length), nil)
            guard dataBuffer != nil else { return call.fail(EFAULT) }
        }
        defer { if let dataBuffer { g_object_unref(dataBuffer) } }
        let data =
            setup.isIn ? [] : Array(UnsafeRawBufferPointer(start: dataBuffer?.pointee.data, count: Int(setup.length)))
        let reply = runControl(setup, data: data)
        switch reply.outcome {
        case .ok(let bytes) where setup.isIn:
            let count = min(bytes.count, Int(setup.length))
            if let target = dataBuffer?.pointee.data {
                bytes.withUnsafeBytes {
                    UnsafeMutableRawPointer(target).copyMemory(from: $0.baseAddress!, byteCount: count)
                }
            }
            call.complete(count)
        case .ok: call.complete(Int(setup.length))
        case .stall: call.fail(EPIPE)
        case .noAnswer: call.fail(ETIMEDOUT)
        }
    }
}

/// The URBs of one open file descriptor of a client process.
final class ClientURBs {
    /// Client addresses of URBs whose results are already in the client's memory.
    var completed: [UInt] = []
    /// URBs resolved at submit time whose completion is deferred (latency, no answer).
    var inFlight: [PendingURB] = []
}

/// A submitted URB (control or bulk) and the result it will complete with.
struct PendingURB {
    enum Kind {
        case control(SetupPacket)
        case bulk(endpoint: UInt8)
    }

    let clientAddress: UInt
    /// Owned references from `resolve`, released after the URB is written back.
    let urb: UnsafeMutablePointer<UMockdevIoctlData>
    let buffer: UnsafeMutablePointer<UMockdevIoctlData>
    let kind: Kind
    /// Data bytes the buffer holds (after the 8-byte setup packet of a control URB).
    let capacity: Int
    private(set) var readyAt: Duration?
    private(set) var status: Int32 = 0
    private(set) var reply: [UInt8] = []
    /// OUT: the bytes the device took (all of them, unless the URB failed first).
    private var taken = 0

    init(
        clientAddress: UInt, urb: UnsafeMutablePointer<UMockdevIoctlData>,
        buffer: UnsafeMutablePointer<UMockdevIoctlData>, kind: Kind, capacity: Int
    ) {
        self.clientAddress = clientAddress
        self.urb = urb
        self.buffer = buffer
        self.kind = kind
        self.capacity = capacity
    }

    var isIn: Bool {
        switch kind {
        case .control(let setup): setup.isIn
        case .bulk(let endpoint): endpoint & 0x80 != 0
        }
    }

    /// Where the data stage starts in the buffer, and how many bytes it asks for.
    private var dataOffset: Int {
        if case .control = kind { return 8 }
        return 0
    }
    private var requested: Int {
        switch kind {
        case .control(let setup): min(Int(setup.length), capacity)
        case .bulk: capacity
        }
    }

    func isReady(at now: Duration) -> Bool { readyAt.map { $0 <= now } ?? false }

    /// The device's answer, due `reply.latency` after `now`; `.noAnswer` leaves it pending.
    mutating func finish(_ answer: DeviceControlReply, at now: Duration) {
        switch answer.outcome {
        case .ok(let bytes):
            status = 0
            reply = bytes
            taken = requested
            readyAt = now + answer.latency
        case .stall:
            status = -EPIPE
            readyAt = now + answer.latency
        case .noAnswer:
            break
        }
    }

    /// Ends the URB now with `status` (`-ENODEV` after a disconnect). An OUT keeps the count the
    /// device already took.
    mutating func fail(status: Int32) {
        self.status = status
        readyAt = .zero
    }

    /// DISCARDURB: gives the URB back with `-ENOENT`; what an OUT had delivered stays delivered.
    mutating func cancel() { fail(status: -ENOENT) }

    /// Stores status, actual length and IN data in the resolved copies of the client's memory.
    func writeResult() {
        let urbBytes = UnsafeMutableRawPointer(urb.pointee.data!)
        var actual: Int32 = 0
        if isIn {
            if status == 0 {
                let count = min(reply.count, requested)
                let target = UnsafeMutableRawPointer(buffer.pointee.data!) + dataOffset
                reply.withUnsafeBytes { target.copyMemory(from: $0.baseAddress!, byteCount: count) }
                actual = Int32(count)
            }
        } else {
            actual = Int32(taken)
        }
        urbBytes.storeBytes(of: status, toByteOffset: Int(CUMOCKDEV_URB_STATUS), as: Int32.self)
        urbBytes.storeBytes(of: actual, toByteOffset: Int(CUMOCKDEV_URB_ACTUAL_LENGTH), as: Int32.self)
    }

    func release() {
        g_object_unref(buffer)
        g_object_unref(urb)
    }
}

/// One ioctl from a client, with helpers over umockdev's argument marshalling.
struct IoctlCall {
    let client: UnsafeMutablePointer<UMockdevIoctlClient>

    var request: UInt { umockdev_ioctl_client_get_request(client) }
    private var argument: UnsafeMutablePointer<UMockdevIoctlData> { umockdev_ioctl_client_get_arg(client) }

    func complete(_ result: Int) { umockdev_ioctl_client_complete(client, result, 0) }
    func fail(_ error: Int32) { umockdev_ioctl_client_complete(client, -1, error) }

    /// The argument's own value (a pointer passed directly, e.g. the URB of DISCARDURB).
    func readArgument<T: FixedWidthInteger>(_ type: T.Type) -> T? {
        let data = argument.pointee
        guard let bytes = data.data, Int(data.data_len) >= MemoryLayout<T>.size else { return nil }
        return UnsafeRawPointer(bytes).loadUnaligned(as: T.self)
    }

    /// The value the argument points to (e.g. the interface number of CLAIMINTERFACE).
    func readPointee<T: FixedWidthInteger>(_ type: T.Type) -> T? {
        guard let resolved = resolveArgument(length: MemoryLayout<T>.size) else { return nil }
        defer { g_object_unref(resolved) }
        return UnsafeRawPointer(resolved.pointee.data!).loadUnaligned(as: T.self)
    }

    /// The memory the argument points to, copied from the client (owned: unref it).
    func resolveArgument(length: Int) -> UnsafeMutablePointer<UMockdevIoctlData>? {
        umockdev_ioctl_data_resolve(argument, 0, gsize(length), nil)
    }

    /// Writes `value` (and `extra` bytes after it) to the memory the argument points to; completes with 0.
    func writeArgument<T: FixedWidthInteger>(_ value: T, extra: [UInt8] = []) {
        guard let target = resolveArgument(length: MemoryLayout<T>.size + extra.count) else { return fail(EFAULT) }
        let raw = UnsafeMutableRawPointer(target.pointee.data!)
        raw.storeBytes(of: value, as: T.self)
        for (i, byte) in extra.enumerated() {
            raw.storeBytes(of: byte, toByteOffset: MemoryLayout<T>.size + i, as: UInt8.self)
        }
        complete(0)
        g_object_unref(target)
    }

    /// The URB queues of this client's connection, created on first use.
    var clientURBs: ClientURBs {
        let object = UnsafeMutableRawPointer(client).assumingMemoryBound(to: GObject.self)
        if let existing = g_object_get_data(object, "stm32mp-urbs") {
            return Unmanaged<ClientURBs>.fromOpaque(existing).takeUnretainedValue()
        }
        let urbs = ClientURBs()
        g_object_set_data_full(object, "stm32mp-urbs", Unmanaged.passRetained(urbs).toOpaque()) { pointer in
            if let pointer { Unmanaged<ClientURBs>.fromOpaque(pointer).release() }
        }
        return urbs
    }
}

/// umockdev's "handle-ioctl" signal, on its worker thread. Returns TRUE: every request is answered.
private let handleIoctl: cumockdev_ioctl_handler = { _, client, userData in
    guard let client, let userData else { return 0 }
    let device = Unmanaged<EnumeratedDevice>.fromOpaque(userData).takeUnretainedValue()
    device.host.lock.withLock { device.handle(IoctlCall(client: client)) }
    return 1
}
