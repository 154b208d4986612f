import ArgumentParser
import DfuSe
import Dispatch
import Glibc
import Timekeeping
import USBModel
import VirtualBoard
import VirtualMCU

/// `stm32mp-board-emulator`: serves a simulated board through umockdev, so that unmodified
/// programs (libusb, libudev, dfu-util, lsusb, stm32mp-flash) see it as a real USB device, and
/// runs one command in that environment.
struct EmulatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stm32mp-board-emulator",
        abstract: "Emulate an STM32MP board on USB (through umockdev) and run a command that sees it.",
        discussion: """
            By default the board is the virtual board (ROM, TF-A, U-Boot stm32prog; see \
            docs/virtual-board.md); --fixed-dfu serves a plain DFU 1.1 device instead. The command runs \
            with LD_PRELOAD=libumockdev-preload.so.0 and UMOCKDEV_DIR set; any other process started \
            with those two variables (see --env-file) sees the board too. Without a command the \
            emulator serves until SIGINT or SIGTERM. The exit status is the command's. SIGUSR1 makes \
            the fixed DFU device re-enumerate as after DFU_DETACH.
            """)

    @Flag(help: "Serve a plain DFU 1.1 device with one alternate setting instead of a board (debugging).")
    var fixedDFU = false

    @Option(
        help:
            "Serve a virtual STM32 MCU in its DFU system bootloader instead of an STM32MP board: \(MCUFamily.all.map(\.id).joined(separator: ", ")) (--scenario then takes \(MCUScenario.allCases.map(\.rawValue).joined(separator: ", ")); --storage keeps its flash and option bytes)."
    )
    var mcu: String?

    @Option(help: "The chip: mp15, mp13 or mp25 (--fixed-dfu: also mp21).")
    var soc: String = "mp15"

    @Option(help: "A fault to inject: \(FaultScenario.allCases.map(\.rawValue).joined(separator: ", ")).")
    var scenario: String = FaultScenario.none.rawValue

    @Option(help: "The TF-A the board runs: \(TFAVariant.allCases.map(\.rawValue).joined(separator: ", ")).")
    var tfa: String = TFAVariant.upstream.rawValue

    @Option(help: "The chip UID as every stage reports it (24 hex digits).")
    var serial: String?

    @Option(
        help:
            "Directory for the board's storage images (default: a temporary one, removed at exit; --fixed-dfu: the downloaded file)."
    )
    var storage: String?

    @Option(help: "The port path the board is plugged into, e.g. 1-1 or 1-2.3 (hubs are emulated on the way).")
    var port: String = "1-1"

    @Option(help: "The link speed: high (480 Mbit/s) or full (12 Mbit/s: the ROM says 'DFU in FS Mode').")
    var speed: String = "high"

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

    @Flag(help: "Log every request and transition to stderr; at exit, the board's console and protocol violations.")
    var trace = false

    @Flag(
        help:
            "Print ioctl and control-transfer counts, the rate, and per enumeration the time from its add uevent to the first request, to stderr at exit."
    )
    var stats = false

    @Argument(parsing: .postTerminator, help: "The command to run, after --.")
    var command: [String] = []

    func validate() throws {
        // Port numbers stop one short of Linux's hub limit: the moves-port faults use the next one.
        guard let path = PortPath(port), path.bus >= 1, path.ports.count <= 6,
            path.ports.allSatisfy({ $0 < HubModel.maximumPortCount })
        else {
            throw ValidationError(
                "--port must be a port path like 1-1 or 1-2.3 (at most 6 levels, ports 1 to \(HubModel.maximumPortCount - 1))"
            )
        }
        if let mcu {
            guard MCUFamily.named(mcu) != nil else {
                throw ValidationError("unknown --mcu \(mcu); use \(MCUFamily.all.map(\.id).joined(separator: ", "))")
            }
            guard MCUScenario(rawValue: scenario) != nil else {
                throw ValidationError(
                    "unknown --scenario \(scenario) for an MCU; use \(MCUScenario.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
        } else if fixedDFU {
            guard fixedChipDeviceID != nil else {
                throw ValidationError("unknown --soc \(soc); use mp15, mp13, mp21 or mp25")
            }
        } else {
            guard VirtualSoC(rawValue: soc) != nil else {
                throw ValidationError("unknown --soc \(soc); use mp15, mp13 or mp25")
            }
            guard FaultScenario(rawValue: scenario) != nil else {
                throw ValidationError("unknown --scenario \(scenario)")
            }
            guard TFAVariant(rawValue: tfa) != nil else { throw ValidationError("unknown --tfa \(tfa)") }
            guard speed == "high" || speed == "full" else { throw ValidationError("--speed takes high or full") }
            if let serial, serial.count != 24 || !serial.allSatisfy(\.isHexDigit) {
                throw ValidationError("--serial must be 24 hexadecimal digits")
            }
        }
    }

    private var fixedChipDeviceID: UInt16? {
        ["mp15": 0x500, "mp13": 0x501, "mp21": 0x503, "mp25": 0x505][soc]
    }

    func run() throws {
        let testbed = Testbed()
        let clock = SystemClock()
        var storageIsTemporary = false
        let board: any SimulatedBoard
        var virtualBoard: VirtualBoard?
        if let mcu {
            let directory = try storage ?? makeTemporaryDirectory()
            storageIsTemporary = storage == nil
            let configuration = MCUConfiguration(
                family: MCUFamily.named(mcu)!, scenario: MCUScenario(rawValue: scenario)!, port: PortPath(port)!,
                memoryDirectory: directory)
            do { board = try VirtualMCU(configuration: configuration) } catch {
                throw ValidationError("\(error)")
            }
        } else if fixedDFU {
            let settings = FixedDFUSettings(
                chipDeviceID: fixedChipDeviceID!, transferSize: transferSize, storageDirectory: storage,
                downloadLatency: .milliseconds(downloadLatencyMs), unreadableStringRequests: unreadableStrings)
            board = FixedDFUBoard(port: PortPath(port)!, settings: settings)
        } else {
            let directory = try storage ?? makeTemporaryDirectory()
            storageIsTemporary = storage == nil
            var configuration = BoardConfiguration(
                soc: VirtualSoC(rawValue: soc)!, tfaVariant: TFAVariant(rawValue: tfa)!, port: PortPath(port)!,
                storageDirectory: directory, fault: FaultScenario(rawValue: scenario)!)
            if let serial { configuration.serial = serial.uppercased() }
            configuration.speed = speed == "full" ? .full : .high
            virtualBoard = VirtualBoard(configuration: configuration)
            board = virtualBoard!
        }
        let host = BoardHost(board: board, clock: clock, testbed: testbed, trace: trace)
        host.start()
        // SIGUSR1: the fixed device re-enumerates as after DFU_DETACH, without a USB client.
        signal(SIGUSR1, SIG_IGN)
        let reenumerate = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
        reenumerate.setEventHandler {
            guard let fixed = board as? FixedDFUBoard else { return }
            host.lock.withLock {
                fixed.requestReenumeration()
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
        reenumerate.cancel()
        host.stop()
        host.lock.withLock {
            if stats {
                let rate = Double(host.statistics.controlTransfers) / max(elapsed.inSeconds, 1e-9)
                printError(
                    "[emulator] exit \(status) after \(formatSeconds(elapsed)) s: ioctls=\(host.statistics.ioctls) control transfers=\(host.statistics.controlTransfers) (\(Int(rate))/s)"
                )
                for line in host.statistics.enumerationLines { printError(line) }
            }
            if trace, let virtualBoard {
                for line in virtualBoard.consoleLog { printError("[console] \(line)") }
                for line in virtualBoard.protocolViolations { printError("[violation] \(line)") }
            }
        }
        testbed.destroy()
        if let envFile { unlink(envFile) }
        if storageIsTemporary, let virtualBoard { removeStorage(virtualBoard.storage) }
        if storageIsTemporary, let mcu = board as? VirtualMCU { removeMCUMemory(mcu) }
        throw ExitCode(status)
    }
}

/// A fresh folder under $TMPDIR (or /tmp) for the board's storage images.
private func makeTemporaryDirectory() throws -> String {
    let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    var template = Array("\(base)/stm32mp-board.XXXXXX".utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw ValidationError("cannot create a storage folder in \(base): \(String(cString: strerror(errno)))")
    }
    return String(cString: made)
}

/// Deletes a temporary folder's MCU memory files, then the folder.
private func removeMCUMemory(_ mcu: VirtualMCU) {
    for path in mcu.memoryFiles { unlink(path) }
    rmdir(mcu.configuration.memoryDirectory)
}

/// Deletes the images of a temporary storage folder, then the folder (left alone when something
/// else was put there).
private func removeStorage(_ storage: BoardStorage) {
    storage.closeAll()
    for device in storage.devices {
        for partition in [nil, 1, 2] as [Int?] {
            unlink(storage.path(device: device.name, hardwarePartition: partition))
        }
    }
    rmdir(storage.directory)
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
