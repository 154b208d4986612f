import ArgumentParser
import Diagnostics
import FoundationEssentials
import NullEncoding
import TerminalText

/// `stm32mp-flash doctor`: checks what flashing needs on this host and says how to fix it.
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract:
            "Check this host for flashing STM32MP boards: libusb, udev rule, permissions, VM/container passthrough.",
        discussion: "Exits 1 when a check fails, 0 when every check passes or only warns.")

    @Flag(help: "Print the checklist and the detected environment as JSON.")
    var json = false

    @Option(help: ArgumentHelp("Read /sys, /proc, /etc, /run and /dev below DIR instead of /.", valueName: "DIR"))
    var root = "/"

    /// The JSON shape: stable field names for scripts.
    struct Report: Encodable {
        var checks: [DoctorCheck]
        var environment: HostEnvironment
    }

    func run() async throws {
        let environment = EnvironmentProbe.detect(root: root)
        let checks = Doctor.checks(environment)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(
                String(
                    decoding: try encoder.encode(KeepingNulls(Report(checks: checks, environment: environment))),
                    as: UTF8.self))
        } else {
            // Board strings and file contents appear in the checklist: escaped, never raw.
            print(TerminalText.escaped(Doctor.render(checks), keepNewlines: true), terminator: "")
        }
        let status = Doctor.exitCode(checks)
        if status != 0 { throw ExitCode(status) }
    }
}
