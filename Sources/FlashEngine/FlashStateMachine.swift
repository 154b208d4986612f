public import BoardTracking
public import DFU
public import FlashLayout

/// What the engine knows about the board it is talking to, as read right after opening it.
public struct BoardSnapshot: Sendable, Hashable {
    /// Stage from the product string (before GetPhase confirms it).
    public var stage: BoardStage
    /// Phase IDs the board offers an alternate setting for.
    public var phases: Set<UInt8>

    public init(stage: BoardStage, phases: Set<UInt8>) {
        self.stage = stage
        self.phases = phases
    }
}

/// The flashing protocol as a pure state machine (NIO style): one `mutating func` per input
/// event, each returning the next action for the driver to perform. It knows no clock and does
/// no I/O, so every transition is testable in a table. It follows GetPhase, never a fixed order:
///
/// - GetPhase `0x00` with the detach flag → DFU_DETACH and wait for the next enumeration, with a
///   timeout that depends on who detached (ROM → TF-A, TF-A → TF-A, TF-A → U-Boot, U-Boot 1 → 2);
/// - `0x00` without it → send the layout (ST TF-A v2.4, U-Boot enumeration 1);
/// - `0x01…0xF0` → send that phase's file (boot stages from `none` lines, partitions by Id);
/// - `0xFE` → END: check every selected partition was sent, DETACH, success;
/// - `0xFF` → the board's error message, verbatim.
public struct FlashStateMachine: Sendable {
    /// What the driver must do next.
    public enum Action: Sendable, Hashable {
        /// Read GetPhase from the board.
        case readPhase
        /// Send the file of `phase` (0x00: the layout payload) to its alternate.
        case send(phase: UInt8, deviceMayLeave: Bool)
        /// DFU_DETACH, then wait up to `timeout` for the board to enumerate again.
        case detachAndAwait(expecting: BoardStage, timeout: Duration)
        /// DFU_DETACH at END; then report success.
        case detachAtEnd
        /// Stop with this failure.
        case fail(FlashFailure.Reason)
        /// Everything was sent and the board said END.
        case succeed
        /// Fast path: send the hand-off script instead of the layout (phase 0x00 of U-Boot's
        /// first enumeration).
        case sendScript
        /// Fast path: the board is U-Boot's fastboot gadget; run the fastboot session.
        case runFastboot
        /// Wait up to `timeout` for the board to enumerate as `expecting` (no DETACH: the board
        /// was told to leave otherwise, e.g. fastboot `continue`).
        case awaitBoard(expecting: BoardStage, timeout: Duration)
    }

    /// Where the fast-path hand-off stands.
    public enum HandOff: Sendable, Hashable {
        /// DFU only (`--transport dfu`, or a layout the fast path cannot take).
        case off
        /// The script goes at U-Boot's first phase 0x00.
        case pending
        case scriptSent
        /// DETACH sent after the script's END; waiting for 0483:0afb.
        case awaitingFastboot
        case runningFastboot
        /// stm32prog came back instead of fastboot: the run goes on over DFU.
        case fellBack
    }

    private enum State: Sendable {
        case connected
        case awaitingPhase
        case sending(UInt8)
        case awaitingBoard(expecting: BoardStage)
        case ending
        case fastboot
        case finished
    }

    private var state: State = .connected
    /// The stage answering now, as confirmed by GetPhase.
    public private(set) var stage: BoardStage = .unknown
    private var offeredPhases: Set<UInt8> = []
    /// Phases with data to send: boot stages (`none` lines with a file), the layout, partitions.
    private let available: Set<UInt8>
    /// Partitions U-Boot must ask for before END counts as success.
    private let required: Set<UInt8>
    /// Phases sent, in order.
    public private(set) var sent: [UInt8] = []
    /// Partitions a resumed run found already on the board (checked by readback), not sent.
    public private(set) var alreadyOnBoard: Set<UInt8> = []
    /// The phase sent last in the current stage (a board asking for it again did not take it).
    private var lastSentInStage: UInt8?
    private let timeouts: TransitionTimeouts
    public private(set) var handOff: HandOff
    /// A device with the ROM's product string came back where TF-A was expected: only GetPhase
    /// tells an ST TF-A that reuses the ROM's string (MP13/MP25) from the ROM restarting.
    private var romLookingAfterDetach = false

    /// - Parameters:
    ///   - plan: the layout's plan (what exists to send, what must be sent).
    ///   - timeouts: per-transition reconnect timeouts.
    ///   - handOff: try the fastboot hand-off at U-Boot's first phase 0x00.
    public init(plan: PartitionPlan, timeouts: TransitionTimeouts = .init(), handOff: Bool = false) {
        self.handOff = handOff ? .pending : .off
        var available: Set<UInt8> = [0x00]
        for stage in plan.bootStages where stage.file != nil { available.insert(stage.line.id) }
        for id in plan.requestOrder where plan.files[id] != nil { available.insert(id) }
        self.available = available
        required = Set(plan.requestOrder)
        self.timeouts = timeouts
    }

    /// The board is open (first time or after a re-enumeration).
    public mutating func boardOpened(_ board: BoardSnapshot) -> Action {
        offeredPhases = board.phases
        stage = board.stage
        lastSentInStage = nil
        if case .awaitingBoard = state, handOff == .awaitingFastboot {
            switch board.stage {
            case .fastboot:
                handOff = .runningFastboot
                state = .fastboot
                return .runFastboot
            case .uboot:
                // `fastboot usb 0; stm32prog usb 0` without fastboot: enumeration 1 again, go on over DFU.
                handOff = .fellBack
                state = .awaitingPhase
                return .readPhase
            default:
                break
            }
        }
        if case .awaitingBoard = state {
            // The engine never resets the board, so the ROM coming back after a DETACH means
            // something else did (a host port reset, an error path, a brown-out), or the FSBL
            // did not start.
            if board.stage == .rom {
                guard case .awaitingBoard(.tfa) = state else {
                    state = .finished
                    return .fail(.unexpectedIdentity(.rom))
                }
                romLookingAfterDetach = true
            }
            if board.stage == .fastboot || board.stage == .ubootPlainDFU || board.stage == .unknown {
                state = .finished
                return .fail(.unexpectedIdentity(board.stage))
            }
        }
        state = .awaitingPhase
        return .readPhase
    }

    /// GetPhase answered.
    public mutating func phaseRead(_ reply: GetPhaseReply) -> Action {
        guard case .awaitingPhase = state else { preconditionFailure("GetPhase read in state \(state)") }
        confirmStage(reply)
        if romLookingAfterDetach {
            romLookingAfterDetach = false
            // TF-A answers 0x02/0x03 (or 0x00 on ST's v2.4); the ROM asks for the FSBL again.
            if stage == .rom {
                state = .finished
                return .fail(.unexpectedIdentity(.rom))
            }
        }
        switch reply.phase {
        case 0xFF:
            state = .finished
            if handOff == .scriptSent { return .fail(.scriptRejected(reply.message ?? "Unspecified")) }
            return .fail(.boardReportedError(reply.message ?? "Unspecified"))
        case 0xFE where handOff == .scriptSent:
            // "U-Boot script received": END; the script runs at the DETACH.
            handOff = .awaitingFastboot
            state = .awaitingBoard(expecting: .fastboot)
            return .detachAndAwait(expecting: .fastboot, timeout: timeouts.ubootReenumeration)
        case 0xFE:
            let missing = required.subtracting(sent).subtracting(alreadyOnBoard).sorted()
            guard missing.isEmpty else {
                state = .finished
                return .fail(.incomplete(missing))
            }
            state = .ending
            return .detachAtEnd
        case 0x00 where reply.needsDetach:
            let expecting: BoardStage
            let timeout: Duration
            switch stage {
            case .rom:
                (expecting, timeout) = (.tfa, timeouts.romToTFA)
            case .tfa where lastSentInStage == 0x02:
                (expecting, timeout) = (.tfa, timeouts.tfaReconnect)
            case .tfa:
                (expecting, timeout) = (.uboot, timeouts.tfaToUBoot)
            default:
                (expecting, timeout) = (.uboot, timeouts.ubootReenumeration)
            }
            state = .awaitingBoard(expecting: expecting)
            return .detachAndAwait(expecting: expecting, timeout: timeout)
        default:
            let phase = reply.phase
            if lastSentInStage == phase {
                state = .finished
                return .fail(.phaseRepeated(phase))
            }
            guard available.contains(phase) else {
                state = .finished
                return .fail(.phaseWithoutFile(phase))
            }
            guard offeredPhases.contains(phase) else {
                state = .finished
                return .fail(.missingAlternate(phase))
            }
            state = .sending(phase)
            if phase == 0x00, stage == .uboot, !reply.needsDetach, handOff == .pending {
                handOff = .scriptSent
                return .sendScript
            }
            // The MP15 ROM starts TF-A on manifestation and may not answer the last GETSTATUS.
            return .send(phase: phase, deviceMayLeave: stage == .rom && phase == 0x01)
        }
    }

    /// The phase's data and its zero-length DNLOAD were accepted.
    public mutating func phaseSent() -> Action {
        guard case .sending(let phase) = state else { preconditionFailure("phaseSent in state \(state)") }
        sent.append(phase)
        lastSentInStage = phase
        state = .awaitingPhase
        return .readPhase
    }

    /// A resumed run found these partitions' content on the board already: END without them
    /// sent again is complete.
    public mutating func partitionsAlreadyOnBoard(_ ids: [UInt8]) {
        alreadyOnBoard.formUnion(ids)
    }

    /// The DETACH at END was sent.
    public mutating func endDetached() -> Action {
        guard case .ending = state else { preconditionFailure("endDetached in state \(state)") }
        state = .finished
        return .succeed
    }

    /// The fastboot session flashed `flashed` (line Ids) and rebooted the board.
    public mutating func fastbootFinished(flashed: [UInt8]) -> Action {
        guard case .fastboot = state else { preconditionFailure("fastbootFinished in state \(state)") }
        sent += flashed
        let missing = required.subtracting(sent).sorted()
        state = .finished
        return missing.isEmpty ? .succeed : .fail(.incomplete(missing))
    }

    /// `--transport auto`: fastboot cannot flash this layout on this board (checked before any
    /// write) and was told `continue`; the script's `stm32prog usb 0` brings DFU back.
    public mutating func fastbootDeclined() -> Action {
        guard case .fastboot = state else { preconditionFailure("fastbootDeclined in state \(state)") }
        handOff = .fellBack
        state = .awaitingBoard(expecting: .uboot)
        return .awaitBoard(expecting: .uboot, timeout: timeouts.ubootReenumeration)
    }

    /// Nothing came back within the transition's timeout.
    public mutating func reconnectTimedOut(after waited: Duration) -> Action {
        guard case .awaitingBoard = state else { preconditionFailure("reconnectTimedOut in state \(state)") }
        state = .finished
        if handOff == .awaitingFastboot { return .fail(.noFastboot(waited: waited)) }
        return .fail(.reconnectTimeout(waited: waited))
    }

    /// The stage the board is waited for, if a re-enumeration is pending.
    public var expectedStage: BoardStage? {
        if case .awaitingBoard(let expecting) = state { return expecting }
        return nil
    }

    /// GetPhase confirms (or corrects) the stage the product string suggested: the MP15 ROM hands
    /// over to TF-A inside one USB session, and ST's old TF-A reuses the ROM's product string.
    private mutating func confirmStage(_ reply: GetPhaseReply) {
        guard stage == .rom else { return }
        if reply.phase == 0x02 || reply.phase == 0x03 || (reply.phase == 0x00 && !reply.needsDetach) {
            stage = .tfa
        } else if reply.phase == 0x00, let last = lastSentInStage, last == 0x02 || last == 0x03 {
            stage = .tfa
        }
    }
}
