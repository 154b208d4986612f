import ArgumentParser

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check", abstract: "Lint FlashLayout files.")
    func run() async throws { throw ValidationError("not implemented yet") }
}

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "plan", abstract: "Show the partition plan.")
    func run() async throws { throw ValidationError("not implemented yet") }
}
