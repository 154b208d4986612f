public import DFU
import Synchronization
import Timekeeping
public import USBModel

/// One board, held for one job: finds it, opens it (retrying and rescanning until a deadline,
/// because udev can report a device before libusb lists it), and follows it across
/// re-enumerations, same port first, then the same non-zero serial on a port nobody else holds.
/// Never opens a board another lease holds. Used by one task at a time; `release()` when done.
public final class BoardLease: Sendable {
    public let match: BoardMatch
    public let tracker: BoardTracker
    public let timing: LeaseTiming
    let id: Int
    private let events: any HotplugSubscription
    private let held = Mutex<PortPath?>(nil)

    init(tracker: BoardTracker, id: Int, match: BoardMatch, events: any HotplugSubscription, timing: LeaseTiming) {
        self.tracker = tracker
        self.id = id
        self.match = match
        self.events = events
        self.timing = timing
    }

    /// The port this lease holds, once `arrival` found the board.
    public var port: PortPath? { held.withLock { $0 } }

    var bus: any USBBus { tracker.bus }
    var families: BoardFamilies { tracker.families }

    // MARK: Arrival

    /// Waits until the board is present (at most until `deadline` on the bus clock) and holds its
    /// port for this lease.
    /// - Throws: `TrackingError` (no board, several, held elsewhere, another family),
    ///   `CancellationError`, or a bus error from scanning.
    public func arrival(
        until deadline: Duration, observe: (TrackingObservation) -> Void = { _ in }
    ) async throws -> DFUDeviceListing {
        let clock = bus.clock
        let started = clock.now
        var pause = timing.firstRetry
        var recentAdd = false
        while true {
            try Task.checkCancellation()
            if case .port(let wanted) = match, await tracker.isHeld(wanted, byOtherThan: id) {
                throw TrackingError.leasedElsewhere(wanted)
            }
            let listings = try await tracker.scan(for: id)
            let candidates = listings.filter(matches)
            if candidates.count > 1 { throw TrackingError.severalBoards(candidates.map(\.identity)) }
            if let found = candidates.first {
                if await tracker.hold(found.identity.port, for: id) {
                    held.withLock { $0 = found.identity.port }
                    return found
                }
            } else if case .only = match,
                let other = listings.first(where: { families.classify($0).family != .unknown })
            {
                throw TrackingError.otherFamily(other.identity, families.classify(other))
            }
            let remaining = deadline - clock.now
            guard remaining > .zero else { throw TrackingError.noBoard(waited: clock.now - started) }
            observe(.waiting(remaining: remaining))
            // Right after an add event libusb may not list the device yet: rescan soon.
            let wake = recentAdd ? clock.now + pause : clock.now + timing.rescanInterval
            pause = recentAdd ? min(pause * 2, timing.maxRetryInterval) : timing.firstRetry
            recentAdd = false
            if let event = try await events.next(until: min(deadline, wake)) {
                observe(.hotplug(event))
                recentAdd = event.action == .add
            }
        }
    }

    private func matches(_ listing: DFUDeviceListing) -> Bool {
        switch match {
        case .port(let wanted): listing.identity.port == wanted
        case .serial(let wanted): listing.identity.serial == wanted
        case .only(let family): families.classify(listing).family == family
        }
    }

    // MARK: Opening

    /// Opens the DFU function on the held port, retrying (with rescans, since each open looks the
    /// port up again) until `deadline`. Permission and busy errors are retried for
    /// `timing.permissionGrace` only.
    /// - Throws: `TrackingError.openFailed` with the last error, or `CancellationError`.
    public func open(
        until deadline: Duration, dfuTimeouts: DFUTimeouts = .init(), observe: (TrackingObservation) -> Void = { _ in }
    ) async throws -> OpenedBoard {
        guard let port else { throw TrackingError.noBoard(waited: .zero) }
        let clock = bus.clock
        let started = clock.now
        var pause = timing.firstRetry
        var listPause = timing.listRetry
        var attempt = 0
        var lastFailure: USBTransferError.Kind?
        while true {
            try Task.checkCancellation()
            attempt += 1
            let failure: USBTransferError
            switch await openOnce(port, dfuTimeouts: dfuTimeouts) {
            case .success(let device):
                let kind = families.classify(device.identity, alternates: device.alternates.compactMap(\.string))
                return OpenedBoard(device: device, kind: kind, attempts: attempt)
            case .failure(let error):
                failure = error
            }
            // A run of one failure is observed once (the list polls below would fill the
            // timeline); `attempts` of the opened board counts every try.
            if failure.kind != lastFailure { observe(.openFailed(failure, port: port, attempt: attempt)) }
            lastFailure = failure.kind
            let permanent = failure.kind == .access || failure.kind == .busy
            if permanent && clock.now - started >= timing.permissionGrace { throw TrackingError.openFailed(failure) }
            let wait: Duration
            if failure.kind == .notFound {
                // udev told us before libusb lists the device: look at libusb's list again every
                // few milliseconds, so the first request follows libusb's own add closely.
                wait = listPause
                listPause = min(listPause * 2, timing.maxListRetry)
            } else {
                wait = pause
                pause = min(pause * 2, timing.maxRetryInterval)
            }
            if clock.now + wait > deadline { throw TrackingError.openFailed(failure) }
            // Sleep until the retry, or earlier when an event comes (it is kept for the caller's
            // record, and a remove on our port just means the next try will tell).
            let wake = clock.now + wait
            while let event = try await events.next(until: wake) {
                observe(.hotplug(event))
                if event.action == .add && event.device.port == port { break }
            }
        }
    }

    /// One attempt: the port's device, read as a DFU device; the handle is closed on failure.
    private func openOnce(_ port: PortPath, dfuTimeouts: DFUTimeouts) async -> Result<DFUDevice, USBTransferError> {
        let transport: any USBControlTransport
        do {
            transport = try await bus.open(port: port)
        } catch let error as USBTransferError {
            return .failure(error)
        } catch {
            return .failure(USBTransferError(.other, operation: "open", detail: "\(error)"))
        }
        do {
            return .success(try await DFUDevice.open(transport, clock: bus.clock, timeouts: dfuTimeouts))
        } catch let error as DFUError {
            await transport.close()
            return .failure(
                error.transferError ?? USBTransferError(.io, operation: error.operation, detail: "\(error)"))
        } catch {
            await transport.close()
            return .failure(USBTransferError(.other, operation: "open", detail: "\(error)"))
        }
    }

    // MARK: Following

    /// Call right before telling the board to leave (DFU_DETACH): every event this lease has not
    /// read yet happened before the board left, so none of them can be its return. They are read
    /// now (and observed, for the record) instead of being taken for an arrival afterwards: an add
    /// of the stage that is about to leave, heard late, would otherwise open that stage again.
    public func departing(observe: (TrackingObservation) -> Void = { _ in }) async throws {
        while let event = try await events.next(until: bus.clock.now) { observe(.hotplug(event)) }
    }

    /// After the board left (DFU_DETACH): waits until `deadline` for it to enumerate again, on its
    /// port or with `previous`'s non-zero serial on a port nobody holds, and opens it (an open
    /// that races libusb's device list is retried for at least `timing.openWindow` after the add).
    /// Also rescans about once a second, for an add event that never reached this lease.
    /// - Returns: nil when nothing came back in time.
    /// - Throws: `TrackingError.openFailed` for a permission or busy error that persists,
    ///   `CancellationError`.
    public func reappearance(
        of previous: USBDeviceIdentity, until deadline: Duration, dfuTimeouts: DFUTimeouts = .init(),
        observe: (TrackingObservation) -> Void = { _ in }
    ) async throws -> OpenedBoard? {
        let clock = bus.clock
        var trouble: USBTransferError?
        while try await awaitReturn(of: previous, until: deadline, observe: observe) != nil {
            let opened: OpenedBoard
            do {
                opened = try await open(
                    until: max(deadline, clock.now + timing.openWindow), dfuTimeouts: dfuTimeouts, observe: observe)
            } catch TrackingError.openFailed(let error) where error.kind != .access && error.kind != .busy {
                // It vanished again while we opened it, or it answered but not all of it could be
                // read (enumeration trouble): keep waiting.
                trouble = error
                continue
            }
            if Self.isSameDevice(opened.device.identity, previous) {
                // The stage that left, still there for a moment: its return is still to come.
                await opened.device.transport.close()
                continue
            }
            return opened
        }
        // A board that is back but could never be opened did come back: say why it cannot be used.
        if let trouble, try await tracker.scan(for: id).contains(where: { isOurs($0.identity, previous: previous) }) {
            throw TrackingError.openFailed(trouble)
        }
        return nil
    }

    /// `identity` is the very device `previous` was (same port, bus and device number), not a new
    /// enumeration. The kernel numbers every enumeration anew (round robin up to 127), so a board
    /// that comes back always has another number; an event or a listing with the old number is the
    /// stage that left. Number 0 (unknown) proves nothing.
    static func isSameDevice(_ identity: USBDeviceIdentity, _ previous: USBDeviceIdentity) -> Bool {
        identity.deviceAddress != 0 && identity.deviceAddress == previous.deviceAddress
            && identity.busNumber == previous.busNumber && identity.port == previous.port
    }

    /// Waits until `deadline` for the board to enumerate again (an add event on its port or with
    /// its serial, or a rescan that finds it) and holds its port; nil when nothing came back.
    func awaitReturn(
        of previous: USBDeviceIdentity, until deadline: Duration, observe: (TrackingObservation) -> Void
    ) async throws -> USBDeviceIdentity? {
        let clock = bus.clock
        while clock.now < deadline {
            try Task.checkCancellation()
            let returned: USBDeviceIdentity?
            if let event = try await events.next(until: min(deadline, clock.now + timing.rescanInterval)) {
                observe(.hotplug(event))
                guard event.action == .add, !Self.isSameDevice(event.device, previous) else { continue }
                returned = await claimIfOurs(event.device, previous: previous, observe: observe)
            } else {
                if clock.now < deadline { observe(.waiting(remaining: deadline - clock.now)) }
                returned = try await rescan(for: previous, observe: observe)
            }
            if let returned { return returned }
        }
        return nil
    }

    /// After a timeout: listens until `deadline` for the board's return without opening it, so a
    /// diagnosis can say whether waiting longer would have worked. Rescans once at the end.
    /// - Returns: the identity that came back, or nil.
    public func lateArrival(
        of previous: USBDeviceIdentity, until deadline: Duration, observe: (TrackingObservation) -> Void = { _ in }
    ) async throws -> USBDeviceIdentity? {
        while let event = try await events.next(until: deadline) {
            observe(.hotplug(event))
            if event.action == .add, isOurs(event.device, previous: previous) { return event.device }
        }
        return try await tracker.scan(for: id).map(\.identity).first { isOurs($0, previous: previous) }
    }

    /// The device is this board back (not the stage that left): on our port, or with the same
    /// non-zero serial elsewhere.
    private func isOurs(_ identity: USBDeviceIdentity, previous: USBDeviceIdentity) -> Bool {
        guard families.classify(identity).family != .unknown, !Self.isSameDevice(identity, previous) else {
            return false
        }
        return identity.port == port || Self.sameSerial(identity, previous)
    }

    static func sameSerial(_ a: USBDeviceIdentity, _ b: USBDeviceIdentity) -> Bool {
        guard let serial = a.serial, !serial.isEmpty, !serial.allSatisfy({ $0 == "0" }) else { return false }
        return serial == b.serial
    }

    /// Holds the device's port when it is this board (following it to a new port by serial);
    /// reports a board of a known family elsewhere.
    private func claimIfOurs(
        _ identity: USBDeviceIdentity, previous: USBDeviceIdentity, observe: (TrackingObservation) -> Void
    ) async -> USBDeviceIdentity? {
        let known = families.classify(identity).family != .unknown
        guard known else { return nil }
        let current = port
        if identity.port == current { return identity }
        if Self.sameSerial(identity, previous), await tracker.hold(identity.port, for: id, releasing: current) {
            held.withLock { $0 = identity.port }
            if let current { observe(.followed(identity, from: current)) }
            return identity
        }
        if await !tracker.isHeld(identity.port, byOtherThan: id) { observe(.otherPort(identity)) }
        return nil
    }

    /// A rescan for a board whose add event never reached this lease: a new device (another
    /// address) on our port, or our serial on a free port.
    private func rescan(for previous: USBDeviceIdentity, observe: (TrackingObservation) -> Void) async throws
        -> USBDeviceIdentity?
    {
        let listings = try await tracker.scan(for: id)
        guard let back = listings.map(\.identity).first(where: { isOurs($0, previous: previous) }) else { return nil }
        observe(.foundByRescan(back))
        return await claimIfOurs(back, previous: previous, observe: { _ in })
    }

    /// Lets the board go: another lease may take it.
    public func release() async {
        held.withLock { $0 = nil }
        await tracker.release(id)
    }
}
