import CUMockdev
import Dispatch
import Glibc
import Timekeeping
import USBModel

/// Hosts one or several `SimulatedBoard`s at the kernel interface: every device a board attaches
/// becomes a fresh sysfs record and devnode (new device number, on the port the board names, which
/// can differ from where it started), every detach a remove uevent, and ioctls on the devnodes
/// reach the board's device models. Several boards share the hubs above their ports and one
/// device-number sequence, as on a real bus.
///
/// `@unchecked Sendable`: all mutable state, the board and its models are touched only with
/// `lock` held (ioctls arrive on umockdev's worker thread, timer ticks on `timerQueue`); testbed
/// changes run in order on `operations`.
final class BoardHost: @unchecked Sendable {
    let lock = Lock()
    /// The board's time: what `advance(to:)` gets, and what answer latencies count from.
    let clock: any FlashClock
    let statistics = Statistics()
    let trace: Bool
    private let testbed: Testbed
    private let boards: [any SimulatedBoard]
    /// The device each board has enumerated now, by board.
    private var current: [ObjectIdentifier: EnumeratedDevice] = [:]
    /// For each hub port, the highest port number below it that a board starts on.
    private let hubReach: [PortPath: Int]
    private var nextDeviceNumber = 2
    /// Ports where a hub is plugged in (the root hub is the port path without ports), and the
    /// device numbers the hubs hold (never given to the board again after the numbers wrap).
    private var hubs: Set<PortPath> = []
    private var hubDeviceNumbers: Set<Int> = [1]
    private var stopped = false
    private let operations = DispatchQueue(label: "stm32mp-board-emulator.testbed")
    private let timerQueue = DispatchQueue(label: "stm32mp-board-emulator.timer")
    private let timer: any DispatchSourceTimer

    /// The udev/libusb race (`--libusb-lag-ms`): how much later than the other listeners the
    /// first-bound uevent listener hears of each added device.
    let libusbLag: Duration

    init(
        boards: [any SimulatedBoard], clock: any FlashClock, testbed: Testbed, trace: Bool, libusbLag: Duration = .zero
    ) {
        self.libusbLag = libusbLag
        self.boards = boards
        var reach: [PortPath: Int] = [:]
        for board in boards {
            for depth in 0..<board.port.ports.count {
                let hubPort = PortPath(bus: board.port.bus, ports: Array(board.port.ports.prefix(depth)))
                reach[hubPort] = max(reach[hubPort] ?? 0, board.port.ports[depth])
            }
        }
        hubReach = reach
        self.clock = clock
        self.testbed = testbed
        self.trace = trace
        timer = DispatchSource.makeTimerSource(queue: timerQueue)
    }

    /// Plugs in whatever the board has attached now and starts the transition timer. Returns once
    /// the device is visible in the testbed.
    func start() {
        timer.setEventHandler { [self] in lock.withLock { applyDueTransitions() } }
        timer.activate()
        lock.withLock {
            for board in boards {
                plugHubs(above: board.port)
                if let device = board.attachedDevice { attach(device, at: board.port, of: board) }
            }
            applyDueTransitions()
        }
        waitForTestbed()
    }

    /// Blocks until every queued testbed change is done.
    func waitForTestbed() { operations.sync {} }

    /// Freezes the bus (no more transitions) and waits for queued testbed changes, so that the
    /// testbed can be destroyed without racing them.
    func stop() {
        lock.withLock {
            stopped = true
            timer.cancel()
        }
        waitForTestbed()
    }

    /// Called with `lock` held after every request a device answered: a request can schedule a
    /// transition (DFU_DETACH), or be one.
    func applyDueTransitions() {
        guard !stopped else { return }
        for board in boards {
            let key = ObjectIdentifier(board)
            for transition in board.advance(to: clock.now) {
                switch transition {
                case .detach(let port):
                    guard let device = current[key], device.location.port == port else { continue }
                    detach(device, of: board)
                case .attach(let port, let model):
                    if let device = current[key] { detach(device, of: board) }
                    plugHubs(above: port)
                    attach(model, at: port, of: board)
                }
            }
        }
        if let next = boards.compactMap(\.nextTransitionTime).min() {
            let wait = max(.zero, next - clock.now)
            let nanoseconds = wait.components.seconds * 1_000_000_000 + wait.components.attoseconds / 1_000_000_000
            timer.schedule(deadline: .now() + .nanoseconds(Int(nanoseconds)))
        } else {
            timer.schedule(deadline: .distantFuture)
        }
    }

    /// The root hub (device 1) and a hub at each level above `port`, those not plugged in yet;
    /// they stay for good. Each has a port beyond the one on the way (see `HubModel`).
    private func plugHubs(above port: PortPath) {
        for depth in 0..<port.ports.count {
            let hubPort = PortPath(bus: port.bus, ports: Array(port.ports.prefix(depth)))
            guard hubs.insert(hubPort).inserted else { continue }
            let hub = HubModel(isRoot: depth == 0, reaching: max(port.ports[depth], hubReach[hubPort] ?? 0))
            attach(hub, at: hubPort, of: nil, deviceNumber: depth == 0 ? 1 : nil)
        }
    }

    /// `board` nil: a hub. `deviceNumber`: the root hub's fixed 1; otherwise the next free one,
    /// as the kernel gives.
    private func attach(
        _ model: any USBDeviceModel, at port: PortPath, of board: (any SimulatedBoard)?, deviceNumber: Int? = nil
    ) {
        let location = DeviceLocation(port: port, deviceNumber: deviceNumber ?? takeDeviceNumber())
        let device = EnumeratedDevice(location: location, model: model, host: self)
        if let board {
            current[ObjectIdentifier(board)] = device
            statistics.enumerations.append(device)
        } else {
            hubDeviceNumbers.insert(location.deviceNumber)
        }
        let record = deviceRecord(for: model, at: location)
        log(
            "attach \(hex4(model.deviceDescriptor.vendorID)):\(hex4(model.deviceDescriptor.productID)) at \(location.port) as \(location.devnode)"
        )
        let lag = board != nil ? libusbLag : .zero
        operations.async { [testbed] in
            do {
                // Before the add uevent, so that a fast client never opens an unhandled node (gotcha 13).
                try testbed.attachIoctl(location.devnode, handler: device.handler)
                if lag > .zero {
                    // The race: the first-bound listener (libusb's) misses this add now and gets it later.
                    let lagging = testbed.withListeners(hidden: { $0.prefix(1) }) { try testbed.add(record: record) }
                    self.lock.withLock { device.announcedAt = self.clock.now }
                    try lagging.get()
                    self.deliverLate(device, after: lag)
                } else {
                    try testbed.add(record: record)
                    self.lock.withLock { device.announcedAt = self.clock.now }
                }
            } catch {
                printError("cannot add \(location.devnode): \(error)")
            }
        }
    }

    /// Sends the add uevent of `device` to the listener that missed it, `lag` later, if the device
    /// is still there then (queued on the testbed queue, so removal cannot overtake it).
    private func deliverLate(_ device: EnumeratedDevice, after lag: Duration) {
        let nanoseconds = lag.components.seconds * 1_000_000_000 + lag.components.attoseconds / 1_000_000_000
        timerQueue.asyncAfter(deadline: .now() + .nanoseconds(Int(nanoseconds))) { [self] in
            operations.async { [testbed] in
                guard self.lock.withLock({ device.connected && !self.stopped }) else { return }
                _ = testbed.withListeners(hidden: { $0.dropFirst(1) }) {
                    testbed.sendUevent(device.location.syspath, action: "add")
                }
                self.log("late add uevent for \(device.location.devnode) to the first listener")
            }
        }
    }

    /// The next device number after the last one given, 2…127 round, skipping the hubs'.
    private func takeDeviceNumber() -> Int {
        while hubDeviceNumbers.contains(nextDeviceNumber) { advanceDeviceNumber() }
        defer { advanceDeviceNumber() }
        return nextDeviceNumber
    }

    private func advanceDeviceNumber() { nextDeviceNumber = nextDeviceNumber >= 127 ? 2 : nextDeviceNumber + 1 }

    private func detach(_ device: EnumeratedDevice, of board: any SimulatedBoard) {
        device.connected = false  // Open handles get ENODEV from now on (gotcha 11).
        if current[ObjectIdentifier(board)] === device { current[ObjectIdentifier(board)] = nil }
        log("detach \(device.location.devnode)")
        operations.async { [testbed] in
            let syspath = device.location.syspath
            // umockdev < 0.18.4 sends no remove uevent itself; it must go out while sysfs exists (gotcha 6).
            if !testbed.removeSendsUevent { testbed.sendUevent(syspath, action: "remove") }
            for child in interfaceSyspaths(of: device.model, at: device.location) { testbed.removeDevice(child) }
            testbed.removeDevice(syspath)
            testbed.detachIoctl(device.location.devnode)
        }
    }

    func log(_ message: @autoclosure () -> String) {
        if trace { printError("[emulator \(formatSeconds(clock.now))] \(message())") }
    }
}

/// Counters printed by `--stats`.
final class Statistics: @unchecked Sendable {
    /// Guarded by the host's lock.
    var ioctls = 0
    var controlTransfers = 0
    /// Bulk URBs (fastboot), and the bytes the host wrote on bulk OUT endpoints.
    var bulkTransfers = 0
    var bulkOutBytes = 0
    var enumerations: [EnumeratedDevice] = []

    /// One line per enumeration: how long after its add uevent went out the first control
    /// request arrived (the host's reaction time to a hot-plug event).
    var enumerationLines: [String] {
        enumerations.map { device in
            var line = "[emulator] \(device.location.devnode):"
            if let announced = device.announcedAt, let first = device.firstRequestAt {
                line += " add uevent → first request \(formatMilliseconds(first - announced))"
            } else {
                line += device.announcedAt == nil ? " never announced" : " no request"
            }
            return line
        }
    }
}

/// A pthread mutex (the emulator has no Foundation and needs a lock usable from C callbacks).
final class Lock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init() { pthread_mutex_init(mutex, nil) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

func printError(_ text: String) {
    let line = Array((text + "\n").utf8)
    _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
}

func formatMilliseconds(_ duration: Duration) -> String {
    let tenths = Int((duration.inSeconds * 10_000).rounded())
    return "\(tenths / 10).\(abs(tenths % 10)) ms"
}

func formatSeconds(_ duration: Duration) -> String {
    let ms = Int((duration.inSeconds * 1000).rounded())
    let fraction = String(ms % 1000)
    return "\(ms / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
}
