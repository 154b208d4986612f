import Foundation
import StationRecords
import Synchronization
import TestSupport
import Testing

/// `stm32mp-flash station LAYOUT --simulate`: the built tool plugging virtual boards repeatedly
/// (real time, board timing sped up), checked through its records, logs, signals and the
/// systemd notification socket.
@Suite("The station service", .timeLimit(.minutes(10)))
struct StationCommandTests {
    let tool: ExternalTool
    let examples: String

    init() throws {
        tool = try BuiltProducts.tool("stm32mp-flash")
        examples = try CLIExamples.directory()
    }

    @Test("--boards 3 --runs 2 with one serial on every board: two records per port, each under its own port")
    func recordsPerPort() async throws {
        let directory = try TemporaryDirectory()
        let db = directory.file("records.sqlite")
        let logs = directory.file("logs")
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        let result = try tool.run([
            "station", "\(examples)/mp15-sdcard.tsv", "--simulate", "--boards", "3", "--runs", "2", "--same-serial",
            "--sim-speed", "10", "--sim-dir", directory.file("boards"), "--db", db, "--log-dir", logs,
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let attempts = try await RecordStore(path: db).attempts()
        #expect(attempts.count == 6)
        #expect(attempts.allSatisfy { $0.result == .done })
        for port in ["1-1.1", "1-1.2", "1-1.3"] {
            #expect(attempts.filter { $0.start.port == port }.count == 2, "\(port)")
        }
        // Every board reported the same serial: the records are keyed by port, not by it.
        #expect(Set(attempts.compactMap(\.start.serial)).count == 1)
        // Verified: partitions read back (sampled) after writing; the ROM/TF-A boot stages cannot be.
        for attempt in attempts {
            let byName = Dictionary(attempt.partitions.map { ($0.name, $0.verified) }) { first, _ in first }
            #expect(byName["rootfs"] == true)
            #expect(byName["fsbl-boot"] == false)
        }
        // One log per attempt, named with its port and record id, holding that board's lines only.
        let files = try FileManager.default.contentsOfDirectory(atPath: logs).sorted()
        #expect(files.count == 6)
        for attempt in attempts {
            let name = try #require(files.first { $0.hasSuffix("-\(attempt.start.port)-\(attempt.id).log") })
            let text = try String(contentsOfFile: logs + "/" + name, encoding: .utf8)
            #expect(text.contains("board reports END"))
            let boardLines = text.split(separator: "\n").filter { $0.hasPrefix("[") }
            #expect(!boardLines.isEmpty && boardLines.allSatisfy { $0.hasPrefix("[\(attempt.start.port)]") })
        }
    }

    @Test("once per plug-in: a board back in the ROM during its attempt is not flashed again until replugged")
    func oncePerPlugIn() async throws {
        let directory = try TemporaryDirectory()
        let db = directory.file("records.sqlite")
        // reset-after-detach: the ROM comes back after the DETACH to U-Boot and stays there.
        let result = try tool.run([
            "station", "\(examples)/mp15-sdcard.tsv", "--simulate", "--boards", "2", "--runs", "2", "--sim-speed", "10",
            "--sim-scenario", "reset-after-detach", "--sim-dir", directory.file("boards"), "--db", db,
        ])
        #expect(result.status == 1, "a simulation with failed attempts exits 1: \(result.standardError)")
        let attempts = try await RecordStore(path: db).attempts()
        #expect(attempts.count == 4)
        #expect(attempts.allSatisfy { $0.result == .failed && $0.diagnosisCode == "rom-came-back" })
        #expect(attempts.filter { $0.start.port == "1-1.1" }.count == 2)
        #expect(result.standardError.contains("station: stopped: 0 done, 4 failed"))
    }

    @Test("--port: boards on other ports are left alone")
    func portFilter() async throws {
        let directory = try TemporaryDirectory()
        let db = directory.file("records.sqlite")
        let result = try tool.run([
            "station", "\(examples)/mp13-sdcard.tsv", "--simulate", "--boards", "3", "--runs", "2", "--sim-speed", "10",
            "--port", "1-1.2", "--sim-dir", directory.file("boards"), "--db", db,
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let attempts = try await RecordStore(path: db).attempts()
        #expect(attempts.map(\.start.port) == ["1-1.2", "1-1.2"])
    }

    @Test(
        "SIGHUP reloads a good layout and keeps the old one for a bad one; SIGTERM drains and exits 0; systemd hears it all"
    )
    func signalsAndNotify() async throws {
        let directory = try TemporaryDirectory()
        let db = directory.file("records.sqlite")
        // A copy of an example layout next to its binaries, so that it can be changed.
        let layout = "\(examples)/station-\(UUID().uuidString.prefix(8)).tsv"
        let original = try String(contentsOfFile: "\(examples)/mp15-sdcard.tsv", encoding: .utf8)
        try original.write(toFile: layout, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: layout) }
        let notify = try NotifySocket(path: directory.file("notify.sock"))
        notify.startReading()
        let station = try StationChild(
            tool: tool,
            arguments: [
                "station", layout, "--simulate", "--boards", "2", "--runs", "1000", "--sim-speed", "5", "--sim-dir",
                directory.file("boards"), "--db", db,
            ],
            environment: ["NOTIFY_SOCKET": notify.path], stderrPath: directory.file("station.err"))
        defer { station.kill() }

        #expect(await notify.wait(for: "READY=1"), "no READY=1: \(station.stderr)")
        #expect(await station.wait { $0.contains("✓ done") })
        let before = try FileDigest.sha256(path: layout)

        // A broken layout: the station says why and keeps flashing with the old one.
        try (original + "garbage\tline\n").write(toFile: layout, atomically: true, encoding: .utf8)
        station.signal(SIGHUP)
        #expect(await station.wait { $0.contains("SIGHUP: keeping the previous layout (sha256 \(before))") })
        #expect(await notify.wait(for: "RELOADING=1"))

        // A good, different layout: taken for the attempts that start after it.
        let changed = original + "# reloaded\n"
        try changed.write(toFile: layout, atomically: true, encoding: .utf8)
        let after = try FileDigest.sha256(path: layout)
        station.signal(SIGHUP)
        #expect(await station.wait { $0.contains("SIGHUP: layout reloaded") && $0.contains(after) })
        let reloadedAt = station.stderr.components(separatedBy: "\n").count
        // Wait for two attempts that started after the reload to finish.
        #expect(
            await station.wait {
                $0.components(separatedBy: "\n").dropFirst(reloadedAt).filter { $0.contains("✓ done") }.count >= 3
            })

        station.signal(SIGTERM)
        let status = await station.waitForExit(timeout: 60)
        #expect(status == 0, "\(station.stderr.suffix(3000))")
        #expect(await notify.wait(for: "STOPPING=1"))
        #expect(station.stderr.contains("SIGTERM: taking no more boards"))

        let attempts = try await RecordStore(path: db).attempts()
        #expect(attempts.count >= 4)
        // Drained: every attempt that was running when SIGTERM came finished; none is left open.
        #expect(attempts.allSatisfy { $0.result == .done }, "\(attempts.map(\.result))")
        #expect(attempts.first?.start.layoutSHA256 == before)
        #expect(attempts.last?.start.layoutSHA256 == after)
        #expect(!attempts.contains { $0.start.layoutSHA256 != before && $0.start.layoutSHA256 != after })
    }

    @Test("a NOTIFY_SOCKET receiver that never reads fills its queue: status messages are dropped, the station goes on")
    func notifyReceiverThatNeverReads() async throws {
        let directory = try TemporaryDirectory()
        let notify = try NotifySocket(path: directory.file("notify.sock"))
        let station = try StationChild(
            tool: tool,
            arguments: [
                "station", "\(examples)/mp13-sdcard.tsv", "--simulate", "--boards", "3", "--runs", "4", "--sim-speed",
                "10", "--verify", "none", "--sim-dir", directory.file("boards"), "--db", directory.file("r.sqlite"),
            ],
            environment: ["NOTIFY_SOCKET": notify.path], stderrPath: directory.file("station.err"))
        defer { station.kill() }
        // 12 attempts send about 25 STATUS datagrams: more than the receive queue holds
        // (net.unix.max_dgram_qlen, 10 by default); a blocking send would stop the loop.
        #expect(await station.waitForExit(timeout: 120) == 0, "\(station.stderr.suffix(2000))")
        #expect(station.stderr.contains("station: stopped: 12 done, 0 failed"))
        #expect(notify.messages.first?.hasPrefix("READY=1") == true)
    }

    @Test("bad start: a layout with errors or an unusable --log-dir stops before READY, with the reason")
    func badStart() throws {
        let directory = try TemporaryDirectory()
        let bad = directory.file("bad.tsv")
        try "#Opt\tId\tName\n-\t0x01\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let result = try tool.run(["station", bad, "--simulate", "--db", directory.file("r.sqlite")])
        #expect(result.status == 1)
        #expect(result.standardError.contains("station: \(bad): not starting"))
        let logs = try tool.run([
            "station", "\(examples)/mp15-sdcard.tsv", "--simulate", "--db", directory.file("r.sqlite"), "--log-dir",
            directory.file("missing"),
        ])
        #expect(logs.status == 1)
        #expect(logs.standardError.contains("--log-dir \(directory.file("missing")): not a writable folder"))
        let usage = try tool.run(["station", "\(examples)/mp15-sdcard.tsv", "--runs", "2"])
        #expect(usage.status == 2)
        #expect(usage.standardError.contains("--runs needs --simulate"))
    }
}

/// A station running in the background, its stderr going to a file the test reads as it grows.
final class StationChild: Sendable {
    private let process: Process
    private let stderrPath: String

    init(tool: ExternalTool, arguments: [String], environment: [String: String], stderrPath: String) throws {
        self.stderrPath = stderrPath
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool.executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.run()
        self.process = process
    }

    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    func signal(_ number: Int32) { Foundation.kill(process.processIdentifier, number) }

    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }

    /// Polls stderr until `condition` holds (false after `timeout` seconds or when the station ended).
    func wait(timeout: TimeInterval = 120, _ condition: (String) -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition(stderr) { return true }
            if !process.isRunning { return condition(stderr) }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// The exit status, or nil when it still runs after `timeout` seconds.
    func waitForExit(timeout: TimeInterval) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        return process.isRunning ? nil : process.terminationStatus
    }
}

/// A real unix datagram socket standing in for systemd's `$NOTIFY_SOCKET`.
final class NotifySocket: Sendable {
    let path: String
    private let fd: Int32
    private let received = Mutex<[String]>([])

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard fd >= 0, bound == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    }

    deinit {
        reader.withLock { $0?.cancel() }
        close(fd)
    }

    /// Reads all the time, as systemd does: a receiver that falls behind fills the socket's queue.
    private let reader = Mutex<Task<Void, Never>?>(nil)

    func startReading() {
        let task = Task { [weak self] in
            while !Task.isCancelled, let self {
                _ = self.messages
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        reader.withLock { $0 = task }
    }

    /// Every datagram received so far (read without blocking).
    var messages: [String] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            guard count > 0 else { break }
            let text = String(decoding: buffer[..<count], as: UTF8.self)
            received.withLock { $0.append(text) }
        }
        return received.withLock { $0 }
    }

    /// Whether a datagram with the line `line` arrives within `timeout` seconds.
    func wait(for line: String, timeout: TimeInterval = 120) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if messages.contains(where: { $0.split(separator: "\n").contains(Substring(line)) }) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}
