import Diagnostics
import Foundation
import Testing
import USBModel

@Suite("Doctor checklist")
struct DoctorTests {
    let user = UserIdentity(uid: getuid() &+ 4242, gid: 4242, groups: [getgid()])

    func status(_ checks: [DoctorCheck], _ id: String) -> DoctorCheck.Status? {
        checks.first { $0.id == id }?.status
    }

    /// A healthy desktop: rule, udevd, readable log, libusb, board openable.
    func healthyRoot() throws -> FakeRoot {
        let root = try FakeRoot()
        try root.write("/run/udev/control", "")
        try root.write("/dev/kmsg", "6,1,1,-;usb 1-2: New USB device found, idVendor=0483, idProduct=df11\n")
        try root.write("/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0", "")
        try root.write("/etc/udev/rules.d/60-stm32mp-flash.rules", try UdevRules.text())
        try root.addUSBDevice(port: "1-2", busnum: 1, devnum: 9, nodeMode: 0o660)
        return root
    }

    @Test func healthyHostPassesEverything() throws {
        let root = try healthyRoot()
        let checks = Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user))
        #expect(
            checks.map(\.id) == [
                "libusb", "boards", "device-permissions", "udev-rule", "udevd", "virtualization", "kernel-log",
            ])
        #expect(checks.allSatisfy { $0.status == .pass })
        #expect(Doctor.exitCode(checks) == 0)
        #expect(Doctor.render(checks).hasPrefix("[PASS] libusb: libusb-1.0 is available\n"))
    }

    @Test func mcuBootloadersAreToldApartAndH5H7SectionsLinked() throws {
        let root = try healthyRoot()
        try root.addUSBDevice(port: "1-3", busnum: 1, devnum: 10, productString: "DFU in FS Mode", speed: "12")
        try root.addUSBDevice(
            port: "1-4", busnum: 1, devnum: 11, productString: "STM32 DownLoad Firmware Update", speed: "12")
        let checks = Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user))
        let mcu = try #require(checks.first { $0.id == "mcu-bootloaders" })
        #expect(mcu.summary.hasPrefix("2 STM32 MCU DFU devices (not STM32MP)"))
        #expect(mcu.details.contains { $0.hasPrefix("1-3: STM32 MCU system bootloader") })
        #expect(mcu.details.contains { $0.contains("#h5-obk-with-usb") && $0.contains("#h7-smps-ldo") })
        #expect(mcu.details.contains { $0.hasPrefix("1-4: an application's DFU") && $0.contains("#mcu-app-dfu") })
        // The MP15 ROM of the healthy root is no MCU.
        #expect(!mcu.details.contains { $0.hasPrefix("1-2") })
    }

    @Test("doctor names an MCU bootloader's version and device ID from sysfs (bcdDevice, interface string)")
    func mcuDeviceIDFromSysfs() throws {
        let root = try healthyRoot()
        try root.addUSBDevice(port: "1-5", busnum: 1, devnum: 12, productString: "STM32  BOOTLOADER", speed: "12")
        try root.write("/sys/bus/usb/devices/1-5/bcdDevice", "2200\n")
        try root.write(
            "/sys/bus/usb/devices/1-5/1-5:1.0/interface", "@Internal Flash  /0x08000000/04*032Kg,01*128Kg,03*256Kg\n")
        // An H7 (a series the tool recognises by its map but does not model).
        try root.addUSBDevice(port: "1-6", busnum: 1, devnum: 13, productString: "DFU in FS Mode", speed: "12")
        try root.write("/sys/bus/usb/devices/1-6/bcdDevice", "0200\n")
        try root.write("/sys/bus/usb/devices/1-6/1-6:1.0/interface", "@Internal Flash   /0x08000000/16*128Kg\n")
        let environment = EnvironmentProbe.detect(root: root.path, user: user)
        #expect(environment.boards.first { $0.port.description == "1-5" }?.bcdDevice == 0x2200)
        let mcu = try #require(Doctor.checks(environment).first { $0.id == "mcu-bootloaders" })
        #expect(
            mcu.details.contains {
                $0.hasPrefix("1-5: STM32 MCU system bootloader \"STM32  BOOTLOADER\", bootloader v2.2")
                    && $0.contains("device ID 0x449 (STM32F74x/75x, from the memory map)")
            }, "\(mcu.details)")
        #expect(mcu.details.contains { $0.hasPrefix("1-6:") && $0.contains("device ID 0x450 (STM32H74x/75x") })
        let json = String(decoding: try JSONEncoder().encode(environment), as: UTF8.self)
        #expect(json.contains("\"interfaceName\":\"@Internal Flash   \\/0x08000000\\/16*128Kg\""), "\(json)")
    }

    @Test func missingRuleAndUnopenableNodeFail() throws {
        let root = try healthyRoot()
        try FileManager.default.removeItem(atPath: root.path + "/etc/udev/rules.d/60-stm32mp-flash.rules")
        let outsider = UserIdentity(uid: getuid() &+ 4242, gid: 4242, groups: [])
        let checks = Doctor.checks(EnvironmentProbe.detect(root: root.path, user: outsider))
        #expect(status(checks, "udev-rule") == .fail)
        #expect(status(checks, "device-permissions") == .fail)
        #expect(Doctor.exitCode(checks) == 1)
        let rendered = Doctor.render(checks)
        #expect(rendered.contains("fix: install one: `sudo stm32mp-flash udev-rules --install`"))
    }

    @Test func worldWritableAndLateUaccessRulesWarn() throws {
        let root = try healthyRoot()
        try FileManager.default.removeItem(atPath: root.path + "/etc/udev/rules.d/60-stm32mp-flash.rules")
        try root.write(
            "/etc/udev/rules.d/50-usb-conf.rules",
            #"SUBSYSTEMS=="usb", ATTRS{idVendor}=="0483", ATTRS{idProduct}=="df11", GROUP="users", MODE="0666""# + "\n")
        #expect(status(Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user)), "udev-rule") == .warn)
        try FileManager.default.removeItem(atPath: root.path + "/etc/udev/rules.d/50-usb-conf.rules")
        try root.write(
            "/etc/udev/rules.d/99-late.rules",
            #"SUBSYSTEM=="usb", ATTR{idVendor}=="0483", ATTR{idProduct}=="df11", TAG+="uaccess""# + "\n")
        let checks = Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user))
        #expect(status(checks, "udev-rule") == .warn)
        #expect(checks.first { $0.id == "udev-rule" }?.summary.contains("99-late.rules") == true)
    }

    /// A rule written for DFU only (as ST's and older tools install) lets the DFU stages open but
    /// not U-Boot's fastboot gadget: the fast path would lose the board at the hand-off.
    @Test func ruleWithoutTheFastbootPIDWarnsAndNamesIt() throws {
        let root = try healthyRoot()
        try FileManager.default.removeItem(atPath: root.path + "/etc/udev/rules.d/60-stm32mp-flash.rules")
        try root.write(
            "/etc/udev/rules.d/60-dfu.rules",
            #"SUBSYSTEM=="usb", ATTR{idVendor}=="0483", ATTR{idProduct}=="df11", MODE="0660", TAG+="uaccess""# + "\n")
        var check = try #require(
            Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user)).first { $0.id == "udev-rule" })
        #expect(check.status == .warn)
        #expect(check.summary == "the udev rules cover 0483:df11 but not 0483:0afb (U-Boot's fastboot)")
        #expect(check.fix?.contains("udev-rules --install") == true)
        // A second line for 0afb (as `udev-rules` writes) makes it pass.
        try root.write(
            "/etc/udev/rules.d/61-fastboot.rules",
            #"SUBSYSTEM=="usb", ATTR{idVendor}=="0483", ATTR{idProduct}=="0afb", MODE="0660", TAG+="uaccess""# + "\n")
        check = try #require(
            Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user)).first { $0.id == "udev-rule" })
        #expect(check.status == .pass)
        #expect(check.details.count == 2)
    }

    @Test func noBoardAndNoUdevdWarnButDoNotFail() throws {
        let root = try FakeRoot()
        try root.write("/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0", "")
        try root.write("/dev/kmsg", "")
        try root.write("/etc/udev/rules.d/60-stm32mp-flash.rules", try UdevRules.text())
        let checks = Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user))
        #expect(status(checks, "boards") == .warn)
        #expect(status(checks, "udevd") == .warn)
        #expect(status(checks, "device-permissions") == .pass)
        #expect(Doctor.exitCode(checks) == 0)
    }

    @Test func missingLibusbFails() throws {
        let root = try healthyRoot()
        try FileManager.default.removeItem(atPath: root.path + "/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0")
        let checks = Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user))
        #expect(status(checks, "libusb") == .fail)
        #expect(Doctor.exitCode(checks) == 1)
    }

    @Test func virtualBoxGuestPointsAtTheFilterRecipe() throws {
        let root = try healthyRoot()
        try root.write("/sys/class/dmi/id/product_name", "VirtualBox\n")
        let check = try #require(
            Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user)).first { $0.id == "virtualization" })
        #expect(check.status == .warn)
        #expect(check.summary == "running in a VirtualBox VM")
        #expect(check.fix?.contains("`stm32mp-flash vm-filter --for virtualbox`") == true)
    }

    @Test func wsl1FailsBecauseItHasNoUSB() throws {
        let root = try healthyRoot()
        try root.write("/proc/sys/kernel/osrelease", "4.4.0-19041-Microsoft\n")
        let checks = Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user))
        #expect(status(checks, "virtualization") == .fail)
    }

    @Test func containerWithoutDeviceNodesExplainsTheBindMount() throws {
        let root = try FakeRoot()
        try root.write("/.dockerenv", "")
        try root.addUSBDevice(port: "1-2", busnum: 1, devnum: 9, nodeMode: nil)
        let checks = Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user))
        let permissions = try #require(checks.first { $0.id == "device-permissions" })
        #expect(permissions.status == .fail)
        #expect(permissions.fix?.contains("bind-mount /dev/bus/usb") == true)
        #expect(status(checks, "udev-rule") == .warn)  // rules belong on the host
        #expect(checks.first { $0.id == "virtualization" }?.summary == "running in a docker container")
    }

    @Test func fullSpeedBoardWarns() throws {
        let root = try healthyRoot()
        try root.addUSBDevice(port: "1-3", busnum: 1, devnum: 10, speed: "12", nodeMode: 0o660)
        #expect(status(Doctor.checks(EnvironmentProbe.detect(root: root.path, user: user)), "boards") == .warn)
    }
}
