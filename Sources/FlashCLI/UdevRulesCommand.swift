import ArgumentParser
import Diagnostics

/// `stm32mp-flash udev-rules`: prints or installs the rule that lets users open the board.
struct UdevRulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udev-rules",
        abstract: "Print (or install) the udev rule giving the logged-in user access to STM32MP boards.",
        discussion: """
            Covers 0483:df11 (ROM, TF-A, U-Boot stm32prog), 0afb (fastboot) and 5720 with \
            TAG+="uaccess" and MODE="0660". --install writes \(UdevRules.installPath) and reloads udev; \
            it needs root.
            """)

    @Flag(help: "Write the rule file and reload udev (needs root).")
    var install = false

    @Option(
        help: ArgumentHelp("Also grant access to this group (for SSH or CI users without a seat).", valueName: "NAME"))
    var group: String?

    @Option(help: ArgumentHelp("Install below DIR instead of / (udev is then not reloaded).", valueName: "DIR"))
    var root = "/"

    func run() async throws {
        do {
            if install {
                let path = try UdevRules.install(group: group, root: root)
                print("Installed \(path)" + (root == "/" ? " and reloaded udev. Unplug and re-plug the board." : "."))
            } else {
                print(try UdevRules.text(group: group), terminator: "")
            }
        } catch {
            Terminal.error("error: \(error)")
            throw ExitCode(1)
        }
    }
}
