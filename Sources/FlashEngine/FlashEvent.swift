public import BoardTracking
public import FlashLayout
public import ImageSources
public import USBModel

/// What the engine reports while it works, for progress display and JSON Lines (docs/json.md).
public enum FlashEvent: Sendable, Hashable {
    /// Waiting for a board: the first one (`expecting` nil; `--wait-timeout`), or the board coming
    /// back after a DETACH. Sent about once a second with the time left.
    case waitingForBoard(expecting: BoardStage?, remaining: Duration)
    /// The board (re)connected and was identified.
    case board(USBDeviceIdentity, stage: BoardStage)
    /// GetPhase corrected the stage the product string suggested.
    case stageConfirmed(BoardStage)
    /// Sending a phase starts.
    case phaseStarted(phase: UInt8, name: String, bytes: Int64, stage: BoardStage)
    /// Bytes of the current phase accepted so far.
    case progress(phase: UInt8, sent: Int64, total: Int64)
    /// A phase was sent and accepted.
    case phaseFinished(PhaseResult)
    /// DFU_DETACH sent; waiting up to `timeout` for `expecting`.
    case detached(from: BoardStage, expecting: BoardStage?, timeout: Duration)
    /// The board came back after a DETACH.
    case reenumerated(from: BoardStage, to: BoardStage, device: USBDeviceIdentity, after: Duration)
    /// A DFU device appeared on another port while ours was gone.
    case otherPort(USBDeviceIdentity)
    /// The board said END.
    case end
}

/// One phase sent.
public struct PhaseResult: Sendable, Hashable, Codable {
    public var phase: UInt8
    public var name: String
    public var stage: BoardStage
    public var bytes: Int64
    public var duration: Duration
    public var controlTransfers: Int

    /// Throughput in MB/s (10⁶ bytes per second); 0 for an instant phase.
    public var megabytesPerSecond: Double {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return seconds > 0 ? Double(bytes) / seconds / 1e6 : 0
    }
}

/// The outcome of a successful run.
public struct FlashSummary: Sendable {
    public var board: USBDeviceIdentity
    public var phases: [PhaseResult]
    public var duration: Duration
    public var controlTransfers: Int
    public var timeline: [TimelineEntry]
    /// The partitions U-Boot asked for and received (Ids), in order.
    public var partitions: [UInt8]
}

/// Which board to flash.
public enum BoardSelection: Sendable, Hashable {
    /// The only STM32MP DFU device present (several: an error listing them).
    case any
    case port(PortPath)
    case serial(String)
}

extension BoardSelection {
    /// The tracker's name for the same choice (`.any`: the only STM32MP board).
    public var match: BoardMatch {
        switch self {
        case .any: .only(.stm32mp)
        case .port(let port): .port(port)
        case .serial(let serial): .serial(serial)
        }
    }
}

/// Everything a run needs besides the bus.
public struct FlashRequest: Sendable {
    public var plan: PartitionPlan
    public var selection: BoardSelection
    public var timeouts: TransitionTimeouts
    /// The layout file's path, to name it when mapping U-Boot's layout line numbers back.
    public var layoutPath: String
    /// Binaries read through ImageSources (compressed, with a map or holes), by phase Id; the
    /// others are sent as the plain file.
    public var images: [UInt8: PreparedImage] = [:]

    public init(
        plan: PartitionPlan, selection: BoardSelection = .any, timeouts: TransitionTimeouts = .init(),
        layoutPath: String = "layout"
    ) {
        self.plan = plan
        self.selection = selection
        self.timeouts = timeouts
        self.layoutPath = layoutPath
    }
}
