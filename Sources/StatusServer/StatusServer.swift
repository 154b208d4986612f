import FoundationEssentials
import Hummingbird
import Logging
package import StationMonitor

/// The station's read-only web side (Hummingbird): `GET /` the live status page, `GET /events`
/// its server-sent events (a snapshot, then each tile change), `GET /status.json` the tiles once,
/// `GET /metrics` Prometheus text. Nothing over HTTP changes the station: every other method or
/// path gets 404/405.
package struct StatusServer: Sendable {
    package let host: String
    package let port: Int
    let status: StationStatus

    package init(host: String, port: Int, status: StationStatus) {
        self.host = host
        self.port = port
        self.status = status
    }

    /// Serves until the calling task is cancelled. `bound` gets the port actually listened on
    /// (useful with port 0).
    package func run(bound: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let router = Router()
        let status = self.status
        router.get("/") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(string: StatusPage.html)))
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: status.metrics.exposition())))
        }
        router.get("/status.json") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: try StatusJSON.snapshot(status))))
        }
        router.get("/events") { _, _ in
            let updates = status.updates()
            return Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
                body: .init { writer in
                    try await writer.write(
                        ByteBuffer(string: "event: snapshot\ndata: \(try StatusJSON.snapshot(status))\n\n"))
                    for await update in updates {
                        let data = try StatusJSON.update(update)
                        try await writer.write(ByteBuffer(string: "event: tile\ndata: \(data)\n\n"))
                    }
                    try await writer.finish(nil)
                })
        }
        // Only critical messages: stopping the station cancels the server, which Hummingbird logs
        // as an error of its child channels; a failure to bind is thrown, not logged.
        var logger = Logger(label: "stm32mp-flash.status-server")
        logger.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "stm32mp-flash"),
            onServerRunning: { channel in bound(channel.localAddress?.port ?? 0) }, logger: logger)
        try await app.run()
    }
}

/// The JSON the page and `/status.json` carry (docs/json.md, "station status").
enum StatusJSON {
    struct Snapshot: Encodable {
        var done: Int
        var failed: Int
        var flashing: Int
        var tiles: [PortTile]
    }

    static func snapshot(_ status: StationStatus) throws -> String {
        let counts = status.counts()
        return try encode(
            Snapshot(done: counts.done, failed: counts.failed, flashing: counts.flashing, tiles: status.snapshot()))
    }

    static func update(_ update: StatusUpdate) throws -> String { try encode(update) }

    private static func encode(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
