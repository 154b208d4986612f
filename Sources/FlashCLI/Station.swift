import BoardTracking
import Dispatch
import FlashEngine
import FlashLayout
import Glibc
import StationMonitor
import StationRecords
import StatusServer
import Synchronization
import Timekeeping
import USBModel
import VirtualBoard

/// The station could not start: bad layout, records or listen address (the message says which).
struct StationStartError: Error {
    var message: String
}

/// Everything the station's one loop reacts to, in the order it happened.
enum StationInput: Sendable {
    case device(HotplugEvent)
    case signal(Int32)
    case ended(BoardOutcome)
    /// `--drain-timeout` ran out after SIGTERM.
    case drainLimit
    /// `--simulate`: every virtual board was plugged `--runs` times.
    case simulationDone
}

/// The long-running `station` service: one tracker, one hot-plug subscription, one loop that
/// starts a `BoardJob` for each board entering the ROM code on an allowed port. The loop alone
/// decides (no locks around its state): hot-plug events, signals and ended attempts arrive on one
/// stream. Once per plug-in follows from reacting to *arrivals* in the ROM only: a board left
/// attached after its attempt (in U-Boot, or back in the ROM during its attempt) makes no new
/// arrival, so it is not taken again until it re-enumerates in the ROM.
final class Station: Sendable {
    let options: StationRunCommand
    let flash: FlashCommand
    let bus: any USBBus
    let tracker: BoardTracker
    let status: StationStatus
    let output: MultiBoardOutput
    let notify: SystemdNotify
    let simulation: StationSimulation?
    /// The ports boards are taken on; empty: any.
    let allowed: Set<PortPath>
    let firstSettings: BoardJobSettings
    let recordsPath: String

    private init(
        options: StationRunCommand, flash: FlashCommand, bus: any USBBus, status: StationStatus,
        simulation: StationSimulation?, allowed: Set<PortPath>, settings: BoardJobSettings, recordsPath: String
    ) {
        self.options = options
        self.flash = flash
        self.bus = bus
        tracker = settings.tracker
        self.status = status
        output = settings.output
        notify = SystemdNotify()
        self.simulation = simulation
        self.allowed = allowed
        firstSettings = settings
        self.recordsPath = recordsPath
    }

    /// Checks the layout, opens the records, sets up the bus (real or virtual).
    static func start(_ options: StationRunCommand) async throws(StationStartError) -> Station {
        let flash: FlashCommand
        let layout: StationLayout
        do {
            flash = try options.flashCommand()
            layout = try StationLayout.load(flash)
        } catch {
            throw StationStartError(message: "\(options.layout): not starting: \(error)")
        }
        let recordsPath = options.db ?? RecordLocation.defaultPath()
        let store: RecordStore
        do {
            store = try RecordLocation.open(recordsPath)
        } catch {
            throw StationStartError(message: "not starting: \(error)")
        }
        if let folder = options.logDirectory {
            var info = stat()
            guard stat(folder, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, access(folder, W_OK) == 0 else {
                throw StationStartError(
                    message: "--log-dir \(folder): not a writable folder: \(String(cString: strerror(errno)))")
            }
        }
        let allowed = Set(options.ports.compactMap(PortPath.init))
        let bus: any USBBus
        var simulation: StationSimulation?
        var tiles = allowed.sorted(by: portOrder)
        if options.simulate {
            let virtual = VirtualUSBBus(clock: SystemClock())
            let rig: StationSimulation
            do {
                rig = try StationSimulation(bus: virtual, options: options, flash: flash, plan: layout.plan)
            } catch {
                throw StationStartError(message: "not starting: the virtual boards: \(error)")
            }
            if tiles.isEmpty { tiles = rig.ports }
            simulation = rig
            bus = virtual
        } else {
            do {
                bus = try SystemBus.make()
            } catch {
                throw StationStartError(message: "not starting: USB: \(error)")
            }
        }
        let status = StationStatus(ports: tiles)
        let settings = BoardJobSettings(
            tracker: BoardTracker(bus: bus), layout: layout.fingerprint, plan: layout.plan, request: layout.request,
            store: store, status: status, output: MultiBoardOutput(mode: .plain), simulated: options.simulate,
            logFolder: options.logDirectory)
        return Station(
            options: options, flash: flash, bus: bus, status: status, simulation: simulation, allowed: allowed,
            settings: settings, recordsPath: recordsPath)
    }

    static func log(_ text: String) { Terminal.error("station: " + text) }

    /// Serves until stopped; returns the exit status (0 after an orderly stop; with `--simulate`,
    /// 0 when every attempt was done).
    func run() async -> Int32 {
        let (inputs, input) = AsyncStream.makeStream(of: StationInput.self)
        let signals = StationSignals(input: input)
        defer { signals.stop() }

        // Subscribed before the first scan, so that no board falls between the two.
        let events: any HotplugSubscription
        do {
            events = try await bus.subscribe()
        } catch {
            Self.log("not starting: cannot watch USB hot-plug events: \(error)")
            return 1
        }
        let clock = bus.clock
        let watcher = Task {
            while !Task.isCancelled {
                do {
                    if let event = try await events.next(until: clock.now + .seconds(1)) {
                        input.yield(.device(event))
                    }
                } catch {
                    if Task.isCancelled { break }
                    Self.log("hot-plug events: \(error); retrying in 1 s")
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
        defer { watcher.cancel() }

        var serverTask: Task<Void, Never>?
        defer { serverTask?.cancel() }
        var page = ""
        if let listen = options.listen.flatMap(ListenAddress.init) {
            let (bound, boundInput) = AsyncStream.makeStream(of: Result<Int, any Error>.self)
            let server = StatusServer(host: listen.host, port: listen.port, status: status)
            serverTask = Task {
                do {
                    try await server.run(bound: { boundInput.yield(.success($0)) })
                } catch {
                    boundInput.yield(.failure(error))
                }
            }
            var iterator = bound.makeAsyncIterator()
            switch await iterator.next() {
            case .success(let port):
                let host = listen.host.contains(":") ? "[\(listen.host)]" : listen.host
                page = "http://\(host):\(port)/"
            case .failure(let error):
                Self.log("not starting: --listen \(options.listen ?? ""): \(error)")
                return 1
            case nil:
                return 1
            }
        }

        var present: [PortPath] = []
        if simulation == nil {
            do {
                present = try await tracker.devices()
                    .filter {
                        $0.kind.family == .stm32mp && $0.kind.stage == .rom && !$0.leased && takes($0.identity.port)
                    }
                    .map(\.identity.port).sorted(by: portOrder)
            } catch {
                Self.log(
                    "cannot list USB devices: \(error); boards already attached are taken when they re-enter the ROM")
            }
        }
        let where_ =
            allowed.isEmpty
            ? "any port" : "port(s) " + allowed.sorted(by: portOrder).map(\.description).joined(separator: ", ")
        Self.log(
            "ready: \(firstSettings.layout.path) (sha256 \(firstSettings.layout.sha256)) on \(where_); records in \(recordsPath)"
                + (page.isEmpty ? "" : "; status page \(page) (metrics \(page)metrics)"))
        await notify.ready(status: "waiting for boards on \(where_)")
        let simulationTask = simulation?.start(input: input, taken: takes)
        defer { simulationTask?.cancel() }

        return await withTaskGroup(of: Void.self) { group in
            var loop = StationLoop(settings: firstSettings)
            func take(_ port: PortPath) async {
                guard !loop.draining, takes(port), !loop.running.contains(port) else { return }
                loop.running.insert(port)
                // From now on no other board's attempt follows its board (by serial) onto this port.
                await tracker.pin([port])
                let job = BoardJob(settings: loop.settings, port: port, virtualBoard: simulation?.board(at: port))
                group.addTask {
                    let outcome = await job.run()
                    input.yield(.ended(outcome))
                }
                notify.status(loop.summary)
            }
            // Every port known to be served now: boards that share a serial stay on their port.
            await tracker.pin(allowed.union(simulation?.ports ?? []))
            for port in present { await take(port) }
            inputs: for await item in inputs {
                switch item {
                case .device(let event):
                    let port = event.device.port
                    if event.action == .remove {
                        if !loop.running.contains(port) { status.left(port: port) }
                        continue
                    }
                    // An arrival from before the port's last attempt ended happened during it (the
                    // board fell back to the ROM mid-flash): the same plug-in, not taken again.
                    if let ended = loop.endedAt[port], event.time <= ended { continue }
                    let kind = tracker.families.classify(event.device)
                    if kind.family == .stm32mp, kind.stage == .rom { await take(port) }
                case .ended(let outcome):
                    loop.running.remove(outcome.port)
                    loop.endedAt[outcome.port] = clock.now
                    if outcome.result == .done { loop.done += 1 } else { loop.failed += 1 }
                    simulation?.ended(port: outcome.port)
                    notify.status(loop.summary)
                case .signal(SIGHUP):
                    await reload(&loop)
                case .signal(let number):
                    if loop.draining {
                        Self.log("second signal: cancelling \(loop.running.count) running attempt(s)")
                        group.cancelAll()
                    } else {
                        loop.draining = true
                        simulationTask?.cancel()
                        Self.log(
                            "\(number == SIGINT ? "SIGINT" : "SIGTERM"): taking no more boards; "
                                + "\(loop.running.count) running attempt(s) may finish within \(Int(options.drainTimeout)) s"
                        )
                        await notify.stopping(status: "stopping: \(loop.running.count) attempt(s) finishing")
                        let limit = options.drainTimeout
                        group.addTask {
                            try? await Task.sleep(for: .seconds(limit))
                            if !Task.isCancelled { input.yield(.drainLimit) }
                        }
                    }
                case .drainLimit:
                    if !loop.running.isEmpty {
                        Self.log("--drain-timeout ran out: cancelling \(loop.running.count) running attempt(s)")
                        group.cancelAll()
                    }
                case .simulationDone:
                    loop.draining = true
                    loop.simulationFinished = true
                }
                if loop.draining && loop.running.isEmpty { break inputs }
            }
            // Ends the drain timer if one runs; no attempt is left.
            group.cancelAll()
            Self.log("stopped: \(loop.done) done, \(loop.failed) failed")
            if loop.simulationFinished && loop.failed > 0 { return 1 }
            return 0
        }
    }

    /// Whether the station takes boards on `port`.
    func takes(_ port: PortPath) -> Bool { allowed.isEmpty || allowed.contains(port) }

    /// SIGHUP: check the layout again; new attempts use it, running ones keep theirs. A layout
    /// that does not pass keeps the old one, and the log says why.
    private func reload(_ loop: inout StationLoop) async {
        await notify.reloading()
        do {
            let layout = try StationLayout.load(flash)
            loop.settings.layout = layout.fingerprint
            loop.settings.plan = layout.plan
            loop.settings.request = layout.request
            Self.log("SIGHUP: layout reloaded: \(layout.fingerprint.path) (sha256 \(layout.fingerprint.sha256))")
        } catch {
            Self.log(
                "SIGHUP: keeping the previous layout (sha256 \(loop.settings.layout.sha256)): the new one is not usable: \(error)"
            )
        }
        await notify.ready(status: loop.summary)
    }
}

/// The loop's own state (only the loop touches it).
struct StationLoop {
    var settings: BoardJobSettings
    var running: Set<PortPath> = []
    /// When each port's last attempt ended (bus clock).
    var endedAt: [PortPath: Duration] = [:]
    var draining = false
    var simulationFinished = false
    var done = 0
    var failed = 0

    var summary: String { "\(running.count) flashing, \(done) done, \(failed) failed" }
}

/// The layout as the station flashes it: checked, planned, fingerprinted; swapped on SIGHUP.
struct StationLayout: Sendable {
    var fingerprint: LayoutFingerprint
    var plan: PartitionPlan
    var request: FlashRequest

    /// Runs `flash`'s checks (errors are printed on stderr and thrown).
    static func load(_ flash: FlashCommand) throws -> StationLayout {
        let fingerprint = try LayoutFingerprint(path: flash.layout)
        let plan = try flash.prepare(FlashOutput(mode: .plain))
        return StationLayout(
            fingerprint: fingerprint, plan: plan, request: try flash.flashRequest(plan: plan, selection: .any))
    }
}

/// SIGHUP, SIGTERM and SIGINT as inputs of the station's loop (through a `SignalInbox`, so that
/// no handler runs async-signal-unsafe code and none sent right after READY is lost).
final class StationSignals: Sendable {
    private let inbox: SignalInbox

    init(input: AsyncStream<StationInput>.Continuation) {
        inbox = SignalInbox([SIGHUP, SIGTERM, SIGINT], queue: DispatchQueue(label: "stm32mp-flash.station.signals")) {
            input.yield(.signal($0))
        }
    }

    func stop() { inbox.stop() }
}

/// `station --simulate --boards N --runs K`: plugs a fresh virtual board (in the ROM) on each port,
/// waits for the station's attempt on it to end, leaves it attached a moment (it must not be
/// taken again), unplugs it, and again, K times per port; then tells the station it is done.
final class StationSimulation: Sendable {
    let bus: VirtualUSBBus
    let ports: [PortPath]
    let runs: Int
    private let base: BoardConfiguration
    private let sameSerial: Bool
    private let boards = Mutex<[PortPath: VirtualBoard]>([:])
    private let endings: [PortPath: (stream: AsyncStream<Void>, input: AsyncStream<Void>.Continuation)]
    /// How long a board stays attached after its attempt ended, and unplugged before the next.
    static let hold: Duration = .milliseconds(300)
    static let gap: Duration = .milliseconds(100)

    init(bus: VirtualUSBBus, options: StationRunCommand, flash: FlashCommand, plan: PartitionPlan) throws {
        self.bus = bus
        runs = options.runs
        sameSerial = options.sameSerial
        var base = try flash.simulationConfiguration(plan)
        base.timing = base.timing.scaled(by: options.simulationSpeed)
        self.base = base
        ports = (1...options.boards).map { PortPath(bus: 1, ports: [1, $0]) }
        var endings: [PortPath: (AsyncStream<Void>, AsyncStream<Void>.Continuation)] = [:]
        for port in ports { endings[port] = AsyncStream.makeStream(of: Void.self) }
        self.endings = endings
        mkdir(options.simulationDirectory, 0o755)
    }

    /// The virtual board plugged on `port` now (its console and kernel log are a failure's evidence).
    func board(at port: PortPath) -> VirtualBoard? { boards.withLock { $0[port] } }

    /// The station's attempt on `port` ended.
    func ended(port: PortPath) { endings[port]?.input.yield() }

    func start(input: AsyncStream<StationInput>.Continuation, taken: @escaping @Sendable (PortPath) -> Bool) -> Task<
        Void, Never
    > {
        Task {
            await withTaskGroup(of: Void.self) { group in
                for port in ports {
                    group.addTask { await self.drive(port, taken: taken(port)) }
                }
            }
            if !Task.isCancelled { input.yield(.simulationDone) }
        }
    }

    private func drive(_ port: PortPath, taken: Bool) async {
        guard let ending = endings[port] else { return }
        var endingsSeen = ending.stream.makeAsyncIterator()
        let index = port.ports.last ?? 1
        for _ in 0..<runs {
            var configuration = base
            configuration.port = port
            configuration.storageDirectory = base.storageDirectory + "/\(port)"
            mkdir(configuration.storageDirectory, 0o755)
            if !sameSerial { configuration.serial = String(base.serial.prefix(20)) + hex4(UInt16(index)).uppercased() }
            let board = VirtualBoard(configuration: configuration)
            board.recordsTrace = false
            boards.withLock { $0[port] = board }
            bus.plug(board)
            // A port the station does not take: the board just sits there a while.
            if taken {
                guard await endingsSeen.next() != nil else { break }
            }
            try? await Task.sleep(for: Self.hold)
            bus.unplug(port: port)
            board.storage.closeAll()
            if Task.isCancelled { break }
            try? await Task.sleep(for: Self.gap)
        }
    }
}
