import ArgumentParser
import FlashEngine
import FlashLayout
import USBModel
import VirtualBoard

/// `stm32mp-flash station …`: the factory service (`station LAYOUT`) and its records (`station report`).
struct StationCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "station",
        abstract: "Factory station: flash every board that comes up in the ROM, record each attempt.",
        subcommands: [StationRunCommand.self, StationReportCommand.self],
        defaultSubcommand: StationRunCommand.self)
}

/// `stm32mp-flash station LAYOUT`: runs until stopped, flashing each board that enters the ROM
/// code on the given ports (docs/station.md).
struct StationRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Flash each board that enters the ROM code on the given ports, once per plug-in, until stopped.",
        discussion: """
            `stm32mp-flash station LAYOUT` is short for `station run LAYOUT`. A board is flashed when it \
            enters the ROM code (and when it is already there at start); a board still attached after \
            its attempt is not flashed again until it comes back in the ROM. A board's failure never \
            stops the station. SIGHUP reloads the layout after checking it (a bad one keeps the old \
            one and says why); SIGTERM or Ctrl-C stops taking boards, lets running attempts finish \
            (--drain-timeout, then they are cancelled) and exits 0; a second signal cancels them at \
            once. Under systemd with Type=notify it reports READY, STATUS and STOPPING on \
            $NOTIFY_SOCKET. Every attempt is recorded (see `station report`); logs go to stderr.
            """)

    @Argument(
        help: ArgumentHelp("The FlashLayout file (.tsv).", valueName: "layout"), completion: .file(extensions: ["tsv"]))
    var layout: String

    @Option(
        name: .customLong("port"),
        help: ArgumentHelp("Only boards on this USB port path (repeat it; default: every port).", valueName: "path"))
    var ports: [String] = []

    @Option(
        help: ArgumentHelp(
            "The records database (default: $STATE_DIRECTORY/records.sqlite under systemd, else the XDG state folder).",
            valueName: "file"),
        completion: .file(extensions: ["sqlite", "db"]))
    var db: String?

    @Option(
        help: ArgumentHelp(
            "Serve the status page and /metrics here: ADDR:PORT, or PORT alone for loopback (default: off).",
            valueName: "addr:port"))
    var listen: String?

    @Option(
        name: .customLong("log-dir"),
        help: ArgumentHelp("Keep one text log per attempt in this folder.", valueName: "dir"), completion: .directory)
    var logDirectory: String?

    @Option(
        help: ArgumentHelp(
            "After SIGTERM, seconds running attempts may take to finish before they are cancelled.",
            valueName: "seconds"))
    var drainTimeout: Double = 600

    @Option(
        help: ArgumentHelp("Read each partition back after writing it: full, sampled or none.", valueName: "mode"))
    var verify = "sampled"

    @Option(help: ArgumentHelp("How partitions reach the storage: dfu, fastboot or auto.", valueName: "transport"))
    var transport = "dfu"

    @Flag(help: "Plug virtual boards (real time) instead of watching real USB: demos, tests, benchmarks.")
    var simulate = false

    @Option(help: ArgumentHelp("With --simulate: virtual boards on ports 1-1.1 … 1-1.N.", valueName: "n"))
    var boards = 1

    @Option(
        help: ArgumentHelp(
            "With --simulate: plug each virtual board this many times, then exit (0 when every attempt was done).",
            valueName: "k"))
    var runs = 1

    @Option(
        name: .customLong("sim-dir"),
        help: ArgumentHelp("With --simulate: where the virtual boards keep their storage.", valueName: "dir"),
        completion: .directory)
    var simulationDirectory = "virtual-boards"

    @Option(
        name: .customLong("sim-scenario"),
        help: ArgumentHelp(
            "With --simulate: a fault every virtual board has (flash --list-scenarios).", valueName: "name"))
    var scenario = "none"

    @Option(
        help: ArgumentHelp("With --simulate: the virtual boards' chip (default: from the layout).", valueName: "soc"))
    var soc: String?

    @Option(
        name: .customLong("sim-speed"),
        help: ArgumentHelp(
            "With --simulate: run the virtual boards' timing model this many times faster than real boards.",
            valueName: "factor"))
    var simulationSpeed: Double = 1

    @Flag(
        name: .customLong("same-serial"),
        help: "With --simulate: every virtual board reports the same serial (boards are told apart by port).")
    var sameSerial = false

    func validate() throws {
        if Set(ports).count != ports.count { throw ValidationError("--port names the same port twice") }
        for port in ports where PortPath(port) == nil {
            throw ValidationError("--port takes a USB port path like 1-2.3, got '\(port)'")
        }
        if let listen, ListenAddress(listen) == nil {
            throw ValidationError("--listen takes ADDR:PORT (e.g. 127.0.0.1:9110) or PORT, got '\(listen)'")
        }
        if !(drainTimeout >= 0) { throw ValidationError("--drain-timeout takes seconds ≥ 0") }
        if VerifyMode(rawValue: verify) == nil {
            throw ValidationError("--verify takes full, sampled or none, got '\(verify)'")
        }
        if FlashTransport(rawValue: transport) == nil {
            throw ValidationError("--transport takes dfu, fastboot or auto, got '\(transport)'")
        }
        if !simulate {
            let given = [
                boards != 1 ? "--boards" : nil, runs != 1 ? "--runs" : nil, scenario != "none" ? "--sim-scenario" : nil,
                soc != nil ? "--soc" : nil, simulationSpeed != 1 ? "--sim-speed" : nil,
                sameSerial ? "--same-serial" : nil,
            ].compactMap { $0 }
            if let first = given.first { throw ValidationError("\(first) needs --simulate") }
        }
        if boards < 1 || boards > 30 { throw ValidationError("--boards takes 1 to 30, got \(boards)") }
        if runs < 1 { throw ValidationError("--runs takes a whole number ≥ 1, got \(runs)") }
        if !(simulationSpeed > 0) { throw ValidationError("--sim-speed takes a factor > 0") }
    }

    /// The `flash` options every board is flashed with: the station flashes exactly as `flash`
    /// does (same checks, request, virtual board configuration), one board per port.
    func flashCommand() throws -> FlashCommand {
        var arguments = [layout, "--verify", verify, "--transport", transport]
        if simulate {
            arguments += ["--simulate", "--realtime", "--sim-dir", simulationDirectory, "--sim-scenario", scenario]
            if let soc { arguments += ["--soc", soc] }
        }
        return try FlashCommand.parse(arguments)
    }

    func run() async throws {
        let station: Station
        do {
            station = try await Station.start(self)
        } catch {
            Terminal.error("station: " + error.message)
            throw ExitCode.failure
        }
        let status = await station.run()
        if status != 0 { throw ExitCode(status) }
    }
}

/// `--listen`: `ADDR:PORT`, `[V6ADDR]:PORT`, `:PORT` or `PORT` (loopback).
struct ListenAddress: Sendable, Hashable {
    var host: String
    var port: Int

    init?(_ text: String) {
        var host = "127.0.0.1"
        var portText = text
        if let colon = text.lastIndex(of: ":") {
            let address = text[..<colon]
            portText = String(text[text.index(after: colon)...])
            if !address.isEmpty {
                host = String(address)
                if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            }
        }
        guard let port = Int(portText), (0...65535).contains(port), !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }
}
