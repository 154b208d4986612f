import DfuSe
import USBModel

/// The `doctor` checklist: each host prerequisite for flashing, its state and its fix.
public struct DoctorCheck: Codable, Sendable, Hashable {
    public enum Status: String, Codable, Sendable, Hashable {
        case pass, warn, fail
    }

    /// Stable id (`udev-rule`, `device-permissions`, …) for scripts.
    public var id: String
    public var status: Status
    /// What was found, one line.
    public var summary: String
    /// Extra facts (one per line).
    public var details: [String]
    /// What to do when the status is not `pass`.
    public var fix: String?

    public init(id: String, status: Status, summary: String, details: [String] = [], fix: String? = nil) {
        self.id = id
        self.status = status
        self.summary = summary
        self.details = details
        self.fix = fix
    }
}

public enum Doctor {
    /// The checklist for an environment, in a fixed order.
    public static func checks(_ environment: HostEnvironment) -> [DoctorCheck] {
        [
            libusb(environment), boards(environment), devicePermissions(environment), udevRule(environment),
            udevDaemon(environment), virtualization(environment), kernelLog(environment),
        ] + (mcuBootloaders(environment).map { [$0] } ?? [])
    }

    /// STM32 MCU DFU devices among the `0483:df11` ones (they share the MP stages' identity), with
    /// the troubleshooting sections the tool cannot check over DFU (H5 OBK, H7 supply); nil when
    /// there is none.
    static func mcuBootloaders(_ environment: HostEnvironment) -> DoctorCheck? {
        let found = environment.boards.compactMap { board -> (SysfsBoard, MCUKind)? in
            let identified = board.interfaceName.flatMap { name in
                MCUKind.classify(
                    vendorID: board.vendorID, productID: board.productID, bcdDevice: board.bcdDevice ?? 0,
                    product: board.product, alternates: [name])
            }
            return
                (identified
                ?? MCUKind.fromIdentity(
                    vendorID: board.vendorID, productID: board.productID, bcdDevice: board.bcdDevice ?? 0,
                    product: board.product)).map { (board, $0) }
        }
        guard !found.isEmpty else { return nil }
        var details: [String] = []
        for (board, kind) in found {
            var line =
                "\(board.port): \(kind.isApplication ? "an application's DFU (not ST's bootloader, docs/troubleshooting.md#mcu-app-dfu)" : "STM32 MCU system bootloader") \"\(board.product ?? "")\""
            if case .systemBootloader(_, let version) = kind, board.bcdDevice != nil {
                line += ", bootloader v\(MCUKind.versionText(version))"
            }
            // The sysfs interface string is the active alternate's name: alternate 0, the flash map.
            if let id = board.interfaceName.flatMap({ MCUDeviceID.from(alternates: [$0]) }) {
                line += ", device ID \(id) (\(id.series), from the memory map)"
            }
            details.append(line)
            if !kind.isApplication, MCUKind.isBootloaderProduct(board.product),
                board.product?.hasPrefix("DFU in") == true
            {
                details.append(
                    "  an STM32H5 or H7 bootloader reports this name: H5 OBK provisioning with USB attached → docs/troubleshooting.md#h5-obk-with-usb; H7 lock-up after a wrong SMPS/LDO setting → docs/troubleshooting.md#h7-smps-ldo"
                )
            }
        }
        return DoctorCheck(
            id: "mcu-bootloaders", status: .pass,
            summary:
                "\(found.count) STM32 MCU DFU device\(found.count == 1 ? "" : "s") (not STM32MP): use `stm32mp-flash mcu …` (docs/mcu.md)",
            details: details)
    }

    /// `doctor` exits 1 when any check fails.
    public static func exitCode(_ checks: [DoctorCheck]) -> Int32 {
        checks.contains { $0.status == .fail } ? 1 : 0
    }

    /// `[PASS] summary` lines with details and fixes, for a terminal.
    public static func render(_ checks: [DoctorCheck]) -> String {
        var lines: [String] = []
        for check in checks {
            lines.append("[\(check.status.rawValue.uppercased())] \(check.id): \(check.summary)")
            lines += check.details.map { "       " + $0 }
            if let fix = check.fix, check.status != .pass { lines.append("       fix: " + fix) }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func libusb(_ environment: HostEnvironment) -> DoctorCheck {
        environment.libusbAvailable
            ? DoctorCheck(id: "libusb", status: .pass, summary: "libusb-1.0 is available")
            : DoctorCheck(
                id: "libusb", status: .fail, summary: "libusb-1.0 (libusb-1.0.so.0) was not found",
                fix: "install it: `sudo apt install libusb-1.0-0` (Debian/Ubuntu), `sudo dnf install libusb1` (Fedora)")
    }

    static func boards(_ environment: HostEnvironment) -> DoctorCheck {
        let boards = environment.boards
        guard !boards.isEmpty else {
            return DoctorCheck(
                id: "boards", status: .warn, summary: "no STM32MP board (0483:df11/0afb/5720) is connected",
                fix: "set the boot pins to USB boot, connect the USB OTG port with a data cable and reset the board"
                    + (environment.isPassthrough
                        ? "; in a VM or container also check the passthrough (`stm32mp-flash vm-filter`)" : ""))
        }
        let slow = boards.filter { $0.speed == .full }
        return DoctorCheck(
            id: "boards", status: slow.isEmpty ? .pass : .warn,
            summary: "\(boards.count) STM32MP device\(boards.count == 1 ? "" : "s") connected",
            details: boards.map(\.summary),
            fix: slow.isEmpty
                ? nil : "a board runs at full speed (12 Mbit/s): plug it into a USB 2 high-speed port without hubs")
    }

    static func devicePermissions(_ environment: HostEnvironment) -> DoctorCheck {
        let blocked = environment.boards.filter { !$0.userCanOpen }
        if environment.boards.isEmpty {
            return DoctorCheck(id: "device-permissions", status: .pass, summary: "no board connected, nothing to open")
        }
        guard !blocked.isEmpty else {
            return DoctorCheck(
                id: "device-permissions", status: .pass,
                summary: "uid \(environment.user.uid) can open every board's device node")
        }
        let missingNodes = blocked.filter { $0.nodeMode == nil }
        let fix =
            missingNodes.isEmpty
            ? "install the udev rule (`sudo stm32mp-flash udev-rules --install`) and re-plug the board"
            : "the device node is missing: in a container, bind-mount /dev/bus/usb (`stm32mp-flash vm-filter --for docker`)"
        return DoctorCheck(
            id: "device-permissions", status: .fail,
            summary:
                "uid \(environment.user.uid) cannot open \(blocked.count) board node\(blocked.count == 1 ? "" : "s")",
            details: blocked.map(\.summary), fix: fix)
    }

    static func udevRule(_ environment: HostEnvironment) -> DoctorCheck {
        let rules = environment.udevRules.filter { $0.covers(product: "df11") }
        let details = environment.udevRules.map { "\($0.file):\($0.line): \($0.text)" }
        let install = "`sudo stm32mp-flash udev-rules --install`"
        if rules.isEmpty {
            if environment.container != nil {
                return DoctorCheck(
                    id: "udev-rule", status: .warn, summary: "no udev rule for 0483:df11 inside this container",
                    fix: "udev rules belong on the host: run \(install) there")
            }
            // Root opens anything, so a missing rule only matters for other users.
            return DoctorCheck(
                id: "udev-rule", status: environment.user.uid == 0 ? .warn : .fail,
                summary: "no udev rule grants access to 0483:df11",
                fix: "install one: \(install)")
        }
        if let late = rules.first(where: \.uaccessTooLate) {
            return DoctorCheck(
                id: "udev-rule", status: .warn,
                summary: "\(late.file) sets only uaccess but is numbered 73 or higher, after uaccess is applied",
                details: details, fix: "rename it below 73 or use \(install)")
        }
        if rules.contains(where: \.isWorldWritable) {
            return DoctorCheck(
                id: "udev-rule", status: .warn, summary: "a rule makes the board world-writable (0666)",
                details: details,
                fix: "prefer MODE=\"0660\" with TAG+=\"uaccess\" or a group: \(install)")
        }
        // U-Boot's fastboot gadget is another PID: without it `--transport fastboot` loses the board
        // at the hand-off (libusb cannot open 0483:0afb).
        guard environment.udevRules.contains(where: { $0.covers(product: "0afb") }) || environment.user.uid == 0 else {
            return DoctorCheck(
                id: "udev-rule", status: .warn,
                summary: "the udev rules cover 0483:df11 but not 0483:0afb (U-Boot's fastboot)",
                details: details,
                fix: "`flash --transport fastboot|auto` could not open the board after the hand-off: \(install)")
        }
        return DoctorCheck(
            id: "udev-rule", status: .pass, summary: "a udev rule covers 0483:df11 and 0483:0afb", details: details)
    }

    static func udevDaemon(_ environment: HostEnvironment) -> DoctorCheck {
        if environment.udevRunning { return DoctorCheck(id: "udevd", status: .pass, summary: "udevd is running") }
        let fix: String
        if environment.wsl != nil {
            fix =
                "enable systemd in WSL (`[boot] systemd=true` in /etc/wsl.conf, then `wsl --shutdown`) or run `sudo service udev restart` after each attach"
        } else if environment.container != nil {
            fix =
                "normal in a container: mount the host's /run/udev read-only (`-v /run/udev:/run/udev:ro`) and set permissions on the host"
        } else {
            fix = "start it: `sudo systemctl start systemd-udevd`"
        }
        return DoctorCheck(
            id: "udevd", status: .warn,
            summary: "udevd is not running (/run/udev/control is missing), so rules are not applied", fix: fix)
    }

    static func virtualization(_ environment: HostEnvironment) -> DoctorCheck {
        var layers: [String] = []
        if let container = environment.container { layers.append("a \(container.rawValue) container") }
        if let wsl = environment.wsl { layers.append(wsl == .wsl1 ? "WSL 1" : "WSL 2") }
        if let hypervisor = environment.hypervisor {
            layers.append(
                hypervisor == .unknown ? "a VM (hypervisor not identified)" : "a \(hypervisor.displayName) VM")
        }
        guard !layers.isEmpty else {
            return DoctorCheck(id: "virtualization", status: .pass, summary: "running directly on the host")
        }
        if environment.wsl == .wsl1 {
            return DoctorCheck(
                id: "virtualization", status: .fail, summary: "running in WSL 1, which has no USB access",
                details: environment.detectionEvidence,
                fix: "convert the distribution to WSL 2 (`wsl --set-version <distro> 2`) and use usbipd-win")
        }
        let targets = environment.passthroughTargets
        let fix =
            targets.isEmpty
            ? "\(environment.hypervisor?.displayName ?? "this hypervisor") has no USB passthrough recipe here; run stm32mp-flash on the host, or pass USB through usbip"
            : "the board re-enumerates at every stage, so the passthrough must match VID:PID or the port: "
                + targets.map { "`stm32mp-flash vm-filter --for \($0.rawValue)`" }.joined(separator: " or ")
        return DoctorCheck(
            id: "virtualization", status: .warn, summary: "running in " + layers.joined(separator: " inside "),
            details: environment.detectionEvidence, fix: fix)
    }

    static func kernelLog(_ environment: HostEnvironment) -> DoctorCheck {
        environment.kernelLogReadable
            ? DoctorCheck(
                id: "kernel-log", status: .pass,
                summary: "the kernel log is readable (USB enumeration errors can be shown)")
            : DoctorCheck(
                id: "kernel-log", status: .warn,
                summary: "the kernel log is not readable, so failed enumerations (-71/-110) cannot be shown",
                fix: "run with sudo, or allow it: `sudo sysctl kernel.dmesg_restrict=0`")
    }
}
