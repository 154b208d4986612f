import FlashEngine
import USBModel

/// Facts read off a failure's timeline once, so each rule of the diagnosis states its condition
/// plainly.
struct TimelineFacts {
    let timeline: [TimelineEntry]
    /// The board's port: from the last time we opened it, else from any entry with a stage.
    let boardPort: PortPath?
    /// Index of the last DFU_DETACH we sent.
    let lastDetachIndex: Int?
    /// The stage we detached from last.
    let detachedStage: BoardStage?
    /// Devices that appeared after the last detach.
    let addedAfterDetach: [TimelineEntry]
    /// DFU devices seen on other ports (any time, and after the last detach).
    let otherPortEntries: [TimelineEntry]
    let otherPortAfterDetach: [TimelineEntry]
    /// A GetPhase reply marked as an error (`FF …`) came before the last detach.
    let errorPhaseBeforeDetach: TimelineEntry?
    /// The board was seen on a full-speed link.
    let fullSpeedEntry: TimelineEntry?

    init(_ failure: FlashFailure) {
        let entries = failure.timeline
        let board =
            entries.last(where: { $0.kind == .opened && $0.device != nil })?.device?.port
            ?? entries.last(where: { $0.stage != nil && $0.kind != .otherPort && $0.device != nil })?.device?.port
        let detachIndex = entries.lastIndex { $0.kind == .detachSent }
        let afterDetach = detachIndex.map { Array(entries[($0 + 1)...]) } ?? []
        let beforeDetach = detachIndex.map { Array(entries[..<$0]) } ?? entries
        let isOtherPort: (TimelineEntry) -> Bool = { entry in
            entry.kind == .otherPort
                || (entry.kind == .added && board != nil && entry.device != nil && entry.device?.port != board)
        }
        timeline = entries
        boardPort = board
        lastDetachIndex = detachIndex
        detachedStage = detachIndex.flatMap { entries[$0].stage } ?? (detachIndex != nil ? failure.stage : nil)
        addedAfterDetach = afterDetach.filter { $0.kind == .added }
        otherPortEntries = entries.filter(isOtherPort)
        otherPortAfterDetach = afterDetach.filter(isOtherPort)
        errorPhaseBeforeDetach = beforeDetach.last { $0.kind == .phase && TimelineFacts.isErrorReply($0.detail) }
        fullSpeedEntry = entries.first { entry in
            entry.kind != .otherPort && entry.device?.speed == .full && (board == nil || entry.device?.port == board)
        }
    }

    /// The engine's decoded GetPhase reply for an error starts with `FF` (or `0xFF`). Only the
    /// start counts: a normal reply carries addresses such as `0xFFFFFFFF` further on.
    static func isErrorReply(_ detail: String?) -> Bool {
        guard let detail else { return false }
        let upper = detail.uppercased()
        return upper.hasPrefix("FF") || upper.hasPrefix("0XFF ")
    }

    /// Whether a data transfer to this stage had completed (`sendDone`) before the failure.
    func sentData(to stage: BoardStage) -> Bool {
        timeline.contains { $0.kind == .sendDone && $0.stage == stage }
    }

    /// The last entries, formatted for the evidence list.
    func recent(_ count: Int) -> [String] {
        timeline.suffix(count).map(TimelineFacts.describe)
    }

    static func describe(_ entry: TimelineEntry) -> String {
        var text = "t=" + seconds(entry.time) + " s " + entry.kind.rawValue
        if let stage = entry.stage { text += " [" + stage.displayName + "]" }
        if let device = entry.device {
            text += " " + device.port.description + " " + device.vendorProduct
            if let product = device.product { text += " \"" + product + "\"" }
            if device.speed != .high { text += " (" + device.speed.sysfsMbps + " Mbit/s)" }
        }
        if let detail = entry.detail { text += ": " + detail }
        return text
    }

    /// `12.3` style, one decimal.
    static func seconds(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return String(tenths / 10) + "." + String(abs(tenths % 10))
    }
}
