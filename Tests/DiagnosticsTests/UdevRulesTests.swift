import Diagnostics
import Foundation
import Testing

@Suite("UdevRules")
struct UdevRulesTests {
    @Test func ruleCoversEveryProductWithUaccessAndNever0666() throws {
        let text = try UdevRules.text()
        let rules = text.split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(
            rules == [
                #"SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ATTR{idVendor}=="0483", ATTR{idProduct}=="df11", MODE="0660", TAG+="uaccess""#,
                #"SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ATTR{idVendor}=="0483", ATTR{idProduct}=="0afb", MODE="0660", TAG+="uaccess""#,
                #"SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ATTR{idVendor}=="0483", ATTR{idProduct}=="5720", MODE="0660", TAG+="uaccess""#,
            ])
        #expect(!text.contains("0666"))
        #expect(!text.contains("GROUP="))
    }

    @Test func groupAddsGroupAndKeeps0660() throws {
        let rules = try UdevRules.text(group: "plugdev").split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(rules.count == 3)
        #expect(rules.allSatisfy { $0.contains(#"MODE="0660", GROUP="plugdev", TAG+="uaccess""#) })
    }

    @Test(arguments: ["", "plug dev", "x\",MODE=\"0666", "-rf", String(repeating: "a", count: 33)])
    func rejectsUnsafeGroupNames(_ group: String) {
        #expect(throws: UdevRules.Failure.self) { try UdevRules.text(group: group) }
    }

    @Test func installWritesTheRuleUnderRootWithoutReloading() throws {
        let root = try FakeRoot()
        var commands: [[String]] = []
        let written = try UdevRules.install(group: "dialout", root: root.path, effectiveUID: 1000) {
            commands.append($0); return 0
        }
        #expect(written == root.path + "/etc/udev/rules.d/60-stm32mp-flash.rules")
        #expect(try root.read("/etc/udev/rules.d/60-stm32mp-flash.rules") == UdevRules.text(group: "dialout"))
        #expect(!root.exists("/etc/udev/rules.d/.60-stm32mp-flash.rules.tmp"))
        #expect(commands.isEmpty)  // only the live system is reloaded

        // The probe then finds the rule it wrote.
        let rules = EnvironmentProbe.detect(root: root.path, user: UserIdentity(uid: 1000, gid: 1000, groups: []))
            .udevRules
        // One line for the DFU stages, one for U-Boot's fastboot gadget.
        #expect(rules.count == 2)
        #expect(rules.map { $0.covers(product: "df11") } == [true, false])
        #expect(rules.map { $0.covers(product: "0afb") } == [false, true])
        #expect(rules.allSatisfy { $0.grantsUaccess && !$0.uaccessTooLate })
    }

    @Test func installOnTheLiveSystemRefusesNonRootBeforeWriting() {
        var commands: [[String]] = []
        #expect(throws: UdevRules.Failure.self) {
            try UdevRules.install(root: "/", effectiveUID: 1000) {
                commands.append($0); return 0
            }
        }
        #expect(commands.isEmpty)
    }

    @Test func installFailsCleanlyWhenTheFolderCannotBeCreated() throws {
        let root = try FakeRoot()
        try root.write("/etc/udev", "a file where a folder should be")
        #expect(throws: UdevRules.Failure.self) { try UdevRules.install(root: root.path, effectiveUID: 0) }
        #expect(try root.read("/etc/udev") == "a file where a folder should be")
    }
}
