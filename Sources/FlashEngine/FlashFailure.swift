public import BoardTracking
public import DFU
public import ImageSources
import Timekeeping
public import USBModel

/// One thing the host observed during a run, kept in order so that a failure can be explained
/// from evidence (the diagnosis pattern-matches the values) and shown to the user (rendered to
/// text only for output).
public struct TimelineEntry: Sendable, Hashable, CustomStringConvertible {
    /// Seconds since the run started.
    public var time: Double
    public var event: TimelineEvent

    public init(time: Double, _ event: TimelineEvent) {
        self.time = time
        self.event = event
    }

    /// `t=12.3 s opened [TF-A] 1-1 0483:df11 "DFU @Device ID …": …`, the form every text output uses.
    public var description: String {
        var text = "t=" + Self.seconds(time) + " s " + event.label
        if let stage = event.stage { text += " [" + stage.displayName + "]" }
        if let device = event.device {
            text += " " + device.port.description + " " + device.vendorProduct
            if let product = device.product { text += " \"" + product + "\"" }
            if device.speed != .high { text += " (" + device.speed.sysfsMbps + " Mbit/s)" }
        }
        if let detail = event.detail { text += ": " + detail }
        return text
    }

    /// `12.3` style, one decimal.
    static func seconds(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return String(tenths / 10) + "." + String(abs(tenths % 10))
    }
}

/// What the engine and its board lease observed, as values.
public enum TimelineEvent: Sendable, Hashable {
    /// A device appeared or disappeared (udev add/remove, virtual attach/detach).
    case hotplug(HotplugEvent.Action, USBDeviceIdentity)
    /// We opened the board and read its identity and alternates (`attempts` > 1: after retries).
    case opened(USBDeviceIdentity, stage: BoardStage, alternates: [String], attempts: Int)
    /// An open attempt failed; the lease retries until its deadline.
    case openFailed(USBTransferError, port: PortPath, attempt: Int)
    /// GetPhase's answer, read from the stage we believed answered.
    case phase(GetPhaseReply, stage: BoardStage)
    /// GetPhase showed that another stage answers than the product string suggested.
    case stageCorrected(from: BoardStage, to: BoardStage)
    /// We started sending a phase's data.
    case sendStarted(phase: UInt8, name: String, bytes: Int64, stage: BoardStage)
    /// The phase's data and the zero-length DNLOAD were accepted.
    case sendDone(phase: UInt8, bytes: Int64, duration: Duration, stage: BoardStage)
    /// We sent DFU_DETACH; `wait` says for what and how long (nil: the DETACH at END).
    case detachSent(from: BoardStage, wait: ReconnectWait?)
    /// We sent DFU_DETACH after GetPhase had reported an error, so that U-Boot leaves stm32prog:
    /// in its second enumeration with the reset it armed when the error was read (reference §C.7).
    case detachAfterError(from: BoardStage)
    /// A DFU request failed (the USB error kind and the DFU operation are in the value).
    case transferError(DFUError, stage: BoardStage?)
    /// A board of a known family appeared on another port while ours was away.
    case otherPort(USBDeviceIdentity, boardPort: PortPath?)
    /// The board came back on another port with the same serial; we follow it.
    case followed(USBDeviceIdentity, from: PortPath)
    /// A rescan found the board back although its add event never reached us.
    case foundByRescan(USBDeviceIdentity)
    /// After the reconnect wait had run out, the board did enumerate (`after` the DETACH).
    case lateArrival(USBDeviceIdentity, afterDetach: Duration)
    /// After the reconnect wait had run out we listened `listened` longer and nothing came.
    case nothingLate(listened: Duration)
    /// U-Boot's layout line number mapped back to the user's file.
    case layoutLine(payloadLine: Int, sourceLine: Int, path: String)
    /// A written partition was read back (`--verify`): how many bytes, how, and where it first
    /// differed from its Binary (nil: equal).
    case readBack(phase: UInt8, bytesRead: Int64, mode: VerifyMode, firstDifference: Int64?)
    /// The run started on a board in U-Boot enumeration 2 and put it in order: the partitions whose
    /// half-done transaction it closed, and the pending GetPhase error it replaced.
    case recovered(closedTransactions: [UInt8], clearedError: String?)
    /// That run's resume: the partitions skipped (their readback matched) and where it continues.
    case resumed(ResumeReport)
    /// A partition is sent from `offset` (resume), not from its start.
    case restartedAt(phase: UInt8, offset: Int64, stage: BoardStage)
    /// After a cancel in the middle of `phase`: what was done so that the board stays usable
    /// (`error`: that failed, and why).
    case leftUsable(phase: UInt8, stage: BoardStage, cleanup: CancelCleanup, error: String?)
    /// Anything else worth knowing.
    case note(String, stage: BoardStage?)

    /// The short label text outputs show.
    public var label: String {
        switch self {
        case .hotplug(let action, _): action == .add ? "added" : "removed"
        case .opened: "opened"
        case .openFailed: "openRetry"
        case .phase: "phase"
        case .stageCorrected: "note"
        case .sendStarted: "sendStarted"
        case .sendDone: "sendDone"
        case .detachSent, .detachAfterError: "detachSent"
        case .transferError: "transferError"
        case .otherPort: "otherPort"
        case .followed: "followed"
        case .foundByRescan: "rescan"
        case .lateArrival: "lateArrival"
        case .nothingLate: "nothingLate"
        case .layoutLine, .note: "note"
        case .readBack: "readBack"
        case .recovered: "recovered"
        case .resumed: "resume"
        case .restartedAt: "restart"
        case .leftUsable: "cleanup"
        }
    }

    /// The stage the entry is about, when it is about one.
    public var stage: BoardStage? {
        switch self {
        case .opened(_, let stage, _, _), .phase(_, let stage), .sendStarted(_, _, _, let stage),
            .sendDone(_, _, _, let stage), .detachSent(let stage, _), .detachAfterError(let stage):
            stage
        case .stageCorrected(_, let to): to
        case .transferError(_, let stage), .note(_, let stage): stage
        case .readBack, .recovered, .resumed: .uboot
        case .restartedAt(_, _, let stage), .leftUsable(_, let stage, _, _): stage
        default: nil
        }
    }

    /// The device the entry is about, when it is about one.
    public var device: USBDeviceIdentity? {
        switch self {
        case .hotplug(_, let device), .opened(let device, _, _, _), .otherPort(let device, _), .followed(let device, _),
            .foundByRescan(let device), .lateArrival(let device, _):
            device
        default: nil
        }
    }

    /// The rest, as text.
    public var detail: String? {
        switch self {
        case .hotplug: return nil
        case .opened(_, _, let alternates, let attempts):
            return alternates.joined(separator: " ") + (attempts > 1 ? " (after \(attempts) attempts)" : "")
        case .openFailed(let error, let port, let attempt): return "open \(port) attempt \(attempt): \(error)"
        case .phase(let reply, _): return Self.describe(reply)
        case .stageCorrected(let from, let to): return "GetPhase shows \(to.displayName), not \(from.displayName)"
        case .sendStarted(let phase, let name, let bytes, _): return "\(phaseHex(phase)) \(name) \(bytes) bytes"
        case .sendDone(let phase, let bytes, let duration, _):
            return "\(phaseHex(phase)) \(bytes) bytes in \(milliseconds(duration)) ms"
        case .detachSent(_, let wait):
            guard let wait else { return "END" }
            return "expecting \(wait.expecting.displayName) within \(Int(wait.timeout.inSeconds.rounded())) s"
        case .detachAfterError:
            return "after the error, so that U-Boot leaves stm32prog (resetting the board in its second enumeration)"
        case .transferError(let error, _): return "\(error)"
        case .otherPort(let device, let boardPort):
            return
                "a DFU device appeared on \(device.port) while the board on \(boardPort.map(\.description) ?? "?") was away"
        case .followed(let device, let from):
            return "the board came back on port \(device.port) (was \(from), same serial); following it"
        case .foundByRescan: return "the board is back (found by a rescan before its add event reached us)"
        case .lateArrival(_, let after):
            return
                "the board enumerated \(TimelineEntry.seconds(after.inSeconds)) s after the DETACH, after the wait had ended"
        case .nothingLate(let listened):
            return "nothing enumerated in the \(Int(listened.inSeconds.rounded())) s listened after the wait ended"
        case .layoutLine(let payloadLine, let sourceLine, let path):
            return "U-Boot's layout line \(payloadLine) is line \(sourceLine) of \(path)"
        case .note(let text, _): return text
        case .readBack(let phase, let bytes, let mode, let difference):
            return "\(phaseHex(phase)) read back \(bytes) bytes (\(mode.rawValue)): "
                + (difference.map { "differs at byte \($0)" } ?? "equal")
        case .recovered(let closed, let error):
            return [
                closed.isEmpty
                    ? nil : "closed U-Boot's half-done transfer on " + closed.map(phaseHex).joined(separator: ", "),
                error.map { "cleared the error \"\($0)\"" },
            ].compactMap { $0 }.joined(separator: "; ")
        case .resumed(let report):
            return "resume: \(report.skipped.count) partition(s) already on the board"
                + (report.restartPhase.map { ", continuing with \(phaseHex($0)) at byte \(report.restartOffset)" }
                    ?? ", nothing left to send")
        case .restartedAt(let phase, let offset, _): return "\(phaseHex(phase)) continues from byte \(offset)"
        case .leftUsable(let phase, _, let cleanup, let error):
            let what =
                switch cleanup {
                case .closedTransaction:
                    "closed U-Boot's open transaction on phase \(phaseHex(phase)); it restarts from its start"
                case .aborted:
                    "DFU_ABORT: the stage is idle again and answers GetPhase; it keeps what it received of \(phaseHex(phase))"
                }
            return error.map { "could not clean up phase \(phaseHex(phase)): \($0)" } ?? what
        }
    }

    /// `03 address 0xC0000000 offset 0`, `FF error: …`, `FE END`.
    static func describe(_ reply: GetPhaseReply) -> String {
        switch reply.phase {
        case 0xFF: return "FF error: \(reply.message ?? "")"
        case 0xFE: return "FE END"
        default:
            let address = String(reply.address, radix: 16, uppercase: true)
            return "\(phaseHex(reply.phase)) address 0x\(address) offset \(reply.offset)"
                + (reply.needsDetach ? " detach requested" : "")
        }
    }
}

/// What a cancelled run did to leave the board usable (docs/flashing.md, "Interruption and
/// recovery").
public enum CancelCleanup: Sendable, Hashable {
    /// U-Boot: the interrupted partition's transaction closed, the partition current again at offset 0.
    case closedTransaction
    /// ROM or TF-A: DFU_ABORT, back to dfuIDLE (their write position cannot be moved back).
    case aborted
}

/// What a DETACH waits for: the stage expected, how long, and the option that sets how long.
public struct ReconnectWait: Sendable, Hashable {
    public var expecting: BoardStage
    public var timeout: Duration
    /// `--uboot-timeout` …: what a user changes to wait longer.
    public var option: String

    public init(expecting: BoardStage, timeout: Duration, option: String) {
        self.expecting = expecting
        self.timeout = timeout
        self.option = option
    }
}

/// Why a flashing run stopped short. Raw facts only: turning them into a diagnosis code, a cause
/// and next steps is the Diagnostics target's job, which also looks at the host and kernel log.
public struct FlashFailure: Error, Sendable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable {
        /// No STM32MP DFU device showed up within the wait.
        case noBoard(waited: Duration)
        /// The device to flash is not an STM32MP board (an STM32 MCU bootloader …): what it is and why
        /// `flash` does not drive it.
        case unsupportedDevice(USBDeviceIdentity, kind: String, reason: String)
        /// The board is being flashed by another job of this process.
        case boardBusy(PortPath)
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
        /// The user pressed Ctrl-C (or the process got SIGTERM).
        case cancelled
        /// A partition read back differs from what was sent.
        case verifyMismatch(VerifyMismatch)
        /// A Binary changed on disk while it was being flashed.
        case fileChanged(path: String, detail: String)
        /// A host file or folder could not be used (named, with the OS's reason).
        case hostFile(path: String, reason: String)
        /// The board is in U-Boot enumeration 2 with another layout's partitions.
        case otherSession(String)
        /// Fast path: U-Boot took the hand-off script for a FlashLayout and rejected it (no
        /// legacy-image support); its message, verbatim.
        case scriptRejected(String)
        /// Fast path: after the script's DETACH neither fastboot nor stm32prog came back.
        case noFastboot(waited: Duration)
        /// Fast path: U-Boot's fastboot writes another storage than the layout's.
        case storageMismatch(board: String, layout: String)
        /// The board announced another serial than the one it had in the previous stage.
        case serialChanged(expected: String, found: String)
        /// Fast path: the board answered FAIL to a fastboot command.
        case fastbootFailed(command: String, reason: String)
        /// Fast path: the board's partitions do not match the plan (missing, other size, GPT failed).
        case fastbootPartitions(String)
        /// `--transport fastboot` with a layout the fast path cannot flash.
        case fastbootUnsuitable(String)
        /// A Binary's content is unusable: a range does not match its map's checksum, or a
        /// compressed stream is corrupt or truncated. Stopped before the range or partition ended.
        case badImage(ImageSourceError)
        /// The ROM refused the FSBL (dfuERROR, errVERIFY at its manifestation).
        case fsblRejected(FSBLRejection)
        /// The FSBL's STM32 header is for another chip than the board's; nothing was sent.
        case fsblWrongChip(FSBLChipMismatch)
    }

    public var reason: Reason
    /// The stage that was answering when it failed.
    public var stage: BoardStage?
    /// The phase in progress, if any.
    public var phase: UInt8?
    /// Everything observed up to the failure.
    public var timeline: [TimelineEntry]
    /// Where the board was left: the partition being sent and how far (for the line a cancelled
    /// run prints, and for resuming).
    public var position: BoardPosition?

    public init(
        _ reason: Reason, stage: BoardStage? = nil, phase: UInt8? = nil, timeline: [TimelineEntry] = [],
        position: BoardPosition? = nil
    ) {
        self.reason = reason
        self.stage = stage
        self.phase = phase
        self.timeline = timeline
        self.position = position
    }

    public var description: String {
        let at = [stage.map { $0.displayName }, phase.map { "phase " + phaseHex($0) }].compactMap { $0 }
            .joined(separator: ", ")
        let prefix = at.isEmpty ? "" : "[\(at)] "
        switch reason {
        case .noBoard(let waited):
            return prefix + "no STM32MP board in USB DFU mode appeared within \(Int(waited.inSeconds.rounded())) s"
        case .unsupportedDevice(let identity, let kind, let reason):
            return prefix + "the DFU device on \(identity.port) is an \(kind): \(reason)"
        case .boardBusy(let port):
            return prefix + "the board on port \(port) is being flashed by another job of this process"
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
        case .verifyMismatch(let mismatch): return prefix + mismatch.description
        case .fileChanged(let path, let detail):
            return prefix + "\(path) changed while it was being flashed (\(detail))"
        case .hostFile(let path, let reason): return prefix + "\(path): \(reason)"
        case .otherSession(let detail): return prefix + detail
        case .scriptRejected(let message):
            return prefix + "U-Boot rejected the fastboot hand-off script as a FlashLayout: \(message)"
        case .noFastboot(let waited):
            return prefix
                + "neither fastboot nor stm32prog came back within \(Int(waited.inSeconds.rounded())) s of the hand-off"
        case .storageMismatch(let board, let layout):
            return prefix + "U-Boot's fastboot writes \(board) but the layout programs \(layout); nothing was written"
        case .serialChanged(let expected, let found):
            return prefix + "the board's serial changed from \(expected) to \(found)"
        case .fastbootFailed(let command, let reason):
            return prefix + "fastboot \(command) failed: FAIL\(reason)"
        case .fastbootPartitions(let text): return prefix + "fastboot partitions: \(text)"
        case .fastbootUnsuitable(let text): return prefix + "the layout cannot take the fastboot path: \(text)"
        case .badImage(let error): return prefix + "\(error)"
        case .fsblRejected(let rejection):
            return prefix + "the ROM refused the FSBL \(rejection.path): \(rejection.statusText)"
        case .fsblWrongChip(let mismatch): return prefix + mismatch.description
        }
    }
}

/// A readback that differs from what was sent.
public struct VerifyMismatch: Sendable, Hashable, CustomStringConvertible {
    public var phase: UInt8
    public var name: String
    /// First byte (inside the partition) that differs; over fastboot the start of the range
    /// whose CRC differs.
    public var offset: Int64
    /// Digest of the compared bytes as sent, and as read back (lower-case hex).
    public var expectedSHA256: String
    public var actualSHA256: String
    /// `full` or `sampled`.
    public var method: VerifyMode
    /// What the digests are: SHA-256 (DFU readback) or the CRC-32 U-Boot computed (fastboot).
    public var digest: String
    /// Over fastboot: the length of the range whose CRC differs (the first differing byte lies
    /// inside it); nil when `offset` is the first differing byte.
    public var length: Int64?

    public init(
        phase: UInt8, name: String, offset: Int64, expectedSHA256: String, actualSHA256: String, method: VerifyMode,
        digest: String = "SHA-256", length: Int64? = nil
    ) {
        self.phase = phase
        self.name = name
        self.offset = offset
        self.expectedSHA256 = expectedSHA256
        self.actualSHA256 = actualSHA256
        self.method = method
        self.digest = digest
        self.length = length
    }

    /// "at byte N" or "in bytes N..<M".
    public var place: String {
        length.map { "in bytes \(offset)..<\(offset + $0)" } ?? "at byte \(offset)"
    }

    public var description: String {
        "partition \(phaseHex(phase)) \(name) read back differs from what was sent \(place) "
            + "(\(method.rawValue) readback; sent \(digest) \(expectedSHA256), read \(actualSHA256))"
    }
}

/// Where a run left the board.
public struct BoardPosition: Sendable, Hashable {
    public var stage: BoardStage
    /// The partition (or boot phase) being sent, if one was.
    public var phase: UInt8?
    public var name: String?
    /// Bytes of it the board had accepted.
    public var offset: Int64
    public var total: Int64?
    /// The board's USB port, for the command that continues.
    public var port: PortPath?
    /// TF-A's FIP buffer start, when this run saw one other than the default and was not given
    /// it: the command that continues must name it (`--tfa-buffer-base`).
    public var tfaBufferBase: UInt32?

    public init(
        stage: BoardStage, phase: UInt8? = nil, name: String? = nil, offset: Int64 = 0, total: Int64? = nil,
        port: PortPath? = nil, tfaBufferBase: UInt32? = nil
    ) {
        self.tfaBufferBase = tfaBufferBase
        self.stage = stage
        self.phase = phase
        self.name = name
        self.offset = offset
        self.total = total
        self.port = port
    }
}

/// `0x03` style.
public func phaseHex(_ id: UInt8) -> String {
    let s = String(id, radix: 16, uppercase: true)
    return "0x" + (s.count < 2 ? "0" + s : s)
}
