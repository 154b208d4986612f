public import BoardTracking
public import FlashLayout
public import ImageSources
import UBootScript
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
    /// A partition was read back and compared (`flash --verify`).
    case verified(PartitionCheck)
    /// The board was already in U-Boot `stm32prog` enumeration 2: what a rerun found there.
    case resumed(ResumeReport)
    /// A board left mid-transfer by an earlier run was put back in order (reference §4.4).
    case recovered(detail: String)
    /// A line worth showing as it happens (fastboot INFO lines, a fallback to DFU).
    case message(String)
}

/// How a partition's content was checked after it was written.
public enum VerifyMode: String, Sendable, Hashable, CaseIterable, Codable {
    /// Read back everything that was written.
    case full
    /// The first and last MiB and 1 MiB in every 16 MiB (deterministic).
    case sampled
    /// No readback.
    case none
}

/// One partition's integrity record: what was sent and how it was checked.
public struct PartitionCheck: Sendable, Hashable, Codable {
    public enum Method: String, Sendable, Hashable, Codable {
        case full, sampled, none
        /// The alternate cannot be read back (ROM/TF-A phases).
        case notReadable = "not-readable"
        /// Already on the board (checked by readback of its sample) when a rerun resumed.
        case resumedSkip = "skipped"
    }
    public var phase: UInt8
    public var name: String
    /// Bytes of the Binary.
    public var bytes: Int64
    /// SHA-256 of the whole Binary as read while sending it (lower-case hex); nil when skipped.
    public var sha256: String?
    public var method: Method
    /// Bytes read back and compared.
    public var bytesRead: Int64

    public init(phase: UInt8, name: String, bytes: Int64, sha256: String?, method: Method, bytesRead: Int64) {
        self.phase = phase
        self.name = name
        self.bytes = bytes
        self.sha256 = sha256
        self.method = method
        self.bytesRead = bytesRead
    }
}

/// What resuming found on a board already in U-Boot enumeration 2.
public struct ResumeReport: Sendable, Hashable, Codable {
    /// Partitions whose content already matched (by readback of their sample), not sent again.
    public var skipped: [UInt8]
    public var skippedBytes: Int64
    /// The partition the run continues with, and the offset it restarts at (0: from its start).
    public var restartPhase: UInt8?
    public var restartOffset: Int64

    public init(skipped: [UInt8], skippedBytes: Int64, restartPhase: UInt8?, restartOffset: Int64) {
        self.skipped = skipped
        self.skippedBytes = skippedBytes
        self.restartPhase = restartPhase
        self.restartOffset = restartOffset
    }
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
    /// Per partition: bytes, SHA-256 and how it was verified (skipped ones included).
    public var checks: [PartitionCheck] = []
    /// What a resumed run skipped, if it resumed.
    public var resume: ResumeReport?
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
    /// Readback after each partition (`--verify`).
    public var verify: VerifyMode
    /// A board found in U-Boot enumeration 2 continues where it is (`--no-resume` turns it off).
    public var resume: Bool
    /// U-Boot's DFU buffer as the host assumes it (`CONFIG_SYS_DFU_DATA_BUF_SIZE`, 8 MiB by
    /// default, or the `dfu_bufsiz` variable): reads fill it from the medium, so a read from an
    /// offset must stay one buffer away from the partition end, and drains happen at its multiples.
    public var ubootBufferSize: Int64
    /// How partitions reach the storage once U-Boot runs.
    public var transport: FlashTransport
    /// Binaries read through ImageSources (compressed, with a map or holes), by phase Id; the
    /// others are sent as the plain file.
    public var images: [UInt8: PreparedImage] = [:]
    /// How `verify` is done over fastboot (UNCONFIRMED on hardware; docs/flashing.md).
    public var fastbootVerify: FastbootVerifyMethod = .crc32
    /// RAM the board's CRC stage reads into (nil: `CONFIG_FASTBOOT_BUF_ADDR` of ST's defconfig
    /// for the board's family) and the most bytes one read takes.
    public var fastbootVerifyBuffer: UInt64?
    public var fastbootVerifyChunk: Int64 = CRCReadbackStage.defaultChunk
    /// Where TF-A's USB download buffer for the FIP (phase 0x03) starts, for a TF-A built with
    /// another `DWL_BUFFER_BASE` than its default (nil: the default for the board's family). Only a
    /// known start lets a rerun continue a FIP that a cancelled run left in TF-A.
    public var tfaBufferBase: UInt32?

    public init(
        plan: PartitionPlan, selection: BoardSelection = .any, timeouts: TransitionTimeouts = .init(),
        layoutPath: String = "layout", verify: VerifyMode = .sampled, resume: Bool = true,
        ubootBufferSize: Int64 = 8 << 20, transport: FlashTransport = .dfu
    ) {
        self.plan = plan
        self.selection = selection
        self.timeouts = timeouts
        self.layoutPath = layoutPath
        self.verify = verify
        self.resume = resume
        self.ubootBufferSize = ubootBufferSize
        self.transport = transport
    }
}
