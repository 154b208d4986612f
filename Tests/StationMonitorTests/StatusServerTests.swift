import BoardTracking
import FlashEngine
import Foundation
import StationMonitor
import StatusServer
import Synchronization
import TestSupport
import Testing
import USBModel

/// The status server over real HTTP (curl): metrics in Prometheus text, the tiles as JSON and as
/// server-sent events, and nothing that writes.
@Suite("Status server", .timeLimit(.minutes(10)))
struct StatusServerTests {
    let curl: ExternalTool

    init() throws { curl = try ExternalTool("curl", package: "curl") }

    /// Runs curl without blocking a cooperative thread (the server's handlers need them).
    func fetch(_ arguments: [String]) async throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: curl.executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        return try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { _ in
                continuation.resume(
                    returning: String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
            }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
    }

    /// Runs a server on a free loopback port for `body`.
    func serving(_ status: StationStatus, _ body: (String) async throws -> Void) async throws {
        let bound = Mutex<Int?>(nil)
        let server = StatusServer(host: "127.0.0.1", port: 0, status: status)
        let task = Task { try await server.run(bound: { port in bound.withLock { $0 = port } }) }
        defer { task.cancel() }
        var port: Int?
        for _ in 0..<500 where port == nil {
            try await Task.sleep(for: .milliseconds(10))
            port = bound.withLock { $0 }
        }
        try await body("http://127.0.0.1:\(try #require(port))")
    }

    func port(_ text: String) -> PortPath { PortPath(text)! }

    func identity(_ port: String, serial: String) -> USBDeviceIdentity {
        var identity = USBDeviceIdentity(
            port: PortPath(port)!, busNumber: 1, deviceAddress: 5, vendorID: 0x0483, productID: 0xDF11,
            bcdDevice: 0x0200, speed: .high)
        identity.serial = serial
        identity.product = "DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000"
        return identity
    }

    @Test("metrics count attempts by result and port, bytes, durations and boards in progress")
    func metrics() async throws {
        let status = StationStatus(ports: [port("1-1.1"), port("1-1.2")])
        status.started(port: port("1-1.1"), serial: "A")
        status.started(port: port("1-1.2"), serial: "B")
        let rootfs = try JSONDecoder().decode(
            PhaseResult.self,
            from: Data(
                #"{"phase":17,"name":"rootfs","stage":"uboot","bytes":1048576,"duration":[1,0],"controlTransfers":1024}"#
                    .utf8))
        status.observe(port: port("1-1.1"), .phaseFinished(rootfs), now: 0)
        status.finished(port: port("1-1.1"), result: "done", code: nil, seconds: 21.5)
        try await serving(status) { base in
            let text = try await fetch(["-s", "-i", base + "/metrics"])
            #expect(text.contains("Content-Type: text/plain; version=0.0.4"))
            #expect(text.contains("stm32mp_flash_runs_total{result=\"done\",port=\"1-1.1\"} 1"))
            #expect(text.contains("stm32mp_flash_sent_bytes{port=\"1-1.1\"} 1048576"))
            #expect(text.contains("stm32mp_flash_boards_in_progress 1"))
            #expect(text.contains("stm32mp_flash_run_duration_seconds_bucket{result=\"done\",le=\"30.0\"} 1"))
            #expect(text.contains("stm32mp_flash_run_duration_seconds_bucket{result=\"done\",le=\"20.0\"} 0"))
            #expect(text.contains("stm32mp_flash_run_duration_seconds_count{result=\"done\"} 1"))
        }
    }

    @Test("tiles as JSON and as server-sent events: a snapshot, then each change")
    func tilesAndEvents() async throws {
        let status = StationStatus(ports: [port("1-1.2"), port("1-1.10")])
        try await serving(status) { base in
            let json = try await fetch(["-s", base + "/status.json"])
            let root = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
            let tiles = try #require(root["tiles"] as? [[String: Any]])
            #expect(tiles.map { $0["port"] as? String } == ["1-1.2", "1-1.10"])
            #expect(tiles.allSatisfy { $0["state"] as? String == "empty" })

            // curl reads the event stream into a file; the test acts on what has arrived, never on
            // how long it took (the machine running the tests may be loaded).
            let folder = try TemporaryDirectory()
            let file = folder.file("events")
            #expect(FileManager.default.createFile(atPath: file, contents: nil))
            let reader = Process()
            reader.executableURL = URL(fileURLWithPath: curl.executable)
            reader.arguments = ["-s", "-N", "--max-time", "100", base + "/events"]
            reader.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
            try reader.run()
            defer { reader.terminate() }
            let received = { (try? String(contentsOfFile: file, encoding: .utf8)) ?? "" }
            await waitUntil(timeout: 90) { received().contains("event: snapshot") }
            try #require(received().contains("event: snapshot"), "no snapshot from /events")
            status.started(port: port("1-1.10"), serial: "0029002A4C4250110038344D")
            status.observe(
                port: port("1-1.10"), .board(identity("1-1.10", serial: "0029002A4C4250110038344D"), stage: .rom),
                now: 0)
            status.observe(
                port: port("1-1.10"), .phaseStarted(phase: 0x01, name: "fsbl-boot", bytes: 1000, stage: .rom), now: 0)
            status.observe(port: port("1-1.10"), .progress(phase: 0x01, sent: 500, total: 1000), now: 200_000_000)
            status.finished(port: port("1-1.10"), result: "failed", code: "write-error", seconds: 3)
            await waitUntil(timeout: 90) {
                let text = received()
                return text.contains("write-error") && text.hasSuffix("\n\n")
            }
            let output = received()
            let blocks = output.components(separatedBy: "\n\n").filter { !$0.isEmpty }
            #expect(blocks.first?.hasPrefix("event: snapshot\ndata: {") == true)
            let updates = blocks.dropFirst().compactMap { block -> [String: Any]? in
                guard block.hasPrefix("event: tile\ndata: ") else { return nil }
                return try? JSONSerialization.jsonObject(with: Data(block.dropFirst(18).utf8)) as? [String: Any]
            }
            try #require(updates.count == 5, "\(output)")
            let changed = updates.compactMap { $0["tile"] as? [String: Any] }
            try #require(changed.count == 5, "\(output)")
            #expect(
                changed.map { $0["state"] as? String } == ["flashing", "flashing", "flashing", "flashing", "failed"])
            #expect(changed[2]["partition"] as? String == "0x01 fsbl-boot")
            #expect(changed[3]["sent"] as? Int == 500)
            #expect(changed[4]["lastCode"] as? String == "write-error")
            #expect(updates.last?["failed"] as? Int == 1)
            #expect(updates.first?["flashing"] as? Int == 1)
        }
    }

    @Test("nothing over HTTP writes: other methods and paths are refused")
    func readOnly() async throws {
        let status = StationStatus(ports: [port("1-1.1")])
        try await serving(status) { base in
            for (method, path) in [("POST", "/"), ("PUT", "/metrics"), ("DELETE", "/status.json"), ("GET", "/flash")] {
                let code = try await fetch(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, base + path])
                #expect(["404", "405"].contains(code), "\(method) \(path) → \(code)")
            }
            let page = try await fetch(["-s", base + "/"])
            #expect(page.contains("new EventSource(\"/events\")"))
        }
    }
}
