import Diagnostics
import Foundation
import Testing
import USBModel

@Suite("EnvironmentProbe on fake roots")
struct EnvironmentProbeTests {
    /// A user who is neither the owner of the fake nodes nor root, in `groups`.
    func otherUser(groups: [UInt32] = []) -> UserIdentity {
        UserIdentity(uid: getuid() &+ 4242, gid: 4242, groups: groups)
    }

    @Test func bareMetalHasNoLayers() throws {
        let root = try FakeRoot()
        try root.write("/proc/sys/kernel/osrelease", "6.8.0-45-generic\n")
        try root.write("/sys/class/dmi/id/sys_vendor", "Dell Inc.\n")
        try root.write("/sys/class/dmi/id/product_name", "Precision 5570\n")
        try root.write("/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme de pse sse sse2\n")
        let environment = EnvironmentProbe.detect(root: root.path, user: otherUser())
        #expect(environment.hypervisor == nil)
        #expect(environment.wsl == nil)
        #expect(environment.container == nil)
        #expect(!environment.isPassthrough)
        #expect(environment.passthroughTargets.isEmpty)
    }

    @Test(arguments: [
        ("product_name", "VirtualBox", Hypervisor.oracle),
        ("sys_vendor", "innotek GmbH", .oracle),
        ("sys_vendor", "VMware, Inc.", .vmware),
        ("product_name", "VMware7,1", .vmware),
        ("sys_vendor", "QEMU", .qemu),
        ("product_name", "KVM", .kvm),
        ("sys_vendor", "Xen", .xen),
        ("sys_vendor", "Parallels Software International Inc.", .parallels),
        ("product_name", "Google Compute Engine", .google),
        ("sys_vendor", "Apple Virtualization", .apple),
    ])
    func dmiNamesTheHypervisor(field: String, value: String, expected: Hypervisor) throws {
        let root = try FakeRoot()
        try root.write("/sys/class/dmi/id/" + field, value + "\n")
        let environment = EnvironmentProbe.detect(root: root.path, user: otherUser())
        #expect(environment.hypervisor == expected)
        #expect(environment.detectionEvidence.contains { $0.contains(value) })
    }

    @Test func hyperVFromMicrosoftVirtualMachine() throws {
        let root = try FakeRoot()
        try root.write("/sys/class/dmi/id/sys_vendor", "Microsoft Corporation\n")
        try root.write("/sys/class/dmi/id/product_name", "Virtual Machine\n")
        #expect(EnvironmentProbe.detect(root: root.path, user: otherUser()).hypervisor == .microsoft)
    }

    @Test func cpuHypervisorFlagWithoutDMI() throws {
        let root = try FakeRoot()
        try root.write("/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu sse2 hypervisor lahf_lm\n")
        let environment = EnvironmentProbe.detect(root: root.path, user: otherUser())
        #expect(environment.hypervisor == .unknown)
        #expect(environment.isPassthrough)
    }

    @Test func xenFromSysHypervisorType() throws {
        let root = try FakeRoot()
        try root.write("/sys/hypervisor/type", "xen\n")
        #expect(EnvironmentProbe.detect(root: root.path, user: otherUser()).hypervisor == .xen)
    }

    @Test func kvmGuestOffersLibvirtProxmoxAndQemu() throws {
        let root = try FakeRoot()
        try root.write("/sys/class/dmi/id/sys_vendor", "QEMU\n")
        #expect(
            EnvironmentProbe.detect(root: root.path, user: otherUser()).passthroughTargets == [
                .libvirt, .proxmox, .qemu,
            ])
    }

    @Test func wsl2FromOsRelease() throws {
        let root = try FakeRoot()
        try root.write("/proc/sys/kernel/osrelease", "5.15.153.1-microsoft-standard-WSL2\n")
        try root.write("/sys/class/dmi/id/sys_vendor", "Microsoft Corporation\n")
        let environment = EnvironmentProbe.detect(root: root.path, user: otherUser())
        #expect(environment.wsl == .wsl2)
        #expect(environment.hypervisor == nil)  // WSL wins: USB arrives through usbipd, not Hyper-V
        #expect(environment.passthroughTargets == [.wsl])
    }

    @Test func wsl1FromOsRelease() throws {
        let root = try FakeRoot()
        try root.write("/proc/sys/kernel/osrelease", "4.4.0-19041-Microsoft\n")
        let environment = EnvironmentProbe.detect(root: root.path, user: otherUser())
        #expect(environment.wsl == .wsl1)
        #expect(!environment.isPassthrough)
    }

    @Test func dockerFromDockerenv() throws {
        let root = try FakeRoot()
        try root.write("/.dockerenv", "")
        let environment = EnvironmentProbe.detect(root: root.path, user: otherUser())
        #expect(environment.container == .docker)
        #expect(environment.passthroughTargets == [.docker])
    }

    @Test func podmanFromContainerenv() throws {
        let root = try FakeRoot()
        try root.write("/run/.containerenv", "engine=\"podman-4.9.3\"\n")
        #expect(EnvironmentProbe.detect(root: root.path, user: otherUser()).container == .podman)
    }

    @Test func lxcFromPid1Environment() throws {
        let root = try FakeRoot()
        try root.write("/proc/1/environ", Data("PATH=/usr/bin\0container=lxc\0TERM=linux\0".utf8))
        #expect(EnvironmentProbe.detect(root: root.path, user: otherUser()).container == .lxc)
    }

    @Test func genericOCIEnvironmentDefersToMarkerFiles() throws {
        let root = try FakeRoot()
        try root.write("/proc/1/environ", Data("container=oci\0".utf8))
        #expect(EnvironmentProbe.detect(root: root.path, user: otherUser()).container == .other)
        try root.write("/run/.containerenv", "")
        #expect(EnvironmentProbe.detect(root: root.path, user: otherUser()).container == .podman)
    }

    @Test func systemdContainerFileWinsOverDockerenv() throws {
        let root = try FakeRoot()
        try root.write("/run/systemd/container", "systemd-nspawn\n")
        try root.write("/.dockerenv", "")
        #expect(EnvironmentProbe.detect(root: root.path, user: otherUser()).container == .systemdNspawn)
    }

    @Test func containerInsideAVMListsContainerFirst() throws {
        let root = try FakeRoot()
        try root.write("/.dockerenv", "")
        try root.write("/sys/class/dmi/id/product_name", "VirtualBox\n")
        #expect(
            EnvironmentProbe.detect(root: root.path, user: otherUser()).passthroughTargets == [.docker, .virtualbox])
    }

    @Test func udevRunningFollowsControlSocket() throws {
        let root = try FakeRoot()
        #expect(!EnvironmentProbe.detect(root: root.path, user: otherUser()).udevRunning)
        try root.write("/run/udev/control", "")
        #expect(EnvironmentProbe.detect(root: root.path, user: otherUser()).udevRunning)
    }

    @Test func findsRulesForTheBoardInEveryFolder() throws {
        let root = try FakeRoot()
        try root.write(
            "/etc/udev/rules.d/50-usb-conf.rules",
            "# ST rules\nSUBSYSTEMS==\"usb\", ATTRS{idVendor}==\"0483\", ATTRS{idProduct}==\"0afb\", GROUP=\"users\", MODE=\"0666\"\nSUBSYSTEMS==\"usb\", ATTRS{idVendor}==\"0483\", ATTRS{idProduct}==\"df11\", GROUP=\"users\", MODE=\"0666\"\n"
        )
        try root.write(
            "/usr/lib/udev/rules.d/80-late.rules",
            "SUBSYSTEM==\"usb\", ATTR{idVendor}==\"0483\", ATTR{idProduct}==\"df11|0afb\", TAG+=\"uaccess\"\n")
        try root.write(
            "/lib/udev/rules.d/69-other.rules",
            "SUBSYSTEM==\"usb\", ATTR{idVendor}==\"1d6b\", ATTR{idProduct}==\"df11\", MODE=\"0660\"\n")
        try root.write("/etc/udev/rules.d/README", "0483 df11 idProduct\n")
        let rules = EnvironmentProbe.detect(root: root.path, user: otherUser()).udevRules
        // The fastboot PID's line counts too: the fast path needs it (doctor checks both).
        #expect(
            rules.map(\.file) == [
                "/etc/udev/rules.d/50-usb-conf.rules", "/etc/udev/rules.d/50-usb-conf.rules",
                "/usr/lib/udev/rules.d/80-late.rules",
            ])
        #expect(rules.map(\.line) == [2, 3, 1])
        #expect(rules[0].covers(product: "0afb") && !rules[0].covers(product: "df11"))
        #expect(rules[1].isWorldWritable)
        #expect(!rules[1].uaccessTooLate)
        #expect(rules[2].uaccessTooLate)
        #expect(rules[2].covers(product: "df11") && rules[2].covers(product: "0afb"))
    }

    @Test func linkedRuleFolderIsReadOnce() throws {
        let root = try FakeRoot()
        try root.write(
            "/usr/lib/udev/rules.d/60-dfu-util.rules",
            "SUBSYSTEM==\"usb\", ATTRS{idVendor}==\"0483\", ATTRS{idProduct}==\"df11\", TAG+=\"uaccess\"\n")
        try FileManager.default.createSymbolicLink(atPath: root.path + "/lib", withDestinationPath: "usr/lib")
        let rules = EnvironmentProbe.detect(root: root.path, user: otherUser()).udevRules
        #expect(rules.map(\.file) == ["/usr/lib/udev/rules.d/60-dfu-util.rules"])
    }

    @Test func noRulesWhenFoldersAreEmpty() throws {
        let root = try FakeRoot()
        #expect(EnvironmentProbe.detect(root: root.path, user: otherUser()).udevRules.isEmpty)
    }

    @Test func listsSTDevicesWithNodesAndPermissions() throws {
        let root = try FakeRoot()
        let ownGroup = getgid()
        try root.write("/etc/group", "root:x:0:\nplugdev:x:\(ownGroup):alice\n")
        try root.addUSBDevice(port: "1-2.3", busnum: 1, devnum: 7, nodeMode: 0o660)
        try root.addUSBDevice(
            port: "3-1", product: "0afb", busnum: 3, devnum: 12, productString: nil, speed: "12", nodeMode: 0o600)
        try root.addUSBDevice(port: "2-4", vendor: "046d", product: "c52b", busnum: 2, devnum: 3)
        try root.write("/sys/bus/usb/devices/1-2.3:1.0/bInterfaceClass", "fe\n")

        let inGroup = EnvironmentProbe.detect(root: root.path, user: otherUser(groups: [ownGroup]))
        #expect(inGroup.boards.map(\.port.description) == ["1-2.3", "3-1"])
        let dfu = try #require(inGroup.boards.first)
        #expect(dfu.node == "/dev/bus/usb/001/007")
        #expect(dfu.nodeMode == 0o660)
        #expect(dfu.nodeGroup == "plugdev")
        #expect(dfu.product == "DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000")
        #expect(dfu.userCanOpen)
        let fastboot = inGroup.boards[1]
        #expect(fastboot.productID == 0x0AFB)
        #expect(fastboot.speed == .full)
        #expect(!fastboot.userCanOpen)  // 0600 and not the owner

        let outsider = EnvironmentProbe.detect(root: root.path, user: otherUser())
        #expect(outsider.boards.allSatisfy { !$0.userCanOpen })
        let owner = EnvironmentProbe.detect(
            root: root.path, user: UserIdentity(uid: getuid(), gid: getgid(), groups: []))
        #expect(owner.boards.allSatisfy { $0.userCanOpen })
    }

    @Test func missingNodeCannotBeOpened() throws {
        let root = try FakeRoot()
        try root.addUSBDevice(port: "1-1", busnum: 1, devnum: 4, nodeMode: nil)
        let board = try #require(
            EnvironmentProbe.detect(root: root.path, user: otherUser(groups: [getgid()])).boards.first)
        #expect(board.nodeMode == nil)
        #expect(!board.userCanOpen)
    }

    @Test func libusbFoundByFileInFakeRoot() throws {
        let root = try FakeRoot()
        #expect(!EnvironmentProbe.detect(root: root.path, user: otherUser()).libusbAvailable)
        try root.write("/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0", "")
        #expect(EnvironmentProbe.detect(root: root.path, user: otherUser()).libusbAvailable)
    }

    @Test func kernelLogReadableOnlyWhenKmsgExists() throws {
        let root = try FakeRoot()
        #expect(!EnvironmentProbe.detect(root: root.path, user: otherUser()).kernelLogReadable)
        try root.write("/dev/kmsg", "6,1,100,-;hello\n")
        #expect(EnvironmentProbe.detect(root: root.path, user: otherUser()).kernelLogReadable)
    }

    @Test func environmentRoundTripsThroughJSON() throws {
        let root = try FakeRoot()
        try root.write("/.dockerenv", "")
        try root.addUSBDevice(port: "1-2", busnum: 1, devnum: 5)
        let environment = EnvironmentProbe.detect(root: root.path, user: otherUser())
        let decoded = try JSONDecoder().decode(HostEnvironment.self, from: JSONEncoder().encode(environment))
        #expect(decoded == environment)
    }
}
