public import ArgumentParser

/// `stm32mp-flash`: the command tree. Each subcommand lives in its own file of this target.
public struct RootCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "stm32mp-flash",
        abstract: "Flash STM32MP1/MP13/MP2 boards over USB from a FlashLayout TSV, and explain failures.",
        version: "0.1.0",
        subcommands: [
            CheckCommand.self,
            PlanCommand.self,
            DoctorCommand.self,
            VMFilterCommand.self,
            UdevRulesCommand.self,
        ]
    )

    public init() {}
}
