import ArgumentParser
import Dispatch
import Glibc
import Timekeeping
import USBModel

/// `stm32mp-board-emulator`: serves a simulated board through umockdev, so that unmodified
/// programs (libusb, libudev, dfu-util, lsusb, stm32mp-flash) see it as a real USB device, and
/// runs one command in that environment.
struct EmulatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stm32mp-board-emulator",
        abstract: "Emulate an STM32MP board on USB (through umockdev) and run a command that sees it.",
        discussion: """
            The command runs with LD_PRELOAD=libumockdev-preload.so.0 and UMOCKDEV_DIR set; any other \
            process started with those two variables (see --env-file) sees the board too. Without a \
            command the emulator serves until SIGINT or SIGTERM. The exit status is the command's. \
            SIGUSR1 makes the fixed DFU device re-enumerate as after DFU_DETACH.
            """)

    @Flag(help: "Serve a plain DFU 1.1 device with one alternate setting instead of a board (debugging).")
    var fixedDFU = false

    @Option(help: "The chip: mp15, mp13, mp21 or mp25.")
    var soc: String = "mp15"

    @Option(help: "The board scenario (firmware personalities and faults).")
    var scenario: String?

    @Option(help: "Directory for the board's storage images (fixed DFU: the downloaded file).")
    var storage: String?

    @Option(help: "The port path the board is plugged into (bus-port).")
    var port: String = "1-1"

    @Option(help: "Write UMOCKDEV_DIR and LD_PRELOAD as KEY=VALUE lines here once the board is plugged in.")
    var envFile: String?

    @Option(help: "Fixed DFU: wTransferSize.")
    var transferSize: UInt16 = 1024

    @Option(help: "Fixed DFU: how long GETSTATUS after a DNLOAD block holds its answer, in ms.")
    var downloadLatencyMs: Int = 0

    @Option(
        help:
            "Fixed DFU: STALL this many string requests after each enumeration, the kernel's own three reads included (a transient state)."
    )
    var unreadableStrings: Int = 0

    @Flag(help: "Log every request and transition to stderr.")
    var trace = false

    @Flag(
        help:
            "Print ioctl and control-transfer counts, the rate, and per enumeration the time from its add uevent to the first request, to stderr at exit."
    )
    var stats = false

    @Argument(parsing: .postTerminator, help: "The command to run, after --.")
    var command: [String] = []

    func validate() throws {
        guard let path = PortPath(port), path.ports.count == 1 else {
            throw ValidationError("--port must be BUS-PORT, e.g. 1-1 (hubs are not emulated)")
        }
        guard chipDeviceID != nil else { throw ValidationError("unknown --soc \(soc); use mp15, mp13, mp21 or mp25") }
        if !fixedDFU {
            throw ValidationError(
                "the board personalities (VirtualBoard) are not in this build; use --fixed-dfu")
        }
    }

    private var chipDeviceID: UInt16? {
        ["mp15": 0x500, "mp13": 0x501, "mp21": 0x503, "mp25": 0x505][soc]
    }

    func run() throws {
        let testbed = Testbed()
        let clock = SystemClock()
        let settings = FixedDFUSettings(
            chipDeviceID: chipDeviceID!, transferSize: transferSize, storageDirectory: storage,
            downloadLatency: .milliseconds(downloadLatencyMs), unreadableStringRequests: unreadableStrings)
        let board = FixedDFUBoard(port: PortPath(port)!, settings: settings)
        let host = BoardHost(board: board, clock: clock, testbed: testbed, trace: trace)
        host.start()
        // SIGUSR1: the fixed device re-enumerates as after DFU_DETACH, without a USB client.
        signal(SIGUSR1, SIG_IGN)
        let reenumerate = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
        reenumerate.setEventHandler {
            host.lock.withLock {
                board.requestReenumeration()
                host.applyDueTransitions()
            }
        }
        reenumerate.activate()
        let root = testbed.rootDirectory
        if let envFile {
            let text = "UMOCKDEV_DIR=\(root)\nLD_PRELOAD=\(preloadLibrary)\n"
            writeFile(envFile + ".tmp", Array(text.utf8))
            rename(envFile + ".tmp", envFile)
        }
        host.log("UMOCKDEV_DIR=\(root)")
        let started = host.clock.now
        let status = command.isEmpty ? serveUntilSignalled() : try runChild(command)
        let elapsed = host.clock.now - started
        if stats {
            host.lock.withLock {
                let rate = Double(host.statistics.controlTransfers) / max(elapsed.inSeconds, 1e-9)
                printError(
                    "[emulator] exit \(status) after \(formatSeconds(elapsed)) s: ioctls=\(host.statistics.ioctls) control transfers=\(host.statistics.controlTransfers) (\(Int(rate))/s)"
                )
                for line in host.statistics.enumerationLines { printError(line) }
            }
        }
        reenumerate.cancel()
        host.stop()
        testbed.destroy()
        if let envFile { unlink(envFile) }
        throw ExitCode(status)
    }
}

let preloadLibrary = "libumockdev-preload.so.0"

/// The emulator must itself run under the preload: umockdev's uevent sender resolves syspaths
/// through it, and `add_from_string` only announces devices in a mock environment (gotchas 2, 7).
/// Re-executes this program with the preload when it is missing.
func reexecutedUnderPreloadIfNeeded() {
    let current = getenv("LD_PRELOAD").map { String(cString: $0) } ?? ""
    guard !current.contains("libumockdev-preload") else { return }
    setenv("LD_PRELOAD", current.isEmpty ? preloadLibrary : preloadLibrary + ":" + current, 1)
    var arguments = CommandLine.arguments.map { strdup($0) }
    arguments.append(nil)
    execv("/proc/self/exe", &arguments)
    printError("stm32mp-board-emulator: cannot re-execute under \(preloadLibrary): \(String(cString: strerror(errno)))")
    exit(70)
}
