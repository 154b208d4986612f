import CUMockdev
import Dispatch
import Glibc
import Timekeeping

/// Holds back a USBDEVFS_REAPURBNDELAY that would answer EAGAIN, as real usbfs effectively does.
///
/// Why: umockdev's USB device nodes are regular files, so `poll()` on them is always ready and
/// libusb's event handling never sleeps: it reaps every open descriptor in turn, gets EAGAIN, polls
/// again, thousands of times a second (gotcha 10). On a real usbfs node `poll()` blocks until a URB
/// completes. That spin costs the client and the emulator CPU that real hardware never costs, and
/// with several boards it delays each board's completions behind the others' round trips.
///
/// So a reap that finds nothing for its descriptor is parked (left unanswered, which keeps the
/// client's thread asleep in its ioctl) while nothing anywhere is ready to reap, and answered when
/// that changes: with its URB if one is ready for it, otherwise with EAGAIN (libusb then goes on to
/// the descriptor that has one). A parked reap is answered at the latest `cap` after it arrived, so
/// libusb's own timeouts, event pipe and closing handles stay responsive.
///
/// It answers at once (never parks) when:
/// - a URB anywhere is ready and not yet reaped (libusb must reach that descriptor);
/// - its descriptor has no URB in flight: its owner may submit on it next, and the preload sends
///   only one request at a time per descriptor, so a parked reap would hold that SUBMIT back;
/// - a URB was handed over less than `cap` ago on a descriptor that has nothing in flight since and
///   no new SUBMIT: libusb wakes the thread waiting for that transfer only when its event pass
///   ends, so the rest of the pass must not sleep.
///
/// `@unchecked Sendable`: all state is touched with the host's lock held (ioctls on umockdev's
/// worker thread, the timer on `queue`). Completing an ioctl from the timer's thread is allowed
/// (umockdev's `complete` is thread-safe).
final class ReapParking: @unchecked Sendable {
    /// The longest a reap stays parked.
    static let cap: Duration = .milliseconds(2)

    let enabled: Bool
    private let clock: any FlashClock
    private let trace: Bool
    private var parked: [Parked] = []
    /// Every connection's URB queues, to see what is ready or due anywhere (dead ones drop out).
    private var connections: [WeakConnection] = []
    private let queue = DispatchQueue(label: "stm32mp-board-emulator.reaps")
    private let timer: any DispatchSourceTimer
    private var stopped = false
    /// When the timer fires next (nil: not armed). Re-arming wakes Dispatch's manager thread, so
    /// it is only moved earlier; an early firing just reconsiders.
    private var armedFor: Duration?
    /// Re-entrancy: answering a reap can run device code that reconsiders again.
    private var reconsidering = false
    private var reconsiderAgain = false
    /// Reaps parked so far (for `--stats`).
    private(set) var parkedCount = 0

    private struct Parked {
        let call: IoctlCall
        let urbs: ClientURBs
        let deadline: Duration
    }

    private struct WeakConnection {
        weak var urbs: ClientURBs?
    }

    /// `lock` is the host's.
    init(clock: any FlashClock, lock: Lock, enabled: Bool, trace: Bool) {
        self.clock = clock
        self.trace = trace
        self.enabled = enabled
        timer = DispatchSource.makeTimerSource(queue: queue)
        timer.setEventHandler { [unowned self] in
            lock.withLock {
                armedFor = nil
                reconsider()
            }
        }
        timer.schedule(deadline: .distantFuture)
        timer.activate()
    }

    /// A new client connection (lock held).
    func register(_ urbs: ClientURBs) {
        connections.removeAll { $0.urbs == nil }
        connections.append(WeakConnection(urbs: urbs))
    }

    /// Parks `call`, a REAPURBNDELAY that found nothing for `urbs`, if it may wait; false: answer
    /// it now (lock held).
    func park(_ call: IoctlCall, _ urbs: ClientURBs) -> Bool {
        let now = clock.now
        guard mayWait(urbs, now: now) else { return false }
        // umockdev drops its reference to the client when the handler returns unanswered.
        g_object_ref(UnsafeMutableRawPointer(call.client))
        parked.append(Parked(call: call, urbs: urbs, deadline: now + Self.cap))
        parkedCount += 1
        if trace { printError("[emulator \(formatSeconds(now))] \(urbs.device.location.devnode) REAPURBNDELAY parked") }
        rearm(now: now)
        return true
    }

    /// Answers the parked reaps that no longer should wait, and re-arms the timer for the others
    /// (lock held). Called after every other request and transition, and by the timer.
    func reconsider() {
        guard !parked.isEmpty else { return }
        if reconsidering {
            reconsiderAgain = true
            return
        }
        reconsidering = true
        defer { reconsidering = false }
        repeat {
            reconsiderAgain = false
            let now = clock.now
            var index = 0
            while index < parked.count {
                let entry = parked[index]
                let device = entry.urbs.device
                if !device.connected {
                    parked.remove(at: index)
                    device.reapAfterDisconnect(entry.call, entry.urbs)
                    release(entry)
                } else if device.handOver(entry.call, entry.urbs) {
                    parked.remove(at: index)
                    release(entry)
                } else if stopped || now >= entry.deadline || !mayWait(entry.urbs, now: now) {
                    parked.remove(at: index)
                    entry.call.fail(EAGAIN)
                    release(entry)
                } else {
                    index += 1
                }
            }
        } while reconsiderAgain && !parked.isEmpty
        rearm(now: clock.now)
    }

    /// Answers every parked reap and parks no more (lock held; the emulator is stopping).
    func stop() {
        stopped = true
        reconsider()
        timer.cancel()
    }

    private func release(_ entry: Parked) { g_object_unref(UnsafeMutableRawPointer(entry.call.client)) }

    private func mayWait(_ urbs: ClientURBs, now: Duration) -> Bool {
        guard enabled, !stopped, !urbs.inFlight.isEmpty else { return false }
        for connection in connections {
            guard let other = connection.urbs else { continue }
            other.device.answerWaitingIns(other)
            if other.hasReady(at: now) { return false }
            if let delivered = other.deliveredAt, other.inFlight.isEmpty, now - delivered < Self.cap { return false }
        }
        return true
    }

    /// The timer fires at the earliest parked deadline or URB completion anywhere.
    private func rearm(now: Duration) {
        guard let deadline = parked.map(\.deadline).min() else { return }
        let due = connections.compactMap { $0.urbs?.nextReadyTime() }.filter { $0 > now }.min()
        let target = min(deadline, due ?? deadline)
        if let armedFor, armedFor <= target { return }
        armedFor = target
        timer.schedule(deadline: dispatchTime(in: target - now), leeway: .microseconds(50))
    }
}
