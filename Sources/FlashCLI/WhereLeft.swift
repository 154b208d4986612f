import BoardTracking
import FlashEngine
import FlashLayout
import Synchronization
import USBModel

/// Follows the engine's events to know where the board is at any moment, for the one line a
/// signalled run prints even when a second signal ends it at once.
final class PositionTracker: Sendable {
    private let position = Mutex(BoardPosition(stage: .unknown))

    func observe(_ event: FlashEvent) {
        position.withLock { position in
            switch event {
            case .board(let identity, let stage):
                position.stage = stage
                position.port = identity.port
            case .stageConfirmed(let stage): position.stage = stage
            case .reenumerated(_, let to, let device, _):
                position.stage = to
                position.port = device.port
            case .phaseStarted(let phase, let name, let bytes, _):
                position.phase = phase
                position.name = name
                position.total = bytes
                position.offset = 0
            case .progress(_, let sent, _): position.offset = sent
            case .phaseFinished:
                position.phase = nil
                position.name = nil
                position.total = nil
                position.offset = 0
            default: break
            }
        }
    }

    var current: BoardPosition { position.withLock { $0 } }
}

/// The sentence that tells where a stopped run left the board and how to continue.
enum WhereLeft {
    static func sentence(_ position: BoardPosition, command: String) -> String {
        var text = "Board left in \(position.stage.displayName)"
        if let port = position.port { text += " on port \(port)" }
        if let phase = position.phase {
            text += ", phase \(phaseHex(phase))" + (position.name.map { " \($0)" } ?? "")
            if let total = position.total {
                text += " at byte \(position.offset) of \(total)"
            }
        }
        return text + ". Continue with: \(command)"
    }

    /// The command that continues: this one again (a board still in U-Boot resumes), pinned to the
    /// board's port when it did not name one, and naming TF-A's FIP buffer when the run found one
    /// other than the default that the command does not give (`--tfa-buffer-base`).
    static func command(arguments: [String], position: BoardPosition) -> String {
        let port = position.port
        var words = arguments
        let givesBase = words.contains { $0 == "--tfa-buffer-base" || $0.hasPrefix("--tfa-buffer-base=") }
        if let base = position.tfaBufferBase, !givesBase {
            words += ["--tfa-buffer-base", "0x" + String(base, radix: 16, uppercase: true)]
        }
        if let first = words.first, let slash = first.lastIndex(of: "/") {
            words[0] = String(first[first.index(after: slash)...])
        }
        let named = words.contains {
            $0 == "--port" || $0.hasPrefix("--port=") || $0 == "--serial" || $0.hasPrefix("--serial=")
        }
        if !named, let port, !words.contains("--simulate") { words += ["--port", port.description] }
        return words.map(quote).joined(separator: " ")
    }

    static func quote(_ word: String) -> String {
        let plain = word.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:,@+".contains($0) }
        guard !plain || word.isEmpty else { return word }
        return "'" + word.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }
}
