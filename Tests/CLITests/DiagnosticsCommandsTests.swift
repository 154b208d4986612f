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
