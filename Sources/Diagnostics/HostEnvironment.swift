public import USBModel

/// What the host looks like from where the tool runs: the facts that decide whether an STM32MP
/// board can be seen and opened at every stage (VM or container layers, udev, rules, nodes).
public struct HostEnvironment: Codable, Sendable, Hashable {
    /// The hypervisor of the VM we run in (nil on bare metal or when nothing says so).
    public var hypervisor: Hypervisor?
    /// WSL version (WSL 2 is also a Hyper-V VM, but USB reaches it through usbipd-win).
    public var wsl: WSLVersion?
    /// The container we run in, if any.
    public var container: ContainerKind?
    /// Files and values that led to the three answers above, for the user to check.
    public var detectionEvidence: [String]
    /// `/run/udev/control` exists: udevd runs, so rules and `uaccess` are applied.
    public var udevRunning: Bool
    /// Rule lines that match 0483:df11 or 0483:0afb, from every udev rules folder.
    public var udevRules: [InstalledUdevRule]
    /// ST devices (0483:df11, 0afb, 5720) present in sysfs, with their device nodes.
    public var boards: [SysfsBoard]
    /// The kernel log (`/dev/kmsg`) can be read, so USB enumeration errors can be shown.
    public var kernelLogReadable: Bool
    /// libusb-1.0 can be found (the live system: `dlopen`; a fake root: the library file).
    public var libusbAvailable: Bool
    /// The user the permission answers are for.
    public var user: UserIdentity

    public init(
        hypervisor: Hypervisor? = nil, wsl: WSLVersion? = nil, container: ContainerKind? = nil,
        detectionEvidence: [String] = [], udevRunning: Bool = true, udevRules: [InstalledUdevRule] = [],
        boards: [SysfsBoard] = [], kernelLogReadable: Bool = true, libusbAvailable: Bool = true,
        user: UserIdentity = UserIdentity(uid: 1000, gid: 1000, groups: [])
    ) {
        self.hypervisor = hypervisor
        self.wsl = wsl
        self.container = container
        self.detectionEvidence = detectionEvidence
        self.udevRunning = udevRunning
        self.udevRules = udevRules
        self.boards = boards
        self.kernelLogReadable = kernelLogReadable
        self.libusbAvailable = libusbAvailable
        self.user = user
    }

    /// True when USB reaches us through a hypervisor, usbipd or a container runtime, so a board
    /// that re-enumerates must be passed through again at every stage.
    public var isPassthrough: Bool { hypervisor != nil || wsl == .wsl2 || container != nil }

    /// The passthrough configurations that fit this environment, nearest layer first (a
    /// container inside a VM needs the container fixed first).
    public var passthroughTargets: [PassthroughTarget] {
        var targets: [PassthroughTarget] = []
        switch container {
        case .docker: targets.append(.docker)
        case .podman: targets.append(.podman)
        case nil: break
        default: targets.append(.docker)  // LXC/nspawn: same device-cgroup idea, closest recipe
        }
        if wsl == .wsl2 {
            targets.append(.wsl)
        } else if let hypervisor {
            targets += hypervisor.passthroughTargets
        }
        return targets
    }
}

/// A hypervisor, named as `systemd-detect-virt` names it.
public enum Hypervisor: String, Codable, Sendable, Hashable, CaseIterable {
    case kvm, qemu, vmware, oracle, xen, microsoft, parallels, bhyve, amazon, google, apple, uml
    /// A VM whose hypervisor could not be named (only the CPU `hypervisor` flag said so).
    case unknown = "vm-other"

    /// People's name for it.
    public var displayName: String {
        switch self {
        case .kvm: "KVM"
        case .qemu: "QEMU"
        case .vmware: "VMware"
        case .oracle: "VirtualBox"
        case .xen: "Xen"
        case .microsoft: "Hyper-V"
        case .parallels: "Parallels"
        case .bhyve: "bhyve"
        case .amazon: "Amazon EC2"
        case .google: "Google Compute Engine"
        case .apple: "Apple Virtualization"
        case .uml: "User Mode Linux"
        case .unknown: "an unidentified hypervisor"
        }
    }

    /// The filter recipes that may apply (a KVM guest cannot tell plain QEMU, libvirt and
    /// Proxmox apart, so all three are offered).
    public var passthroughTargets: [PassthroughTarget] {
        switch self {
        case .oracle: [.virtualbox]
        case .vmware: [.vmware]
        case .kvm, .qemu: [.libvirt, .proxmox, .qemu]
        default: []
        }
    }
}

public enum WSLVersion: String, Codable, Sendable, Hashable {
    case wsl1, wsl2
}

/// A container runtime, named as `systemd-detect-virt --container` names it.
public enum ContainerKind: String, Codable, Sendable, Hashable, CaseIterable {
    case docker, podman, lxc
    case lxcLibvirt = "lxc-libvirt"
    case systemdNspawn = "systemd-nspawn"
    case openvz
    case other = "container-other"
}

/// Who asks, for permission checks that follow the owner/group/other mode bits.
public struct UserIdentity: Codable, Sendable, Hashable {
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]

    public init(uid: UInt32, gid: UInt32, groups: [UInt32]) {
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    /// Read and write access to a node with this owner, group and mode, by the mode bits alone.
    public func canReadWrite(owner: UInt32, group: UInt32, mode: UInt32) -> Bool {
        if uid == 0 { return true }
        let bits: UInt32
        if owner == uid {
            bits = (mode >> 6) & 0o7
        } else if group == gid || groups.contains(group) {
            bits = (mode >> 3) & 0o7
        } else {
            bits = mode & 0o7
        }
        return bits & 0o6 == 0o6
    }
}

/// One rule line that mentions 0483 and df11 or 0afb.
public struct InstalledUdevRule: Codable, Sendable, Hashable {
    /// The rule file, as seen from inside the root (`/etc/udev/rules.d/60-x.rules`).
    public var file: String
    public var line: Int
    public var text: String

    public init(file: String, line: Int, text: String) {
        self.file = file
        self.line = line
        self.text = text
    }

    /// The rule names this product ID (`df11`, `0afb`), alone or in an `a|b` list.
    public func covers(product: String) -> Bool { text.lowercased().contains(product.lowercased()) }

    /// The rule tags the node for the logged-in user.
    public var grantsUaccess: Bool { text.contains("uaccess") }
    /// The rule sets a mode or group, which also works without a seat (SSH, CI).
    public var setsModeOrGroup: Bool { text.contains("MODE") || text.contains("GROUP") }
    /// The world-writable mode that some vendor rules use (works, but any local user may flash).
    public var isWorldWritable: Bool { text.contains("0666") }

    /// The leading number of the file name (`60` in `60-stm32mp-flash.rules`).
    public var order: Int? {
        let name = file.split(separator: "/").last ?? ""
        return Int(name.prefix { $0.isNumber })
    }

    /// `uaccess` only works when the tag is set before systemd's `73-seat-late.rules`.
    public var uaccessTooLate: Bool { grantsUaccess && !setsModeOrGroup && (order ?? 99) >= 73 }
}

/// An ST USB device found in sysfs.
public struct SysfsBoard: Codable, Sendable, Hashable {
    public var port: PortPath
    public var vendorID: UInt16
    public var productID: UInt16
    public var product: String?
    public var serial: String?
    public var speed: USBSpeed
    /// `/dev/bus/usb/BBB/DDD`.
    public var node: String
    /// Node permissions; nil when the node does not exist (no devtmpfs, or a container
    /// without `/dev/bus/usb`).
    public var nodeMode: UInt32?
    public var nodeGroup: String?
    public var userCanOpen: Bool
    /// `bcdDevice` (an MCU bootloader's version is its MSB); nil when sysfs lacks it.
    public var bcdDevice: UInt16?
    /// The first interface's `interface` string (the active alternate's name: an MCU's flash map).
    public var interfaceName: String?

    public init(
        port: PortPath, vendorID: UInt16, productID: UInt16, product: String? = nil, serial: String? = nil,
        speed: USBSpeed = .high, node: String, nodeMode: UInt32? = nil, nodeGroup: String? = nil,
        userCanOpen: Bool, bcdDevice: UInt16? = nil, interfaceName: String? = nil
    ) {
        self.bcdDevice = bcdDevice
        self.interfaceName = interfaceName
        self.port = port
        self.vendorID = vendorID
        self.productID = productID
        self.product = product
        self.serial = serial
        self.speed = speed
        self.node = node
        self.nodeMode = nodeMode
        self.nodeGroup = nodeGroup
        self.userCanOpen = userCanOpen
    }

    /// `1-2.3 0483:df11 "DFU in HS Mode …" 480 Mbit/s /dev/bus/usb/001/005 crw-rw---- plugdev`.
    public var summary: String {
        var parts = [port.description, hex4(vendorID) + ":" + hex4(productID)]
        if let product { parts.append("\"\(product)\"") }
        parts.append(speed.sysfsMbps + " Mbit/s")
        parts.append(node)
        if let nodeMode { parts.append(octal(nodeMode & 0o777)) }
        if let nodeGroup { parts.append("group " + nodeGroup) }
        return parts.joined(separator: " ")
    }
}

/// `0660` style.
func octal(_ value: UInt32) -> String {
    let digits = String(value, radix: 8)
    return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}
