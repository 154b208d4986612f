public import DFU
import Synchronization
public import Timekeeping
public import USBModel

/// An in-memory USB bus hosting virtual boards (any `SimulatedBoard`: STM32MP boards, virtual MCUs), for tests, benchmarks and the simulator mode of
/// the CLI. Deterministic on a `SimulatedClock`: time only moves when the host sleeps (a
/// transfer's latency, a poll timeout, waiting for an event).
///
/// Every call into a board happens under `lock`, which is what makes sharing the (non-Sendable)
/// boards across tasks safe; hence `@unchecked Sendable`.
public final class VirtualUSBBus: USBBus, @unchecked Sendable {
    public let clock: any FlashClock
    /// Attempts of a string read through the transient state after enumeration (like USBHost).
    public let stringAttempts: Int
    public let stringRetryDelay: Duration

    /// How long after a device's add event it stays invisible to `open` and `dfuDevices`: the
    /// host race where udev reports a device before libusb's own device list has it.
    public let listLag: Duration

    private let lock = Mutex(())
    private var boards: [any SimulatedBoard]
    /// One queue per live subscription (events are multicast).
    private var queues: [Int: [HotplugEvent]] = [:]
    private var nextSubscription = 0
    /// When each port's current device was announced (for `listLag`).
    private var announcedAt: [PortPath: Duration] = [:]
    private var lastIdentity: [PortPath: USBDeviceIdentity] = [:]
    /// Each board's enumerated device and its address. A device keeps its address while it stays
    /// enumerated and every new one takes the next (2…127 round), as the kernel numbers each
    /// enumeration, so that a stage's return never looks like the device that left. The device is
    /// held, not keyed by `ObjectIdentifier`: a freed device's identifier comes back for the next
    /// stage's device, which would then inherit the old address.
    private var addresses: [ObjectIdentifier: (device: any USBDeviceModel, address: Int)] = [:]
    private var nextAddress = 2

    public init(
        clock: any FlashClock, boards: [any SimulatedBoard] = [], stringAttempts: Int = 5,
        stringRetryDelay: Duration = .milliseconds(20), listLag: Duration = .zero
    ) {
        self.listLag = listLag
        self.clock = clock
        self.boards = boards
        self.stringAttempts = stringAttempts
        self.stringRetryDelay = stringRetryDelay
    }

    /// Plugs a board in (an add event follows if one is enumerated and the bus is watched).
    public func plug(_ board: any SimulatedBoard) {
        lock.withLock { _ in
            boards.append(board)
            if let device = board.attachedDevice {
                announcedAt[board.port] = clock.now
                record(.add, identity(of: device, on: board))
            }
        }
    }

    /// Unplugs the board on `port` (a remove event follows if a device was enumerated), as an
    /// operator pulling the cable; the station's simulation plugs a fresh board there next.
    public func unplug(port: PortPath) {
        lock.withLock { _ in
            applyDueTransitions()
            guard let index = boards.firstIndex(where: { $0.port == port }) else { return }
            let board = boards.remove(at: index)
            if board.attachedDevice != nil, let last = lastIdentity[port] { record(.remove, last) }
            lastIdentity[port] = nil
            announcedAt[port] = nil
        }
    }

    public func subscribe() async throws -> any HotplugSubscription { subscribeNow() }

    /// `subscribe()` without suspending (the virtual bus needs no setup), for test rigs.
    public func subscribeNow() -> any HotplugSubscription {
        let id = lock.withLock { _ in
            defer { nextSubscription += 1 }
            queues[nextSubscription] = []
            return nextSubscription
        }
        return HotplugSubscriber(
            next: { [self] deadline in try await nextEvent(id, until: deadline) }, onEnd: { [self] in unsubscribe(id) })
    }

    func unsubscribe(_ id: Int) {
        lock.withLock { _ in queues[id] = nil }
    }

    /// Pops the subscriber's next event; time moves only by sleeping until the next transition.
    func nextEvent(_ id: Int, until deadline: Duration) async throws -> HotplugEvent? {
        while true {
            let (event, nextTime): (HotplugEvent?, Duration?) = lock.withLock { _ in
                applyDueTransitions()
                if let event = pop(id) { return (event, nil) }
                return (nil, boards.compactMap(\.nextTransitionTime).min())
            }
            if let event { return event }
            guard let nextTime, nextTime <= deadline else {
                try await clock.sleep(until: deadline)
                return lock.withLock { _ in
                    applyDueTransitions()
                    return pop(id)
                }
            }
            try await clock.sleep(until: nextTime)
        }
    }

    private func pop(_ id: Int) -> HotplugEvent? {
        guard let first = queues[id]?.first else { return nil }
        queues[id]?.removeFirst()
        return first
    }

    /// Whether the device on `port` is past its `listLag` (visible to the host's device list).
    private func listed(_ port: PortPath) -> Bool {
        guard listLag > .zero, let announced = announcedAt[port] else { return true }
        return clock.now >= announced + listLag
    }

    public func dfuDevices(skipping: Set<PortPath>) async throws -> [DFUDeviceListing] {
        lock.withLock { _ in
            applyDueTransitions()
            return boards.compactMap { board in
                guard let device = board.attachedDevice, listed(board.port),
                    device.configuration.interfaces.contains(where: \.isDFU)
                else {
                    return nil
                }
                let skipped = skipping.contains(board.port)
                let identity = identity(of: device, on: board, readStrings: !skipped)
                let alternates = device.configuration.interfaces.filter(\.isDFU).map { alt in
                    DFUInterfaceAlternate(
                        interface: alt.interfaceNumber, alternate: alt.alternateSetting,
                        name: skipped || alt.interfaceStringIndex == 0
                            ? nil
                            : device.stringDescriptor(index: alt.interfaceStringIndex, languageID: 0x0409).flatMap(
                                StringDescriptor.decode))
                }
                return DFUDeviceListing(identity: identity, alternates: alternates)
            }
        }
    }

    public func open(port: PortPath) async throws -> any USBControlTransport {
        try lock.withLock { _ in
            applyDueTransitions()
            guard let board = boards.first(where: { $0.port == port }), let device = board.attachedDevice,
                listed(port)
            else {
                throw USBTransferError(.notFound, operation: "open", detail: "no DFU device at port \(port)")
            }
            let identity = lastIdentity[port] ?? identity(of: device, on: board, readStrings: false)
            if lastIdentity[port] == nil { lastIdentity[port] = identity }
            return VirtualControlTransport(bus: self, board: board, device: device, identity: identity)
        }
    }

    /// A USB bus reset of `port`, as a host would do with `libusb_reset_device` (U-Boot then
    /// resets the board if it had been told DFU_DETACH, §1.2 rule 7).
    public func resetPort(_ port: PortPath) {
        lock.withLock { _ in
            applyDueTransitions()
            guard let board = boards.first(where: { $0.port == port }) else { return }
            board.attachedDevice?.busReset()
            applyDueTransitions()
        }
    }

    // MARK: - Inside the lock

    private func applyDueTransitions() {
        let now = clock.now
        for board in boards {
            for transition in board.advance(to: now) {
                switch transition {
                case .detach(let port):
                    if let last = lastIdentity[port] { record(.remove, last) }
                case .attach(let port, let device):
                    announcedAt[port] = now
                    record(.add, identity(of: device, on: board))
                }
            }
        }
    }

    private func record(_ action: HotplugEvent.Action, _ identity: USBDeviceIdentity) {
        let event = HotplugEvent(action: action, device: identity, time: clock.now)
        for id in queues.keys { queues[id]?.append(event) }
    }

    /// The identity the kernel would publish: IDs, strings where readable (a STALL leaves them out).
    private func identity(of device: any USBDeviceModel, on board: any SimulatedBoard, readStrings: Bool = true)
        -> USBDeviceIdentity
    {
        let key = ObjectIdentifier(board)
        let address: Int
        if let known = addresses[key], known.device === device {
            address = known.address
        } else {
            address = nextAddress
            addresses[key] = (device, address)
            nextAddress = nextAddress >= 127 ? 2 : nextAddress + 1
        }
        let descriptor = device.deviceDescriptor
        func text(_ index: UInt8) -> String? {
            guard readStrings, index != 0 else { return nil }
            return device.stringDescriptor(index: index, languageID: 0x0409).flatMap(StringDescriptor.decode)
        }
        var identity = USBDeviceIdentity(
            port: board.port, busNumber: board.port.bus, deviceAddress: address, vendorID: descriptor.vendorID,
            productID: descriptor.productID, bcdDevice: descriptor.bcdDevice, speed: device.speed)
        if readStrings {
            identity.manufacturer = text(descriptor.manufacturerIndex)
            identity.product = text(descriptor.productIndex)
            identity.serial = text(descriptor.serialNumberIndex)
            lastIdentity[board.port] = identity
        }
        return identity
    }

    /// Runs one request on `device` if it is still the one attached to `board`.
    func withDevice(
        _ board: any SimulatedBoard, _ device: any USBDeviceModel, operation: String,
        _ body: (any USBDeviceModel) -> DeviceControlReply
    ) throws -> DeviceControlReply {
        try lock.withLock { _ in
            applyDueTransitions()
            guard let attached = board.attachedDevice, attached === device else {
                throw USBTransferError(.noDevice, operation: operation)
            }
            let result = body(device)
            applyDueTransitions()
            return result
        }
    }

    /// Whether `device` is still attached, and the failure it injects into the current request.
    func state(of board: any SimulatedBoard, _ device: any USBDeviceModel) -> (
        attached: Bool, failure: USBTransferError.Kind?
    ) {
        lock.withLock { _ in
            applyDueTransitions()
            let attached = board.attachedDevice.map { $0 === device } ?? false
            guard let boardDevice = device as? BoardDevice, let failure = boardDevice.pendingFailure else {
                return (attached, nil)
            }
            boardDevice.pendingFailure = nil
            return (attached, failure)
        }
    }
}

/// An opened device on the virtual bus. Standard requests are answered from the device model's
/// descriptors; DFU requests go to the model. Latency is slept on the bus clock.
final class VirtualControlTransport: USBControlTransport, @unchecked Sendable {
    let bus: VirtualUSBBus
    let board: any SimulatedBoard
    let device: any USBDeviceModel
    let identity: USBDeviceIdentity
    /// OUT and IN endpoints claimed for bulk transfers.
    let bulkEndpoints = Mutex<(out: UInt8, input: UInt8)?>(nil)

    init(bus: VirtualUSBBus, board: any SimulatedBoard, device: any USBDeviceModel, identity: USBDeviceIdentity) {
        self.bus = bus
        self.board = board
        self.device = device
        self.identity = identity
    }

    func deviceDescriptor() async throws -> DeviceDescriptor {
        let bytes = try await controlIn(
            standardGetDescriptor(DescriptorType.device, 0, length: 18), timeout: .seconds(1))
        guard let descriptor = DeviceDescriptor(bytes: bytes) else {
            throw USBTransferError(.io, operation: "GET_DESCRIPTOR device", detail: "short descriptor")
        }
        return descriptor
    }

    func configurationDescriptor() async throws -> ConfigurationDescriptor {
        let bytes = try await controlIn(
            standardGetDescriptor(DescriptorType.configuration, 0, length: 0xFFFF), timeout: .seconds(1))
        guard let configuration = ConfigurationDescriptor(bytes: bytes) else {
            throw USBTransferError(.io, operation: "GET_DESCRIPTOR configuration", detail: "malformed")
        }
        return configuration
    }

    func string(index: UInt8) async throws -> String {
        var attempt = 0
        while true {
            attempt += 1
            do {
                let bytes = try await controlIn(
                    standardGetDescriptor(DescriptorType.string, index, length: 255), timeout: .seconds(1))
                guard let text = StringDescriptor.decode(bytes) else {
                    throw USBTransferError(.io, operation: "GET_DESCRIPTOR string \(index)", detail: "malformed")
                }
                return text
            } catch let error as USBTransferError where error.kind == .stall && attempt < bus.stringAttempts {
                // Transient state right after enumeration (§2.3): retry like ST's toolbox.
                try await bus.clock.sleep(for: bus.stringRetryDelay)
            }
        }
    }

    func setAlternate(interface: UInt8, alternate: UInt8) async throws {
        let setup = SetupPacket(
            requestType: USBRequest.standardInterfaceOut, request: USBRequest.setInterface, value: UInt16(alternate),
            index: UInt16(interface), length: 0)
        try await controlOut(setup, data: [], timeout: .seconds(5))
    }

    func controlIn(_ setup: SetupPacket, timeout: Duration) async throws -> [UInt8] {
        let bytes = try await perform(setup, data: [], timeout: timeout)
        if bytes.count > Int(setup.length) {
            throw USBTransferError(.other, operation: operationName(setup), detail: "LIBUSB_ERROR_OVERFLOW")
        }
        return bytes
    }

    func controlOut(_ setup: SetupPacket, data: [UInt8], timeout: Duration) async throws {
        _ = try await perform(setup, data: data, timeout: timeout)
    }

    func close() async {}

    private func standardGetDescriptor(_ type: UInt8, _ index: UInt8, length: UInt16) -> SetupPacket {
        SetupPacket(
            requestType: USBRequest.standardDeviceIn, request: USBRequest.getDescriptor,
            value: UInt16(type) << 8 | UInt16(index),
            index: type == DescriptorType.string ? 0x0409 : 0, length: length)
    }

    private func operationName(_ setup: SetupPacket) -> String {
        setup.requestType & 0x60 == 0x20 ? DFURequest.name(setup.request) : "control \(setup)"
    }

    /// One control transfer: the model answers at once; the host then waits the reply's latency.
    private func perform(_ setup: SetupPacket, data: [UInt8], timeout: Duration) async throws -> [UInt8] {
        let operation = operationName(setup)
        let reply = try bus.withDevice(board, device, operation: operation) { model in
            answer(model, setup, data: data)
        }
        return try await finish(reply, operation: operation, timeout: timeout)
    }

    /// Completes a transfer the model answered: injected failures, a vanished device, then the
    /// reply's latency on the bus clock (a timeout when it exceeds `timeout`).
    /// `delivered`: the device's answer left before it disconnected (a fastboot OKAY to `reboot`).
    func finish(_ reply: DeviceControlReply, operation: String, timeout: Duration, delivered: Bool = false)
        async throws -> [UInt8]
    {
        let (attached, failure) = bus.state(of: board, device)
        if let failure { throw USBTransferError(failure, operation: operation) }
        if delivered, case .ok(let bytes) = reply.outcome {
            try await bus.clock.sleep(for: min(reply.latency, timeout))
            return bytes
        }
        guard attached else { throw USBTransferError(.noDevice, operation: operation) }
        switch reply.outcome {
        case .ok(let bytes):
            if reply.latency > timeout {
                try await bus.clock.sleep(for: timeout)
                throw USBTransferError(.timeout, operation: operation)
            }
            try await bus.clock.sleep(for: reply.latency)
            return bytes
        case .stall:
            try await bus.clock.sleep(for: reply.latency)
            throw USBTransferError(.stall, operation: operation)
        case .noAnswer:
            try await bus.clock.sleep(for: timeout)
            throw USBTransferError(.timeout, operation: operation)
        }
    }

    /// Standard requests from the descriptors (recorded in the board's trace); the rest to the model.
    private func answer(_ model: any USBDeviceModel, _ setup: SetupPacket, data: [UInt8]) -> DeviceControlReply {
        // A firmware that crashed in place answers nothing at all, standard requests included.
        if let boardDevice = model as? BoardDevice, boardDevice.silent { return DeviceControlReply(.noAnswer) }
        guard setup.requestType & 0x60 == 0 else { return model.control(setup, data: data) }
        var reply: DeviceControlReply
        switch (setup.request, UInt8(setup.value >> 8)) {
        case (USBRequest.setInterface, _):
            return model.setInterface(UInt8(setup.index & 0xFF), alternate: UInt8(setup.value & 0xFF)) ? .ack : .stall
        case (USBRequest.getDescriptor, DescriptorType.string):
            return model.stringDescriptor(index: UInt8(setup.value & 0xFF), languageID: setup.index).map {
                .data(Array($0.prefix(Int(setup.length))))
            } ?? .stall
        case (USBRequest.getDescriptor, DescriptorType.device):
            reply = .data(Array(model.deviceDescriptor.bytes.prefix(Int(setup.length))))
        case (USBRequest.getDescriptor, DescriptorType.configuration):
            reply = .data(Array(model.configuration.bytes.prefix(Int(setup.length))))
        case (USBRequest.getDescriptor, DescriptorType.dfuFunctional):
            let functional = model.configuration.interfaces.lazy.compactMap(\.dfuFunctionalDescriptor).first
            reply = functional.map { .data(Array($0.bytes.prefix(Int(setup.length)))) } ?? .stall
        default:
            reply = .stall
        }
        if let boardDevice = model as? BoardDevice, let board = board as? VirtualBoard {
            let length: Int
            if case .ok(let bytes) = reply.outcome { length = bytes.count } else { length = 0 }
            board.record(
                BoardTraceEntry(
                    time: board.now, stage: boardDevice.firmware.stage, session: boardDevice.session, setup: setup,
                    dataLength: length, reply: reply))
        }
        return reply
    }
}

extension VirtualUSBBus {
    /// Opens the device on `port` and reads it as a DFU device (descriptors, strings, alternates).
    public func openDFU(port: PortPath, timeouts: DFUTimeouts = .init()) async throws -> DFUDevice {
        try await DFUDevice.open(try await open(port: port), clock: clock, timeouts: timeouts)
    }

    /// Waits (on the bus clock) until a device enumerates on `port` and opens it; nil when none
    /// did within `timeout`. Removals on the way are skipped; `events` must have been subscribed
    /// before the board was told to leave.
    public func waitForDFU(
        port: PortPath, timeout: Duration, events: any HotplugSubscription, timeouts: DFUTimeouts = .init()
    ) async throws -> DFUDevice? {
        let deadline = clock.now + timeout
        while let event = try await events.next(until: deadline) {
            if event.action == .add, event.device.port == port {
                return try await openDFU(port: port, timeouts: timeouts)
            }
        }
        return nil
    }
}

/// Bulk transfers on the virtual bus go to a `USBBulkDeviceModel` (the fastboot gadget).
extension VirtualControlTransport: USBBulkTransport {
    func claimBulk(interface: UInt8, outEndpoint: UInt8, inEndpoint: UInt8) async throws {
        guard device is any USBBulkDeviceModel else {
            throw USBTransferError(.notFound, operation: "claim interface \(interface)", detail: "no bulk endpoints")
        }
        bulkEndpoints.withLock { $0 = (outEndpoint, inEndpoint) }
    }

    func bulkOut(_ data: [UInt8], timeout: Duration) async throws {
        let endpoint = try endpoints().out
        let operation = "bulk OUT 0x\(String(endpoint, radix: 16))"
        let reply = try bus.withDevice(board, device, operation: operation) { model in
            (model as? any USBBulkDeviceModel)?.bulkOut(endpoint: endpoint, data: data) ?? .stall
        }
        _ = try await finish(reply, operation: operation, timeout: timeout)
    }

    func bulkIn(maxLength: Int, timeout: Duration) async throws -> [UInt8] {
        let endpoint = try endpoints().input
        let operation = "bulk IN 0x\(String(endpoint, radix: 16))"
        let reply = try bus.withDevice(board, device, operation: operation) { model in
            (model as? any USBBulkDeviceModel)?.bulkIn(endpoint: endpoint, maxLength: maxLength) ?? .stall
        }
        return try await finish(reply, operation: operation, timeout: timeout, delivered: true)
    }

    private func endpoints() throws -> (out: UInt8, input: UInt8) {
        guard let endpoints = bulkEndpoints.withLock({ $0 }) else {
            throw USBTransferError(.other, operation: "bulk transfer", detail: "no interface claimed")
        }
        return endpoints
    }
}
