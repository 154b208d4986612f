public import DFU
import Timekeeping
public import USBModel

extension BoardLease {
    /// What came back after the fast path's hand-off DETACH (fastboot reference §7 step 5).
    public enum HandOffReturn: Sendable {
        /// U-Boot's fastboot gadget (0483:0afb), opened but not read: it has no DFU function.
        case fastboot(any USBControlTransport)
        /// A DFU stage (U-Boot `stm32prog` again when fastboot did not start).
        case dfu(OpenedBoard)
    }

    /// As `reappearance(of:until:)`, for the one wait where the board may come back without a DFU
    /// function: U-Boot's fastboot is opened as a plain device (retrying for `timing.openWindow`,
    /// like a DFU open), any other stage of the family as a DFU device.
    public func reappearanceAfterHandOff(
        of previous: USBDeviceIdentity, until deadline: Duration, dfuTimeouts: DFUTimeouts = .init(),
        observe: (TrackingObservation) -> Void = { _ in }
    ) async throws -> HandOffReturn? {
        let clock = bus.clock
        while let returned = try await awaitReturn(of: previous, until: deadline, observe: observe) {
            if families.classify(returned).stage == .fastboot {
                let openDeadline = max(deadline, clock.now + timing.openWindow)
                if let transport = try await openPlain(returned.port, until: openDeadline, observe: observe) {
                    return .fastboot(transport)
                }
                continue
            }
            let opened: OpenedBoard
            do {
                opened = try await open(
                    until: max(deadline, clock.now + timing.openWindow), dfuTimeouts: dfuTimeouts, observe: observe)
            } catch TrackingError.openFailed(let error) where error.kind != .access && error.kind != .busy {
                continue
            }
            if Self.isSameDevice(opened.device.identity, previous) {
                await opened.device.transport.close()  // The stage that left, not yet gone.
                continue
            }
            return .dfu(opened)
        }
        return nil
    }

    /// Opens the device on `port` without reading it as DFU, retrying until `deadline`; nil when
    /// it kept failing for a reason a retry may fix (it vanished).
    private func openPlain(
        _ port: PortPath, until deadline: Duration, observe: (TrackingObservation) -> Void
    ) async throws -> (any USBControlTransport)? {
        let clock = bus.clock
        var pause = timing.firstRetry
        var attempt = 0
        while true {
            try Task.checkCancellation()
            attempt += 1
            do {
                return try await bus.open(port: port)
            } catch let error as USBTransferError {
                observe(.openFailed(error, port: port, attempt: attempt))
                if error.kind == .access || error.kind == .busy { throw TrackingError.openFailed(error) }
                guard clock.now + pause <= deadline else { return nil }
                try await clock.sleep(for: pause)
                pause = min(pause * 2, timing.maxRetryInterval)
            }
        }
    }
}
