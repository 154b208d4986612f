import FlashCLI
import Foundation
import TestSupport
import Testing

/// `doctor`, `vm-filter` and `udev-rules` through the real command line (exit statuses, files).
@Suite("doctor, vm-filter, udev-rules")
struct DiagnosticsCommandsTests {
    let root: TemporaryDirectory

    init() throws { root = try TemporaryDirectory(prefix: "cli-diag") }

    func write(_ path: String, _ content: String) throws {
        let full = root.path + path
        try FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try content.write(toFile: full, atomically: true, encoding: .utf8)
    }

    @Test func doctorFailsWithoutLibusbAndPassesOnAHealthyRoot() async throws {
        #expect(await RootCommand.runMain(["doctor", "--root", root.path]) == 1)
        try write("/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0", "")
        try write("/run/udev/control", "")
        try write("/dev/kmsg", "")
        #expect(await RootCommand.runMain(["udev-rules", "--install", "--root", root.path]) == 0)
        #expect(await RootCommand.runMain(["doctor", "--json", "--root", root.path]) == 0)
    }

    @Test func udevRulesInstallWritesTheFileWithTheGroup() async throws {
        #expect(await RootCommand.runMain(["udev-rules", "--install", "--group", "plugdev", "--root", root.path]) == 0)
        let text = try String(contentsOfFile: root.path + "/etc/udev/rules.d/60-stm32mp-flash.rules", encoding: .utf8)
        #expect(text.contains(#"ATTR{idProduct}=="df11", MODE="0660", GROUP="plugdev", TAG+="uaccess""#))
    }

    /// Issue 9 item 18: the folders are created and the rule is 0644 (folders 0755) even
    /// under a strict umask, so udevd and `doctor` can read it.
    @Test func udevRulesInstallIgnoresTheUmask() throws {
        let target = root.path + "/new/root"
        let tool = try BuiltProducts.path("stm32mp-flash")
        let result = try ExternalTool(path: "/bin/sh").run([
            "-c", "umask 077 && exec \"$0\" udev-rules --install --root \"$1\"", tool, target,
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let rule = target + "/etc/udev/rules.d/60-stm32mp-flash.rules"
        let mode = try FileManager.default.attributesOfItem(atPath: rule)[.posixPermissions] as? Int
        #expect(mode == 0o644)
        let folder = try FileManager.default.attributesOfItem(atPath: target + "/etc/udev")[.posixPermissions] as? Int
        #expect(folder == 0o755)
    }

    @Test func udevRulesRejectsABadGroupWithStatus1() async {
        #expect(await RootCommand.runMain(["udev-rules", "--group", "a b"]) == 1)
    }

    @Test func vmFilterNeedsAKnownTargetAndPort() async throws {
        #expect(await RootCommand.runMain(["vm-filter", "--for", "hyperv"]) == 2)
        #expect(await RootCommand.runMain(["vm-filter", "--for", "qemu", "--port", "3:1"]) == 2)
        #expect(await RootCommand.runMain(["vm-filter", "--for", "qemu", "--port", "3-1.2"]) == 0)
    }

    @Test func vmFilterDetectsTheGuestOrAsksForTarget() async throws {
        #expect(await RootCommand.runMain(["vm-filter", "--root", root.path]) == 2)
        try write("/sys/class/dmi/id/product_name", "VirtualBox\n")
        #expect(await RootCommand.runMain(["vm-filter", "--root", root.path, "--vm", "dev"]) == 0)
    }
}
