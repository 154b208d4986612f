public import DFU
import Timekeeping
public import USBModel

/// Which board a lease is for.
public enum BoardMatch: Sendable, Hashable, CustomStringConvertible {
    /// The board on this port path (the one key that survives every STM32MP re-enumeration).
    case port(PortPath)
    /// The board with this serial (the chip UID on STM32MP).
    case serial(String)
    /// The only board of this family not leased by someone else (several: an error listing them).
    case only(BoardFamilyName)

    public var description: String {
        switch self {
        case .port(let port): "the board on port \(port)"
        case .serial(let serial): "the board with serial \(serial)"
        case .only(let family): "the only \(family) board"
        }
    }
}

/// Knows every DFU device on one bus by port path and serial, and who holds which: it hands out
/// leases, one board each, and never lets two leases hold the same port. One tracker per process
/// and bus; flashing one board or sixteen at once (a station) is the same code, one lease per
/// board, each on its own task.
///
/// The bus owns the single hot-plug source of the process and fans it out: every lease has its
/// own subscription, so no consumer can take another's events.
public actor BoardTracker {
    public nonisolated let bus: any USBBus
    public nonisolated let families: BoardFamilies
    /// Ports held, by lease number.
    private var holders: [PortPath: Int] = [:]
    private var nextLease = 0
    /// The last scan, by port.
    private var known: [PortPath: DFUDeviceListing] = [:]
    /// Ports whose boards belong to their own port's lease only (a station's ports): no lease
    /// follows its board by serial onto one of them, so boards that share a serial (MCU-style
    /// serials, cloned UIDs) are never recorded under each other's port.
    private var pinned: Set<PortPath> = []

    public init(bus: any USBBus, families: BoardFamilies = .standard) {
        self.bus = bus
        self.families = families
    }

    /// A lease on the board `match` names. Nothing is held until `arrival` finds it; hot-plug
    /// events are buffered for the lease from this call on.
    public func lease(_ match: BoardMatch, timing: LeaseTiming = .init()) async throws -> BoardLease {
        let id = nextLease
        nextLease += 1
        let events = try await bus.subscribe()
        return BoardLease(tracker: self, id: id, match: match, events: events, timing: timing)
    }

    /// Pins `ports` (see `pinned`): a station calls this for every port it flashes boards on.
    public func pin(_ ports: some Sequence<PortPath>) { pinned.formUnion(ports) }

    /// Every DFU device present now with what it is and whether a lease holds it. Held boards are
    /// not opened (their strings are the last ones seen).
    public func devices() async throws -> [TrackedDevice] {
        let held = Set(holders.keys)
        let listings = try await bus.dfuDevices(skipping: held)
        return listings.map { listing in
            let port = listing.identity.port
            let shown = held.contains(port) ? known[port] ?? listing : listing
            if !held.contains(port) { known[port] = listing }
            return TrackedDevice(listing: shown, kind: families.classify(shown), leased: held.contains(port))
        }
    }

    /// Ports held by leases other than `lease`.
    func portsHeld(except lease: Int) -> Set<PortPath> {
        Set(holders.filter { $0.value != lease }.keys)
    }

    /// Scans the bus for `lease`, never opening boards other leases hold (those are left out).
    func scan(for lease: Int) async throws -> [DFUDeviceListing] {
        let others = portsHeld(except: lease)
        let listings = try await bus.dfuDevices(skipping: others)
        for listing in listings where !others.contains(listing.identity.port) {
            known[listing.identity.port] = listing
        }
        return listings.filter { !others.contains($0.identity.port) }
    }

    /// Whether another lease holds `port`.
    func isHeld(_ port: PortPath, byOtherThan lease: Int) -> Bool {
        holders[port].map { $0 != lease } ?? false
    }

    /// Holds `port` for `lease`, letting go of `previous` (a board that moved); false when another
    /// lease holds it.
    func hold(_ port: PortPath, for lease: Int, releasing previous: PortPath? = nil) -> Bool {
        if let holder = holders[port], holder != lease { return false }
        if let previous, previous != port, pinned.contains(port) { return false }
        if let previous, previous != port, holders[previous] == lease { holders[previous] = nil }
        holders[port] = lease
        return true
    }

    func release(_ lease: Int) {
        holders = holders.filter { $0.value != lease }
    }
}

/// A DFU device as the tracker sees it.
public struct TrackedDevice: Sendable, Hashable {
    public var listing: DFUDeviceListing
    public var kind: BoardClass
    /// A lease holds it (a flash is running on it).
    public var leased: Bool

    public var identity: USBDeviceIdentity { listing.identity }
}

/// How a lease paces its retries; the defaults suit real hosts and the emulator.
public struct LeaseTiming: Sendable, Hashable {
    /// First pause between failed opens (doubling up to `maxRetryInterval`).
    public var firstRetry: Duration
    public var maxRetryInterval: Duration
    /// An open that keeps failing right after an add event is retried at least this long, even
    /// past the caller's deadline (libusb may list the device a moment after udev reports it).
    public var openWindow: Duration
    /// Permission and busy errors are retried this long only (udev applies rules a moment after
    /// the event; a real permission problem should be reported quickly).
    public var permissionGrace: Duration
    /// How often to rescan while waiting without events (a missed or early add event).
    public var rescanInterval: Duration
    /// First pause after an open found no device on the port (doubling up to `maxListRetry`):
    /// libusb's list lags udev's add by tens of milliseconds at most, and the device's first
    /// request should follow libusb's own add within a few (a fixed 5…200 ms backoff cost ~35 ms).
    public var listRetry: Duration
    public var maxListRetry: Duration

    public init(
        firstRetry: Duration = .milliseconds(5), maxRetryInterval: Duration = .milliseconds(200),
        openWindow: Duration = .seconds(3), permissionGrace: Duration = .seconds(2),
        rescanInterval: Duration = .seconds(1), listRetry: Duration = .milliseconds(1),
        maxListRetry: Duration = .milliseconds(4)
    ) {
        self.firstRetry = firstRetry
        self.maxRetryInterval = maxRetryInterval
        self.openWindow = openWindow
        self.permissionGrace = permissionGrace
        self.rescanInterval = rescanInterval
        self.listRetry = listRetry
        self.maxListRetry = maxListRetry
    }
}

/// What a lease saw while it waited, opened or followed its board: the flasher's evidence.
public enum TrackingObservation: Sendable, Hashable {
    /// A hot-plug event (any device).
    case hotplug(HotplugEvent)
    /// An open attempt failed; the lease tries again (attempt counts from 1).
    case openFailed(USBTransferError, port: PortPath, attempt: Int)
    /// A board of a known family appeared on a port that is not this lease's while it waited.
    case otherPort(USBDeviceIdentity)
    /// The board came back on another port with its serial; the lease follows it there.
    case followed(USBDeviceIdentity, from: PortPath)
    /// Still waiting; `remaining` until the deadline (about once a second).
    case waiting(remaining: Duration)
    /// A rescan found the board back without its add event reaching this lease.
    case foundByRescan(USBDeviceIdentity)
}

/// Why a lease could not deliver its board.
public enum TrackingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Nothing matching appeared before the deadline.
    case noBoard(waited: Duration)
    /// `.only`: several boards match.
    case severalBoards([USBDeviceIdentity])
    /// The board on the port is held by another lease (another flash in this process).
    case leasedElsewhere(PortPath)
    /// Opening kept failing until the deadline (or failed for a reason retrying cannot fix).
    case openFailed(USBTransferError)
    /// `.only`: the only DFU devices present are of another family (an MCU bootloader …).
    case otherFamily(USBDeviceIdentity, BoardClass)

    public var description: String {
        switch self {
        case .noBoard(let waited): "no board appeared within \(Int(waited.inSeconds.rounded())) s"
        case .severalBoards(let boards): "\(boards.count) boards match"
        case .leasedElsewhere(let port): "the board on port \(port) is being flashed by another job"
        case .openFailed(let error): "cannot open the board: \(error)"
        case .otherFamily(let identity, let kind):
            "the DFU device on \(identity.port) is an \(kind.displayName): \(kind.refusal ?? "not supported")"
        }
    }
}

/// An opened board: the DFU device and what it is.
public struct OpenedBoard: Sendable {
    public var device: DFUDevice
    public var kind: BoardClass
    /// Open attempts it took (1 = first try).
    public var attempts: Int
}
