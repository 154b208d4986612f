import DFU
public import USBModel

/// A simulated STM32MP board: the ROM, TF-A and U-Boot `stm32prog` personalities one after the
/// other on one port, with storage as sparse image files, a timing model, fault injection, a
/// request trace and a protocol checker.
///
/// Not thread-safe by itself (like every `USBDeviceModel`): its host — `VirtualUSBBus` or the
/// umockdev emulator — serializes every call under one lock; tests read the logs once the
/// driving task is done. That is the invariant behind `@unchecked Sendable`.
public final class VirtualBoard: SimulatedBoard, @unchecked Sendable {
    public let configuration: BoardConfiguration
    public let storage: BoardStorage
    /// Board time: the host's clock at the last `advance(to:)`.
    public private(set) var now: Duration = .zero
    /// Every request received, in order.
    public private(set) var trace: [BoardTraceEntry] = []
    /// False keeps `trace` empty: it costs ~100 bytes per request, ~100 MB per GiB flashed (the
    /// CLI and the peak-memory benchmark turn it off). Faults and protocol checks do not need it.
    public var recordsTrace = true
    /// Called with the phase (from the alternate's name) and the block number of every DNLOAD that
    /// carries data, before the firmware handles it, on the thread that delivers the request: lets
    /// the emulator hold the board at a chosen point (`--pause-at`) so tests can act on a run
    /// that is provably in the middle of a phase, without timing.
    public var dataBlockObserver: ((_ phase: UInt8, _ block: Int) -> Void)?
    /// DNLOAD requests that carried data, counted whether or not the trace is kept.
    private var dataBlocksReceived = 0
    /// Bytes of every DNLOAD data stage received, counted whether or not the trace is kept.
    public private(set) var dataBytesReceived: Int64 = 0
    /// What a UART console would have shown (firmware messages of the reference).
    public private(set) var consoleLog: [String] = []
    /// What the host kernel would have logged about this port (failed enumerations).
    public private(set) var kernelLog: [String] = []
    /// Requests a well-behaved host does not send (host rules of §1.2, GetPhase before DETACH).
    public private(set) var protocolViolations: [String] = []
    /// Enumerations so far (the ROM at power-on is 1).
    public internal(set) var enumerationCount = 0

    var current: BoardDevice?
    /// The fastboot gadget, when U-Boot runs `fastboot usb 0` (then `current` is nil).
    var gadget: FastbootGadget?
    /// The script that started the fastboot gadget (it goes on after `continue`).
    var runningScript: UBootShell?
    /// U-Boot's environment as the hand-off script and fastboot see it.
    public internal(set) var ubootEnv: [String: String] = [:]
    /// Fastboot commands received, in order (`getvar:…`, `flash:rootfs`, …).
    public internal(set) var fastbootCommands: [String] = []
    /// `mmc partconf`/`mmc bootbus` settings by MMC index, as the last command left them.
    public internal(set) var mmcBootSettings: [Int: [String: [String]]] = [:]
    /// The FlashLayout an ST TF-A v2.4 left in RAM (U-Boot then skips enumeration 1).
    var ramLayout: [UInt8]?
    /// The FIP (phase 0x03) TF-A held in RAM when it last accepted one: what BL2 loads.
    public internal(set) var ramFIP: [UInt8]?
    /// A DETACH to U-Boot happened and the device has not come back yet (a port reset now is a
    /// protocol violation and makes U-Boot reset the board).
    var ubootDetachPending = false
    private var getStatusStallDone = false

    private struct Scheduled {
        var time: Duration
        var order: Int
        var action: () -> BusTransition?
    }
    private var scheduled: [Scheduled] = []
    private var scheduleCounter = 0

    /// Powers the board on with the boot pins on USB: the ROM is enumerated at once.
    public init(configuration: BoardConfiguration) {
        self.configuration = configuration
        port = configuration.port
        storage = BoardStorage(directory: configuration.storageDirectory, devices: configuration.storage)
        current = makeDevice(ROMFirmware(board: self))
        resetUBootEnvironment()
    }

    // MARK: - SimulatedBoard

    /// The port the board is on now: `configuration.port`, unless a fault moved it.
    public private(set) var port: PortPath

    /// The port U-Boot enumerates on under the `moves-port` faults: the next port of the same hub.
    var movedPort: PortPath {
        var moved = configuration.port
        moved.ports[moved.ports.count - 1] += 1
        return moved
    }
    public var attachedDevice: (any USBDeviceModel)? { current ?? gadget }
    public var nextTransitionTime: Duration? { scheduled.map(\.time).min() }

    /// Which firmware answers now (nil while nothing is enumerated).
    public var stage: FirmwareStage? { current?.firmware.stage }

    public func advance(to time: Duration) -> [BusTransition] {
        if time > now { now = time }
        var transitions: [BusTransition] = []
        while let index = scheduled.indices.min(by: {
            (scheduled[$0].time, scheduled[$0].order) < (scheduled[$1].time, scheduled[$1].order)
        }),
            scheduled[index].time <= now
        {
            let item = scheduled.remove(at: index)
            if let transition = item.action() { transitions.append(transition) }
        }
        return transitions
    }

    // MARK: - Used by the personalities

    func makeDevice(_ firmware: Firmware) -> BoardDevice {
        enumerationCount += 1
        return BoardDevice(board: self, session: enumerationCount, firmware: firmware)
    }

    func console(_ line: String) { consoleLog.append(line) }
    func kernel(_ line: String) { kernelLog.append(line) }
    func violation(_ text: String) { protocolViolations.append(text) }
    func record(_ entry: BoardTraceEntry) {
        if entry.isDFU(DFURequest.download), entry.dataLength > 0 {
            dataBlocksReceived += 1
            dataBytesReceived += Int64(entry.dataLength)
        }
        if recordsTrace { trace.append(entry) }
    }

    func schedule(after delay: Duration, _ action: @escaping () -> BusTransition?) {
        scheduleCounter += 1
        scheduled.append(Scheduled(time: now + delay, order: scheduleCounter, action: action))
    }

    /// The device soft-disconnects after `delay`.
    func disconnect(after delay: Duration) {
        schedule(after: delay) { [unowned self] in
            guard current != nil || gadget != nil else { return nil }
            current = nil
            gadget = nil
            return .detach(port: port)
        }
    }

    /// `firmware()` enumerates after `delay` (a new USB session).
    func enumerate(after delay: Duration, _ firmware: @escaping () -> Firmware) {
        schedule(after: delay) { [unowned self] in
            let device = makeDevice(firmware())
            current = device
            ubootDetachPending = false
            return .attach(port: port, device: device)
        }
    }

    /// EP0 time of `bytes` at the stage's throughput plus the fixed cost of a transfer.
    func usbTime(stage: FirmwareStage, bytes: Int) -> Duration {
        let timing = configuration.timing
        let rate: Int64
        switch stage {
        case .rom: rate = timing.romBytesPerSecond
        case .tfa: rate = timing.tfaBytesPerSecond
        case .uboot: rate = timing.ubootBytesPerSecond
        }
        return timing.controlOverhead + BoardTiming.transfer(bytes, rate: rate)
    }

    /// getstatus-stall: the GETSTATUS after the second data block of the first download STALLs.
    func injectGetStatusStall(_ setup: SetupPacket, stage: FirmwareStage) -> Bool {
        guard configuration.fault == .getStatusStall, !getStatusStallDone, setup.request == DFURequest.getStatus else {
            return false
        }
        guard dataBlocksReceived >= 2 else { return false }
        getStatusStallDone = true
        return true
    }

    func afterRequest(_ setup: SetupPacket, data: [UInt8], device: BoardDevice) {}

    /// The ROM hands over to the FSBL (MP15: on manifestation; MP13/MP2: on DETACH).
    func romStartsFSBL(inPlace: Bool) {
        let config = configuration
        let chip = StageIdentity.chipName(config.soc)
        console("NOTICE:  CPU: \(chip)")
        if config.fault == .bootInterfaceUnsupported {
            // A storage TF-A started from USB (reference §B).
            console("ERROR:   Boot interface 6 not supported")
            console("PANIC at PC : 0x2ffe4d2c")
            if inPlace {
                // The ROM's session dies mid-status: an I/O error, then silence.
                current?.silent = true
                current?.pendingFailure = .io
            } else {
                disconnect(after: config.timing.detachToDisconnect)
            }
            return
        }
        if config.fault == .vanishAfterFSBL {
            // What a host sees when the ROM refuses the FSBL and the board resets or dies: the
            // device is gone in the middle of the manifestation's status requests.
            console("(the board dropped off the bus after the FSBL)")
            vanish()
            return
        }
        console("NOTICE:  BL2: Booting from USB (STM32CubeProgrammer)")
        if config.soc == .mp15 {
            // Same USB session: TF-A keeps the ROM's configuration (§A.4).
            current?.firmware = TFAFirmware(board: self)
            if config.mp15ROMStatusFailsAfterFSBL { current?.pendingFailure = .io }
        } else if inPlace {
            schedule(after: config.timing.romToTFA) { [unowned self] in
                if let device = current { device.firmware = TFAFirmware(board: self) }
                return nil
            }
        } else {
            disconnect(after: config.timing.detachToDisconnect)
            enumerate(after: config.timing.romToTFA) { [unowned self] in TFAFirmware(board: self) }
        }
    }

    /// TF-A got DETACH: MP2 DDR phase → TF-A again; SSBL loaded → U-Boot (unless a fault says no).
    func tfaDetached(ssblLoaded: Bool, ddrOnly: Bool) {
        let timing = configuration.timing
        let disconnectDelay = Duration.microseconds(100)
        disconnect(after: disconnectDelay)
        if ddrOnly {
            // The reconnection counts from the soft disconnect, so it never overtakes it.
            enumerate(after: disconnectDelay + timing.tfaReconnect) { [unowned self] in
                TFAFirmware(board: self, ddrDone: true)
            }
            return
        }
        guard ssblLoaded else {
            console("ERROR:   BL2: Failed to load image id 5 (-2)")
            return
        }
        console("NOTICE:  BL2: Booting BL32")
        console("U-Boot 2023.10-stm32mp (Oct 01 2023 - 00:00:00 +0000)")
        switch configuration.fault {
        case .noUBoot:
            console("No USB device found")
            console("udc_device_get_by_index failed")
        case .enumerationErrors:
            schedule(after: timing.tfaToUBoot) { [unowned self] in
                let portName = port.description
                for (number, error) in [(5, -71), (6, -71), (7, -110)] {
                    kernel("usb \(portName): new high-speed USB device number \(number) using xhci_hcd")
                    kernel("usb \(portName): device descriptor read/64, error \(error)")
                }
                kernel("usb \(portName): device not accepting address 7, error -71")
                kernel("usb usb\(port.bus)-port\(port.ports.last ?? 1): unable to enumerate USB device")
                return nil
            }
        default:
            let layout = configuration.tfaVariant == .stV24 ? ramLayout : nil
            let moves = configuration.fault == .movesPort || configuration.fault == .movesPortNewSerial
            // Counted from the soft disconnect too: with zero timing U-Boot must not enumerate
            // before TF-A has left (the disconnect would then take U-Boot off the bus).
            enumerate(after: disconnectDelay + timing.tfaToUBoot) { [unowned self] in
                if moves { port = movedPort }
                return UBootFirmware.boot(board: self, ramLayout: layout)
            }
        }
    }

    /// U-Boot ends `stm32prog`: gadget loop ends, soft disconnect; then either the board idles in
    /// U-Boot or it resets into the ROM.
    func ubootLeaves(reset: Bool, message: String) {
        let timing = configuration.timing
        console(message)
        disconnect(after: timing.detachToDisconnect)
        ubootDetachPending = true
        if reset {
            console("resetting ...")
            powerCycleToROM(after: timing.resetToROM)
        }
    }

    /// U-Boot enumeration 1 got DETACH with a layout: device init, then enumeration 2.
    func ubootReenumerates(after delay: Duration, _ firmware: @escaping () -> Firmware) {
        disconnect(after: configuration.timing.detachToDisconnect)
        ubootDetachPending = true
        if configuration.fault == .resetAfterDetach {
            // The board came back in the ROM: U-Boot saw a bus reset after DETACH, or browned out.
            console("resetting ...")
            powerCycleToROM(after: configuration.timing.resetToROM)
            return
        }
        enumerate(after: configuration.timing.detachToDisconnect + delay, firmware)
    }

    func powerCycleToROM(after delay: Duration) {
        scheduled.removeAll()
        resetUBootEnvironment()
        disconnect(after: configuration.timing.detachToDisconnect)
        enumerate(after: delay) { [unowned self] in ROMFirmware(board: self) }
    }

    /// vanish-mid-partition: the board drops off the bus now and never returns.
    func vanish() {
        console("(board lost power)")
        current?.silent = true
        scheduled.removeAll()
        disconnect(after: .zero)
    }

    /// A USB bus reset on the port (from the host).
    func portReset() {
        guard ubootDetachPending else { return }
        violation("USB port reset after DFU_DETACH to U-Boot")
        // DWC2 (MP13/MP15): U-Boot's dfu_usb_get_reset() → do_reset. MP2 (DWC3) ignores it.
        guard configuration.soc != .mp25 else { return }
        console("resetting ...")
        powerCycleToROM(after: configuration.timing.resetToROM)
    }
}
