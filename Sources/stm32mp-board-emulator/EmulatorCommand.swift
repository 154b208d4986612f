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

    @Option(
        help: ArgumentHelp(
            "Serve this many boards at once, behind a hub on --port: on PORT.1 … PORT.N (1-1.1 … 1-1.N by default), each with its own serial (the last four digits are its number) and storage (STORAGE/PORT.K)."
        ))
    var boards: Int?

    @Flag(help: "With --boards: every board reports the same serial (as some MCU bootloaders do).")
    var sameSerial = false

    @Option(
        name: .customLong("board-scenario"),
        help: ArgumentHelp(
            "With --boards: a fault for one board only, e.g. 1-1.3=vanish-mid-partition.", valueName: "port=name"))
    var boardScenarios: [String] = []

    @Option(
        help: ArgumentHelp(
            "U-Boot's storage write speed in bytes per second (default 20000000), to model slow media.",
            valueName: "bytes"))
    var storageRate: Int64?

    @Option(
        help: ArgumentHelp(
            "U-Boot's CONFIG_FASTBOOT_FLASH_MMC_DEV (what the fast path flashes; default the SoC's stock value: 0 on MP13, 1 on MP15/MP25).",
            valueName: "n"))
    var fastbootMmcdev: Int?

    @Option(
        help: ArgumentHelp(
            "U-Boot's CONFIG_FASTBOOT_BUF_SIZE, what getvar:max-download-size answers (default 0x2000000); small values force several sparse pieces.",
            valueName: "bytes"))
    var fastbootMaxDownload: Int?

    @Option(
        help: ArgumentHelp(
            "The fastboot gadget's bulk throughput (USB → buffer) in bytes per second (default 25000000).",
            valueName: "bytes"))
    var fastbootRate: Int64?

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

    @Option(
        help: ArgumentHelp(
            "Every stage change (ROM → TF-A, TF-A → U-Boot, U-Boot's re-enumeration, reset) takes this many ms instead of the timing model's seconds, for benchmarks that repeat many flashes.",
            valueName: "ms"))
    var transitionMs: Int?

    @Option(help: "vanish-mid-partition: the data block of the first partition at which the board drops off the bus.")
    var vanishBlock: Int = 1

    @Flag(
        help:
            "The ROM keeps the part of an FSBL it received when DFU_ABORT ends the download, and the next download goes on after it (UNCONFIRMED; by default it starts over)."
    )
    var romKeepsFSBLAfterAbort = false

    @Option(
        help: ArgumentHelp(
            "TF-A's FIP download buffer starts here (hex), as a TF-A built with another DWL_BUFFER_BASE (default 0xC7000000, 0x87000000 on MP2).",
            valueName: "address"))
    var tfaBufferBase: String?

    @Option(
        help: ArgumentHelp(
            "Hold the board when it receives data block BLOCK (the DNLOAD's block number) of phase PHASE (e.g. 0x11:8), once: the emulator creates --pause-file and answers nothing more until that file is deleted. Tests use it to signal or kill a client that is provably in the middle of a phase.",
            valueName: "phase:block"))
    var pauseAt: String?

    @Option(help: ArgumentHelp("With --pause-at: the file that says the board is held.", valueName: "path"))
    var pauseFile: String?

    @Option(help: "U-Boot's DFU buffer (CONFIG_SYS_DFU_DATA_BUF_SIZE) in MiB: it writes a partition in such buffers.")
    var ubootBufferMib: Int = 8

    @Option(
        help: ArgumentHelp(
            "The udev/libusb race: each add uevent reaches the listener that bound first (libusb's own monitor, opened at libusb_init before the tool's) this many ms after the others, so the tool hears of a device before libusb lists it.",
            valueName: "ms"))
    var libusbLagMs: Int = 0

    @Flag(help: "Log every request and transition to stderr; at exit, the board's console and protocol violations.")
    var trace = false

    @Flag(
        help:
            "Print ioctl and control-transfer counts, the rate, and per enumeration the time from its add uevent to the first request, to stderr at exit."
    )
    var stats = false

    @Argument(parsing: .postTerminator, help: "The command to run, after --.")
    var command: [String] = []

    /// `0xC7000000` or `c7000000`, 32 bits.
    static func bufferAddress(_ text: String) -> UInt32? {
        UInt32(text.hasPrefix("0x") || text.hasPrefix("0X") ? String(text.dropFirst(2)) : text, radix: 16)
    }

    func validate() throws {
        if let tfaBufferBase, Self.bufferAddress(tfaBufferBase) == nil {
            throw ValidationError(
                "--tfa-buffer-base takes a 32-bit hex address like 0xD0000000, got '\(tfaBufferBase)'")
        }
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
        if let boards {
            guard !fixedDFU, mcu == nil, (1...(HubModel.maximumPortCount - 1)).contains(boards),
                PortPath(port)!.ports.count <= 5
            else {
                throw ValidationError(
                    "--boards takes 1 to \(HubModel.maximumPortCount - 1) virtual boards below a --port of at most 5 levels"
                )
            }
        }
        let ports = Set(boardPorts.map(\.description))
        for entry in boardScenarios {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, ports.contains(parts[0]), FaultScenario(rawValue: parts[1]) != nil else {
                throw ValidationError(
                    "--board-scenario takes PORT=SCENARIO with one of the boards' ports (\(boardPorts.map(\.description).joined(separator: ", "))), got '\(entry)'"
                )
            }
        }
        if let storageRate, storageRate <= 0 { throw ValidationError("--storage-rate must be positive") }
        if ubootBufferMib < 1 { throw ValidationError("--uboot-buffer-mib takes a whole number of MiB ≥ 1") }
        if let pauseAt {
            guard PausePoint(pauseAt) != nil else {
                throw ValidationError("--pause-at takes PHASE:BLOCK, e.g. 0x11:8 (got \(pauseAt))")
            }
            guard pauseFile != nil else { throw ValidationError("--pause-at needs --pause-file") }
        }
        if let fastbootMmcdev, !(0...2).contains(fastbootMmcdev) {
            throw ValidationError("--fastboot-mmcdev must be 0, 1 or 2")
        }
        if let fastbootMaxDownload, fastbootMaxDownload < 4096 {
            throw ValidationError("--fastboot-max-download must be at least 4096")
        }
        if let fastbootRate, fastbootRate < 0 { throw ValidationError("--fastboot-rate must not be negative") }
    }

    /// The boards' ports: --port itself, or PORT.1 … PORT.N with --boards.
    private var boardPorts: [PortPath] {
        guard let base = PortPath(port) else { return [] }
        guard let boards else { return [base] }
        return (1...max(1, boards)).map { PortPath(bus: base.bus, ports: base.ports + [$0]) }
    }

    private var fixedChipDeviceID: UInt16? {
        ["mp15": 0x500, "mp13": 0x501, "mp21": 0x503, "mp25": 0x505][soc]
    }

    func run() throws {
        let testbed = Testbed()
        let clock = SystemClock()
        var storageIsTemporary = false
        var hosted: [any SimulatedBoard] = []
        var virtualBoards: [VirtualBoard] = []
        var virtualMCU: VirtualMCU?
        if let mcu {
            let directory = try storage ?? makeTemporaryDirectory()
            storageIsTemporary = storage == nil
            let configuration = MCUConfiguration(
                family: MCUFamily.named(mcu)!, scenario: MCUScenario(rawValue: scenario)!, port: PortPath(port)!,
                memoryDirectory: directory)
            do { virtualMCU = try VirtualMCU(configuration: configuration) } catch {
                throw ValidationError("\(error)")
            }
            hosted = [virtualMCU!]
        } else if fixedDFU {
            let settings = FixedDFUSettings(
                chipDeviceID: fixedChipDeviceID!, transferSize: transferSize, storageDirectory: storage,
                downloadLatency: .milliseconds(downloadLatencyMs), unreadableStringRequests: unreadableStrings)
            hosted = [FixedDFUBoard(port: PortPath(port)!, settings: settings)]
        } else {
            storageIsTemporary = storage == nil
            let faults = Dictionary(
                boardScenarios.map { entry in
                    let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
                    return (parts[0], FaultScenario(rawValue: parts[1])!)
                }, uniquingKeysWith: { $1 })
            for (index, boardPort) in boardPorts.enumerated() {
                var directory = try storage ?? makeTemporaryDirectory()
                if boards != nil, storage != nil {
                    mkdir(directory, 0o755)
                    directory += "/\(boardPort)"
                    mkdir(directory, 0o755)
                }
                var configuration = BoardConfiguration(
                    soc: VirtualSoC(rawValue: soc)!, tfaVariant: TFAVariant(rawValue: tfa)!, port: boardPort,
                    storageDirectory: directory,
                    fault: faults[boardPort.description] ?? FaultScenario(rawValue: scenario)!)
                if let serial { configuration.serial = serial.uppercased() }
                if boards != nil, !sameSerial {
                    configuration.serial =
                        String(configuration.serial.prefix(20)) + hex4(UInt16(index + 1)).uppercased()
                }
                if let storageRate { configuration.timing.storageBytesPerSecond = storageRate }
                if let fastbootMmcdev { configuration.fastboot.mmcDevice = fastbootMmcdev }
                if let fastbootMaxDownload { configuration.fastboot.maxDownloadSize = fastbootMaxDownload }
                if let fastbootRate { configuration.fastboot.bytesPerSecond = fastbootRate }
                configuration.speed = speed == "full" ? .full : .high
                configuration.vanishBlock = vanishBlock
                configuration.romKeepsFSBLAfterAbort = romKeepsFSBLAfterAbort
                configuration.tfaBufferBase = tfaBufferBase.flatMap(Self.bufferAddress)
                configuration.ubootBufferSize = ubootBufferMib << 20
                if let transitionMs {
                    let transition = Duration.milliseconds(max(0, transitionMs))
                    configuration.timing.romToTFA = transition
                    configuration.timing.tfaReconnect = transition
                    configuration.timing.tfaToUBoot = transition
                    configuration.timing.ubootReenumeration = transition
                    configuration.timing.resetToROM = transition
                }
                virtualBoards.append(VirtualBoard(configuration: configuration))
            }
            hosted = virtualBoards
            if let point = pauseAt.flatMap(PausePoint.init), let pauseFile {
                let gate = PauseGate(point: point, path: pauseFile)
                for board in virtualBoards { board.dataBlockObserver = { gate.arrived(phase: $0, block: $1) } }
            }
        }
        let host = BoardHost(
            boards: hosted, clock: clock, testbed: testbed, trace: trace, libusbLag: .milliseconds(max(0, libusbLagMs)))
        host.start()
        // SIGUSR1: the fixed device re-enumerates as after DFU_DETACH, without a USB client.
        signal(SIGUSR1, SIG_IGN)
        let reenumerate = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
        reenumerate.setEventHandler {
            guard let fixed = hosted.first as? FixedDFUBoard else { return }
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
                    "[emulator] exit \(status) after \(formatSeconds(elapsed)) s: ioctls=\(host.statistics.ioctls) control transfers=\(host.statistics.controlTransfers) (\(Int(rate))/s) bulk URBs=\(host.statistics.bulkTransfers) bulk OUT bytes=\(host.statistics.bulkOutBytes)"
                )
                for line in host.statistics.enumerationLines { printError(line) }
            }
            if trace {
                for virtualBoard in virtualBoards {
                    let prefix = virtualBoards.count > 1 ? " \(virtualBoard.port)" : ""
                    for line in virtualBoard.consoleLog { printError("[console\(prefix)] \(line)") }
                    for line in virtualBoard.protocolViolations { printError("[violation\(prefix)] \(line)") }
                }
            }
        }
        testbed.destroy()
        if let envFile { unlink(envFile) }
        if storageIsTemporary {
            for virtualBoard in virtualBoards { removeStorage(virtualBoard.storage) }
        }
        if storageIsTemporary, let virtualMCU { removeMCUMemory(virtualMCU) }
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

/// `--pause-at PHASE:BLOCK`.
struct PausePoint {
    var phase: UInt8
    var block: Int

    init?(_ text: String) {
        let parts = text.split(separator: ":").map(String.init)
        guard parts.count == 2 else { return nil }
        let phaseText = parts[0].lowercased().hasPrefix("0x") ? String(parts[0].dropFirst(2)) : parts[0]
        guard let phase = UInt8(phaseText, radix: 16), let block = Int(parts[1]), block >= 0 else { return nil }
        (self.phase, self.block) = (phase, block)
    }
}

/// Holds the board once at a `PausePoint`: creates the pause file and waits until a test deletes
/// it. Runs on the thread that delivers the request (with the host's lock held), so the client's
/// transfer, and every other, waits too: the board is frozen mid-phase, as long as the test needs.
final class PauseGate: @unchecked Sendable {
    private let point: PausePoint
    private let path: String
    /// Only touched with the host's lock held.
    private var fired = false

    init(point: PausePoint, path: String) {
        self.point = point
        self.path = path
    }

    func arrived(phase: UInt8, block: Int) {
        guard !fired, phase == point.phase, block == point.block else { return }
        fired = true
        writeFile(path, Array("phase 0x\(String(phase, radix: 16)) block \(block)\n".utf8))
        while access(path, F_OK) == 0 { usleep(5000) }
    }
}
