import Foundation
import Testing

// These tests run the built executables (`stm32mp-board-emulator`, `stm32mp-flash`), so build them
// first: `swift build --product stm32mp-board-emulator && swift build --product stm32mp-flash`
// (or plain `swift build`), then `swift test --filter USBIntegrationTests`. A missing binary fails
// the test with that instruction; it is never skipped.

/// The folder holding the built products: the test bundle's own folder (`.build/<triple>/debug`).
let builtProductsDirectory: String = {
    let bundle =
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return (bundle as NSString).deletingLastPathComponent
}()

/// The path of a built executable, or a failure that says how to build it.
func builtExecutable(_ name: String) throws -> String {
    let path = builtProductsDirectory + "/" + name
    guard FileManager.default.isExecutableFile(atPath: path) else {
        Issue.record(
            "\(path) is missing: run `swift build` before `swift test` (the USB integration tests run the built executables)"
        )
        throw MissingBinary(path: path)
    }
    return path
}

struct MissingBinary: Error { var path: String }

/// A short directory in /tmp, used as the emulator's TMPDIR: umockdev's socket paths under it must
/// fit in 108 bytes (gotcha 15), and a per-test folder keeps left-over testbeds contained (gotcha 17).
final class ShortTemporaryDirectory: @unchecked Sendable {
    let path: String

    init() throws {
        var template = Array("/tmp/u.XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw CocoaError(.fileWriteUnknown)
        }
        path = String(cString: made)
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// What a finished process left behind.
struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
    /// `.uncaughtSignal`: `status` is the signal's number.
    var reason: Process.TerminationReason = .exit

    var lines: [String] { stdout.split(separator: "\n").map(String.init) }
}

/// Runs `executable` to completion with output captured in files (no pipe can fill up); kills it
/// after `timeout` seconds so a hang fails the test instead of stalling the run.
func run(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:],
    in directory: ShortTemporaryDirectory,
    timeout: TimeInterval = 60
) async throws -> ProcessResult {
    let process = try start(executable, arguments, environment: environment, in: directory)
    return try await process.wait(timeout: timeout)
}

/// A started child process whose output goes to files.
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    private let outPath: String
    private let errPath: String

    init(outPath: String, errPath: String) {
        self.outPath = outPath
        self.errPath = errPath
    }

    var stderrSoFar: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }
    var stdoutSoFar: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }

    func wait(timeout: TimeInterval) async throws -> ProcessResult {
        await waitUntil(timeout: timeout) { !process.isRunning }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            Issue.record(
                "\(process.executableURL?.lastPathComponent ?? "?") did not finish within \(timeout) s; stderr: \(stderrSoFar)"
            )
        }
        process.waitUntilExit()
        return ProcessResult(
            status: process.terminationStatus,
            stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            stderr: stderrSoFar, reason: process.terminationReason)
    }
}

func start(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:],
    in directory: ShortTemporaryDirectory
) throws -> ChildProcess {
    let name = (executable as NSString).lastPathComponent + "-\(UUID().uuidString.prefix(8))"
    let child = ChildProcess(outPath: directory.file(name + ".out"), errPath: directory.file(name + ".err"))
    _ = FileManager.default.createFile(atPath: directory.file(name + ".out"), contents: nil)
    _ = FileManager.default.createFile(atPath: directory.file(name + ".err"), contents: nil)
    child.process.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/env")
    child.process.arguments = executable.hasPrefix("/") ? arguments : [executable] + arguments
    var env = ProcessInfo.processInfo.environment
    env["TMPDIR"] = directory.path
    for (key, value) in environment { env[key] = value }
    child.process.environment = env
    child.process.currentDirectoryURL = URL(fileURLWithPath: directory.path)
    child.process.standardOutput = FileHandle(forWritingAtPath: directory.file(name + ".out"))
    child.process.standardError = FileHandle(forWritingAtPath: directory.file(name + ".err"))
    try child.process.run()
    return child
}

/// Polls `condition` every 10 ms until it holds or `timeout` seconds pass, suspending (never
/// blocking a thread of the cooperative pool, which parallel tests share).
func waitUntil(timeout: TimeInterval, _ condition: () -> Bool) async {
    let deadline = Date().addingTimeInterval(timeout)
    while !condition() && Date() < deadline {
        try? await Task.sleep(for: .milliseconds(10))
    }
}

/// Runs `command` under the emulator (`--fixed-dfu` plus `options`) and returns its result.
func runUnderEmulator(
    _ command: [String], options: [String] = [], in directory: ShortTemporaryDirectory, timeout: TimeInterval = 60
) async throws -> ProcessResult {
    let emulator = try builtExecutable("stm32mp-board-emulator")
    return try await run(emulator, ["--fixed-dfu"] + options + ["--"] + command, in: directory, timeout: timeout)
}

/// An emulator serving in the background; clients get its environment from `environment`.
final class ServingEmulator: @unchecked Sendable {
    let child: ChildProcess
    /// UMOCKDEV_DIR and LD_PRELOAD: all a client needs to see the emulated board.
    let environment: [String: String]

    /// `fixedDFU` false: the virtual board (`options` choose its chip, scenario, storage …).
    init(fixedDFU: Bool = true, options: [String] = [], in directory: ShortTemporaryDirectory) async throws {
        let envFile = directory.file("emulator.env")
        child = try start(
            try builtExecutable("stm32mp-board-emulator"),
            (fixedDFU ? ["--fixed-dfu"] : []) + ["--env-file", envFile] + options, in: directory)
        // A guard against a hang only: the emulator writes the file as soon as the board is plugged.
        await waitUntil(timeout: 300) { [child] in
            FileManager.default.fileExists(atPath: envFile) || !child.process.isRunning
        }
        let text = try String(contentsOfFile: envFile, encoding: .utf8)
        var environment: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { environment[String(parts[0])] = String(parts[1]) }
        }
        self.environment = environment
    }

    /// As DFU_DETACH would: the fixed device disconnects and comes back with a new identity.
    func reenumerate() { kill(child.process.processIdentifier, SIGUSR1) }

    func stop() async throws -> ProcessResult {
        child.process.terminate()
        return try await child.wait(timeout: 20)
    }
}

/// For tests that use USBHost or Hotplug inside the test process: the process must have been
/// started under umockdev's preload, so the test re-runs itself, alone, as the emulator's command
/// (with the same test binary and a filter) and passes when that run passes. Inside that run,
/// `body` gets the emulator's storage folder.
func inEmulatedProcess(
    _ testName: String, emulatorOptions: [String] = [], timeout: TimeInterval = 120,
    _ body: (_ storage: String) async throws -> Void
) async throws {
    let environment = ProcessInfo.processInfo.environment
    if environment["STM32MP_EMULATED_TEST"] == testName, let storage = environment["STM32MP_EMULATED_STORAGE"] {
        try await body(storage)
        _ = FileManager.default.createFile(atPath: storage + "/" + testName + ".passed", contents: nil)
        return
    }
    let directory = try ShortTemporaryDirectory()
    let storage = directory.file("storage")
    try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
    let emulator = try builtExecutable("stm32mp-board-emulator")
    let testBinary = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    let result = try await run(
        emulator,
        ["--fixed-dfu", "--storage", storage] + emulatorOptions + [
            "--", testBinary, "--testing-library", "swift-testing", "--filter", testName,
        ],
        environment: ["STM32MP_EMULATED_TEST": testName, "STM32MP_EMULATED_STORAGE": storage], in: directory,
        timeout: timeout)
    #expect(result.status == 0, "the emulated run failed:\n\(result.stdout)\n\(result.stderr)")
    // A filter that matches nothing also exits 0: the marker proves the body ran and returned.
    #expect(
        FileManager.default.fileExists(atPath: storage + "/" + testName + ".passed"),
        "the emulated run did not run \(testName):\n\(result.stdout)\n\(result.stderr)")
    for line in result.stdout.split(separator: "\n") where line.contains("[figure]") { print(line) }
}
