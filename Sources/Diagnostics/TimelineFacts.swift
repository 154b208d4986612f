import BoardTracking
import DFU
import FlashEngine
import USBModel

/// Facts read off a failure's timeline once, by matching its typed events, so each rule of the
/// diagnosis states its condition plainly.
struct TimelineFacts {
    let timeline: [TimelineEntry]
    /// The board's port: from the last time we opened it, else from any entry with a stage.
    let boardPort: PortPath?
    /// Index of the last DFU_DETACH we sent.
    let lastDetachIndex: Int?
    /// The stage we detached from last, and what that DETACH waited for.
    let detachedStage: BoardStage?
    let lastWait: ReconnectWait?
    /// Devices that appeared after the last detach.
    let addedAfterDetach: [TimelineEntry]
    /// DFU devices seen on other ports (any time, and after the last detach).
    let otherPortEntries: [TimelineEntry]
    let otherPortAfterDetach: [TimelineEntry]
    /// A GetPhase reply that is an error (`FF …`) came before the last detach.
    let errorPhaseBeforeDetach: TimelineEntry?
    /// The board was seen on a full-speed link.
    let fullSpeedEntry: TimelineEntry?
    /// The board came back after an earlier DETACH of this run and was opened: re-enumeration
    /// (and any passthrough of new identities) demonstrably worked.
    let reenumeratedBefore: TimelineEntry?
    /// After the last wait ran out: the board enumerated later, or nothing came in the grace time.
    let lateArrival: (identity: USBDeviceIdentity, afterDetach: Duration)?
    let listenedAfterTimeout: Duration?
    /// The DETACH after U-Boot's error went out (U-Boot leaves stm32prog; in its second
    /// enumeration it resets the board into the ROM).
    let detachedAfterError: Bool

    init(_ failure: FlashFailure) {
        let entries = failure.timeline
        var opened: USBDeviceIdentity?
        var staged: USBDeviceIdentity?
        for entry in entries {
            if case .opened(let device, _, _, _) = entry.event { opened = device }
            if entry.event.stage != nil, let device = entry.event.device { staged = device }
        }
        let board = (opened ?? staged)?.port
        let detachIndex = entries.lastIndex { if case .detachSent = $0.event { true } else { false } }
        let afterDetach = detachIndex.map { Array(entries[($0 + 1)...]) } ?? []
        let beforeDetach = detachIndex.map { Array(entries[..<$0]) } ?? entries
        let isOtherPort: (TimelineEntry) -> Bool = { entry in
            switch entry.event {
            case .otherPort: true
            case .hotplug(.add, let device): board != nil && device.port != board
            default: false
            }
        }
        timeline = entries
        boardPort = board
        lastDetachIndex = detachIndex
        if let detachIndex, case .detachSent(let from, let wait) = entries[detachIndex].event {
            detachedStage = from
            lastWait = wait
        } else {
            detachedStage = nil
            lastWait = nil
        }
        addedAfterDetach = afterDetach.filter { if case .hotplug(.add, _) = $0.event { true } else { false } }
        otherPortEntries = entries.filter(isOtherPort)
        otherPortAfterDetach = afterDetach.filter(isOtherPort)
        errorPhaseBeforeDetach = beforeDetach.last {
            if case .phase(let reply, _) = $0.event { reply.phase == 0xFF } else { false }
        }
        fullSpeedEntry = entries.first { entry in
            if case .otherPort = entry.event { return false }
            guard let device = entry.event.device else { return false }
            return device.speed == .full && (board == nil || device.port == board)
        }
        var sawDetach = false
        var reopened: TimelineEntry?
        for entry in beforeDetach {
            switch entry.event {
            case .detachSent: sawDetach = true
            case .opened where sawDetach: reopened = entry
            default: break
            }
        }
        reenumeratedBefore = reopened
        var late: (USBDeviceIdentity, Duration)?
        var listened: Duration?
        for entry in afterDetach {
            if case .lateArrival(let identity, let after) = entry.event { late = (identity, after) }
            if case .nothingLate(let time) = entry.event { listened = time }
        }
        lateArrival = late.map { (identity: $0.0, afterDetach: $0.1) }
        listenedAfterTimeout = listened
        detachedAfterError = entries.contains { if case .detachAfterError = $0.event { true } else { false } }
    }

    /// Whether a data transfer to this stage had completed before the failure.
    func sentData(to stage: BoardStage) -> Bool {
        timeline.contains { if case .sendDone(_, _, _, stage) = $0.event { true } else { false } }
    }

    /// The alternates of the last board opened.
    var lastAlternates: [String]? {
        for entry in timeline.reversed() {
            if case .opened(_, _, let alternates, _) = entry.event { return alternates }
        }
        return nil
    }

    /// The last entries, formatted for the evidence list.
    func recent(_ count: Int) -> [String] {
        timeline.suffix(count).map(\.description)
    }
}
