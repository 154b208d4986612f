import BoardTracking
package import FlashEngine
import Synchronization
package import USBModel

/// One port of the station as the status page shows it.
package struct PortTile: Sendable, Hashable, Codable {
    package enum State: String, Sendable, Hashable, Codable {
        /// Nothing attached (or the board left).
        case empty
        /// A board is being flashed.
        case flashing
        /// The last attempt ended: done or failed; the board may still be attached.
        case done, failed
    }

    package var port: String
    package var state: State = .empty
    package var serial: String?
    package var stage: String?
    /// The partition being sent (`0x11 rootfs`).
    package var partition: String?
    package var sent: Int64 = 0
    package var total: Int64 = 0
    package var lastResult: String?
    package var lastCode: String?
    package var done = 0
    package var failed = 0

    package init(port: String) { self.port = port }
}

/// One tile's change with the station's counts at that moment (what `/events` sends).
package struct StatusUpdate: Sendable, Hashable, Codable {
    package var done: Int
    package var failed: Int
    package var flashing: Int
    package var tile: PortTile
}

/// What the station is doing, per port: fed by the station (board taken, engine events, result),
/// read by the status page (a snapshot, then each change as it happens) and by `/metrics`.
package final class StationStatus: Sendable {
    private struct State {
        var tiles: [String: PortTile] = [:]
        var subscribers: [Int: AsyncStream<StatusUpdate>.Continuation] = [:]
        var nextSubscriber = 0
        /// Last time a progress change was published per port (nanoseconds), to send at most
        /// ten progress updates a second per board.
        var lastProgress: [String: UInt64] = [:]
    }

    private let state = Mutex(State())
    package let metrics: StationMetrics

    package init(ports: [PortPath] = [], metrics: StationMetrics = StationMetrics()) {
        self.metrics = metrics
        state.withLock { state in
            for port in ports { state.tiles[port.description] = PortTile(port: port.description) }
        }
    }

    /// Every tile, ordered by port.
    package func snapshot() -> [PortTile] {
        state.withLock { $0.tiles.values.sorted { PortOrder.less($0.port, $1.port) } }
    }

    /// Counts over all ports: attempts done, failed, and boards being flashed now.
    package func counts() -> (done: Int, failed: Int, flashing: Int) {
        Self.counts(snapshot())
    }

    private static func counts(_ tiles: some Collection<PortTile>) -> (done: Int, failed: Int, flashing: Int) {
        (
            tiles.reduce(0) { $0 + $1.done }, tiles.reduce(0) { $0 + $1.failed },
            tiles.filter { $0.state == .flashing }.count
        )
    }

    /// Each change of a tile, after the current snapshot; ends when the consumer stops.
    package func updates() -> AsyncStream<StatusUpdate> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: StatusUpdate.self, bufferingPolicy: .bufferingNewest(256))
        let id = state.withLock { state in
            let id = state.nextSubscriber
            state.nextSubscriber += 1
            state.subscribers[id] = continuation
            return id
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    /// A board was taken on `port` for a new attempt.
    package func started(port: PortPath, serial: String?) {
        metrics.started()
        change(port) { tile in
            tile.state = .flashing
            tile.serial = serial
            tile.stage = nil
            tile.partition = nil
            tile.sent = 0
            tile.total = 0
        }
    }

    /// An engine event of the attempt on `port`.
    package func observe(port: PortPath, _ event: FlashEvent, now: UInt64) {
        switch event {
        case .board(let identity, let stage), .reenumerated(_, let stage, let identity, _):
            change(port) { tile in
                tile.stage = stage.rawValue
                if let serial = identity.serial, !serial.isEmpty { tile.serial = serial }
            }
        case .stageConfirmed(let stage):
            change(port) { $0.stage = stage.rawValue }
        case .phaseStarted(let phase, let name, let bytes, let stage):
            change(port) { tile in
                tile.partition = phaseHex(phase) + " " + name
                tile.stage = stage.rawValue
                tile.sent = 0
                tile.total = bytes
            }
        case .progress(_, let sent, let total):
            let publish = state.withLock { state in
                let last = state.lastProgress[port.description] ?? 0
                guard now &- last >= 100_000_000 || sent == total else { return false }
                state.lastProgress[port.description] = now
                return true
            }
            change(port, publish: publish) { tile in
                tile.sent = sent
                tile.total = total
            }
        case .phaseFinished(let result):
            metrics.sent(bytes: result.bytes, port: port.description)
            change(port) { $0.sent = $0.total }
        case .waitingForBoard, .detached, .otherPort, .end, .verified, .resumed, .recovered, .message, .tfaBuffer:
            break
        }
    }

    /// The attempt on `port` ended.
    package func finished(port: PortPath, result: String, code: String?, seconds: Double) {
        metrics.finished(result: result, port: port.description, seconds: seconds)
        change(port) { tile in
            tile.state = result == "done" ? .done : .failed
            tile.lastResult = result
            tile.lastCode = code
            if result == "done" { tile.done += 1 } else { tile.failed += 1 }
        }
    }

    /// The board left `port` (after its attempt, or before one).
    package func left(port: PortPath) {
        change(port) { tile in
            if tile.state == .flashing { return }
            tile.state = .empty
            tile.stage = nil
            tile.partition = nil
        }
    }

    private func change(_ port: PortPath, publish: Bool = true, _ body: (inout PortTile) -> Void) {
        state.withLock { state in
            var tile = state.tiles[port.description] ?? PortTile(port: port.description)
            body(&tile)
            state.tiles[port.description] = tile
            guard publish, !state.subscribers.isEmpty else { return }
            let counts = Self.counts(state.tiles.values)
            let update = StatusUpdate(done: counts.done, failed: counts.failed, flashing: counts.flashing, tile: tile)
            for subscriber in state.subscribers.values { subscriber.yield(update) }
        }
    }
}

/// Port paths in the order of their numbers (`1-1.2` before `1-1.10`).
enum PortOrder {
    static func less(_ a: String, _ b: String) -> Bool {
        func numbers(_ text: String) -> [Int] {
            text.split(whereSeparator: { $0 == "-" || $0 == "." }).map { Int($0) ?? 0 }
        }
        return numbers(a).lexicographicallyPrecedes(numbers(b))
    }
}
