public import ImageSources
import Timekeeping
public import USBModel

/// One thing the host observed during a run, kept in order so that a failure can be explained
/// from evidence (the diagnosis reads it) and shown to the user.
public struct TimelineEntry: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Hashable, Codable {
        /// A device appeared (udev add / virtual attach).
        case added
        /// A device disappeared.
        case removed
        /// We opened the board and read its identity and alternates.
        case opened
        /// GetPhase answer (detail holds the decoded reply).
        case phase
        /// We started sending a phase's data.
        case sendStarted
        /// The phase's data and the zero-length DNLOAD were accepted.
        case sendDone
        /// We sent DFU_DETACH.
        case detachSent
        /// A USB transfer failed.
        case transferError
        /// A DFU device appeared on a port that is not the board's.
        case otherPort
        /// Anything else worth knowing.
        case note
    }

    /// Seconds since the run started.
    public var time: Double
    public var kind: Kind
    public var stage: BoardStage?
    public var device: USBDeviceIdentity?
    public var detail: String?

    public init(
        time: Double, kind: Kind, stage: BoardStage? = nil, device: USBDeviceIdentity? = nil, detail: String? = nil
    ) {
        self.time = time
        self.kind = kind
        self.stage = stage
        self.device = device
        self.detail = detail
    }
}

/// Why a flashing run stopped short. Raw facts only: turning them into a diagnosis code, a cause
/// and next steps is the Diagnostics target's job, which also looks at the host and kernel log.
public struct FlashFailure: Error, Sendable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable {
        /// No STM32MP DFU device showed up within the wait.
        case noBoard(waited: Duration)
        /// Several boards and no `--port`/`--serial` to choose.
        case severalBoards([USBDeviceIdentity])
        /// Opening the board failed (permissions, busy …).
        case openFailed(USBTransferError)
        /// GetPhase answered 0xFF with this message (U-Boot or TF-A error text, verbatim).
        case boardReportedError(String)
        /// A USB transfer failed during a phase.
        case transferFailed(USBTransferError)
        /// After DETACH (or an expected restart) nothing came back in time.
        case reconnectTimeout(waited: Duration)
        /// Something came back, but not what the protocol says should come next (the ROM after a
        /// DETACH to U-Boot, a different stage, …).
        case unexpectedIdentity(BoardStage)
        /// The board asks for a phase that the layout has no file for.
        case phaseWithoutFile(UInt8)
        /// The board asks for a phase it offers no alternate setting for.
        case missingAlternate(UInt8)
        /// The board asked again for the phase we had just sent: it did not take it.
        case phaseRepeated(UInt8)
        /// The board said END but these selected partitions were never asked for.
        case incomplete([UInt8])
        /// Something violates the protocol (bad GetPhase reply, DFU state machine error …).
        case protocolError(String)
        /// The user pressed Ctrl-C.
        case cancelled
        /// A Binary's content is unusable: a range does not match its map's checksum, or a
        /// compressed stream is corrupt or truncated. Stopped before the range or partition ended.
        case badImage(ImageSourceError)
    }

    public var reason: Reason
    /// The stage that was answering when it failed.
    public var stage: BoardStage?
    /// The phase in progress, if any.
    public var phase: UInt8?
    /// Everything observed up to the failure.
    public var timeline: [TimelineEntry]

    public init(_ reason: Reason, stage: BoardStage? = nil, phase: UInt8? = nil, timeline: [TimelineEntry] = []) {
        self.reason = reason
        self.stage = stage
        self.phase = phase
        self.timeline = timeline
    }

    public var description: String {
        let at = [stage.map { $0.displayName }, phase.map { "phase " + phaseHex($0) }].compactMap { $0 }
            .joined(separator: ", ")
        let prefix = at.isEmpty ? "" : "[\(at)] "
        switch reason {
        case .noBoard(let waited):
            return prefix + "no STM32MP board in USB DFU mode appeared within \(Int(waited.inSeconds.rounded())) s"
        case .severalBoards(let boards):
            return prefix + "\(boards.count) boards are connected; choose one with --port or --serial"
        case .openFailed(let error): return prefix + "cannot open the board: \(error)"
        case .boardReportedError(let message): return prefix + "the board reported: \(message)"
        case .transferFailed(let error): return prefix + "\(error)"
        case .reconnectTimeout(let waited):
            return prefix + "the board did not come back within \(Int(waited.inSeconds.rounded())) s"
        case .unexpectedIdentity(let stage):
            return prefix + "the board came back as \(stage.displayName), which the protocol does not expect here"
        case .phaseWithoutFile(let id):
            return prefix + "the board asks for phase \(phaseHex(id)) but the layout has no file for it"
        case .missingAlternate(let id):
            return prefix + "the board asks for phase \(phaseHex(id)) but offers no alternate setting for it"
        case .phaseRepeated(let id):
            return prefix + "the board asked again for phase \(phaseHex(id)) right after receiving it"
        case .incomplete(let ids):
            return prefix + "the board said END but never asked for " + ids.map(phaseHex).joined(separator: ", ")
        case .protocolError(let text): return prefix + "protocol error: \(text)"
        case .cancelled: return prefix + "cancelled"
        case .badImage(let error): return prefix + "\(error)"
        }
    }
}

/// `0x03` style.
public func phaseHex(_ id: UInt8) -> String {
    let s = String(id, radix: 16, uppercase: true)
    return "0x" + (s.count < 2 ? "0" + s : s)
}
