public import ArgumentParser
import Glibc
import TerminalText

/// `stm32mp-flash`: the command tree. Each subcommand lives in its own file of this target.
public struct RootCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "stm32mp-flash",
        abstract: "Flash STM32MP1/MP13/MP2 boards over USB from a FlashLayout TSV, and explain failures.",
        version: toolVersion,
        subcommands: [
            CheckCommand.self,
            PlanCommand.self,
            ExamplesCommand.self,
            FlashCommand.self,
            ListCommand.self,
            WatchCommand.self,
            DoctorCommand.self,
            VMFilterCommand.self,
            UdevRulesCommand.self,
            MCUCommand.self,
            StationCommand.self,
        ]
    )

    /// The version `--version` prints and every attempt record carries.
    static let toolVersion = "0.1.0"

    public init() {}

    /// Runs the command line and returns the process exit status: 0 success, 1 failure (errors
    /// found, flashing failed), 2 usage errors (ArgumentParser's 64 is mapped to 2).
    public static func runMain(_ arguments: [String]? = nil) async -> Int32 {
        // Ctrl-C ends every command with status 130 (128 + SIGINT), as shells expect; `flash`
        // replaces this with a clean cancellation while it talks to a board.
        signal(SIGINT) { _ in _exit(130) }
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            return 0
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                if !message.isEmpty { print(message) }
                return 0
            }
            // Usage errors quote the user's arguments: shown escaped, never raw.
            if !message.isEmpty { Terminal.error(TerminalText.escaped(message, keepNewlines: true)) }
            return code == .validationFailure ? 2 : code.rawValue
        }
    }
}
