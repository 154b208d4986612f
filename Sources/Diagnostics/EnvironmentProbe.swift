import Glibc
import USBModel

/// Finds out where the tool runs (VM, WSL, container), whether udev applies rules, which rules
/// match the board and whether its device nodes can be opened. Reads files only (plus `dlopen`
/// and `access` on the live system), always below `root` so tests can use a fake tree.
public enum EnvironmentProbe {
    /// The folders udev reads rules from, highest priority first.
    public static let udevRuleFolders = [
        "/etc/udev/rules.d", "/run/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d",
    ]

    /// The ST product IDs an STM32MP board uses on USB: DFU (all stages), fastboot, other gadgets.
    public static let stProductIDs: [UInt16] = [0xDF11, 0x0AFB, 0x5720]

    /// - Parameters:
    ///   - root: the folder that stands for `/`.
    ///   - user: whose permissions to check; nil = the calling process on the live system
    ///     (`access(2)`, which also honours the ACLs `uaccess` sets).
    public static func detect(root: String = "/", user: UserIdentity? = nil) -> HostEnvironment {
        let files = HostFiles(root: root)
        var evidence: [String] = []
        let wsl = detectWSL(files, evidence: &evidence)
        let container = detectContainer(files, evidence: &evidence)
        let hypervisor = wsl == nil ? detectHypervisor(files, evidence: &evidence) : nil
        let identity = user ?? currentUser()
        return HostEnvironment(
            hypervisor: hypervisor, wsl: wsl, container: container, detectionEvidence: evidence,
            udevRunning: files.exists("/run/udev/control"),
            udevRules: installedRules(files),
            boards: sysfsBoards(files, user: identity, useAccessCall: user == nil && files.isLiveSystem),
            kernelLogReadable: KernelLog.isReadable(root: root),
            libusbAvailable: libusbAvailable(files),
            user: identity)
    }

    // MARK: Virtualization

    /// DMI vendor prefixes, in the order systemd checks them.
    static let dmiVendors: [(prefix: String, hypervisor: Hypervisor)] = [
        ("KVM", .kvm), ("OpenStack", .kvm), ("KubeVirt", .kvm), ("Amazon EC2", .amazon), ("QEMU", .qemu),
        ("VMware", .vmware), ("VMW", .vmware), ("innotek GmbH", .oracle), ("VirtualBox", .oracle),
        ("Oracle Corporation", .oracle), ("Xen", .xen), ("Bochs", .qemu), ("Parallels", .parallels),
        ("BHYVE", .bhyve), ("Hyper-V", .microsoft), ("Apple Virtualization", .apple),
        ("Google Compute Engine", .google),
    ]

    static func detectHypervisor(_ files: HostFiles, evidence: inout [String]) -> Hypervisor? {
        for field in ["product_name", "sys_vendor", "board_vendor", "bios_vendor", "product_version"] {
            let path = "/sys/class/dmi/id/" + field
            guard let value = files.attribute(path), !value.isEmpty else { continue }
            if let match = dmiVendors.first(where: { value.hasPrefix($0.prefix) }) {
                evidence.append("\(path) = \"\(value)\"")
                return match.hypervisor
            }
            // Hyper-V shows as "Microsoft Corporation" + "Virtual Machine".
            if value == "Virtual Machine", files.attribute("/sys/class/dmi/id/sys_vendor") == "Microsoft Corporation" {
                evidence.append("\(path) = \"Virtual Machine\" from Microsoft Corporation")
                return .microsoft
            }
        }
        let cpuinfo = files.read("/proc/cpuinfo") ?? ""
        if cpuinfo.contains("User Mode Linux") {
            evidence.append("/proc/cpuinfo: User Mode Linux")
            return .uml
        }
        if files.exists("/proc/xen") || files.attribute("/sys/hypervisor/type") == "xen" {
            evidence.append(files.exists("/proc/xen") ? "/proc/xen exists" : "/sys/hypervisor/type = xen")
            return .xen
        }
        let flagged = cpuinfo.split(separator: "\n").contains { line in
            line.hasPrefix("flags") && line.split(separator: " ").contains("hypervisor")
        }
        if flagged {
            evidence.append("/proc/cpuinfo flags include \"hypervisor\"")
            return .unknown
        }
        if let type = files.attribute("/sys/hypervisor/type"), !type.isEmpty {
            evidence.append("/sys/hypervisor/type = \(type)")
            return .unknown
        }
        return nil
    }

    static func detectWSL(_ files: HostFiles, evidence: inout [String]) -> WSLVersion? {
        guard let release = files.attribute("/proc/sys/kernel/osrelease") else { return nil }
        let version: WSLVersion
        if release.containsIgnoringCase("WSL") {
            version = .wsl2
        } else if release.containsIgnoringCase("Microsoft") {
            version = .wsl1
        } else {
            return nil
        }
        evidence.append("/proc/sys/kernel/osrelease = \"\(release)\"")
        return version
    }

    static func detectContainer(_ files: HostFiles, evidence: inout [String]) -> ContainerKind? {
        if let name = files.attribute("/run/systemd/container"), !name.isEmpty {
            evidence.append("/run/systemd/container = \"\(name)\"")
            return ContainerKind(rawValue: name) ?? .other
        }
        // "oci" names no manager (some images hard-code it): the marker files below then decide.
        var generic = false
        if let environ = files.readBytes("/proc/1/environ", limit: 1 << 16) {
            for entry in environ.split(separator: 0) {
                let text = String(decoding: entry, as: UTF8.self)
                guard text.hasPrefix("container=") else { continue }
                let name = String(text.dropFirst("container=".count))
                evidence.append("/proc/1/environ has container=\(name)")
                if name == "oci" {
                    generic = true
                    break
                }
                return ContainerKind(rawValue: name) ?? .other
            }
        }
        if files.exists("/run/.containerenv") {
            evidence.append("/run/.containerenv exists")
            return .podman
        }
        if files.exists("/.dockerenv") {
            evidence.append("/.dockerenv exists")
            return .docker
        }
        if files.exists("/proc/vz") && !files.exists("/proc/bc") {
            evidence.append("/proc/vz exists without /proc/bc")
            return .openvz
        }
        return generic ? .other : nil
    }

    // MARK: udev rules

    static func installedRules(_ files: HostFiles) -> [InstalledUdevRule] {
        var rules: [InstalledUdevRule] = []
        var scanned: Set<String> = []
        for folder in udevRuleFolders {
            // /lib is often a link to /usr/lib: read each real folder once.
            guard scanned.insert(files.realPath(folder) ?? folder).inserted else { continue }
            for name in files.list(folder) where name.hasSuffix(".rules") {
                let path = folder + "/" + name
                guard let text = files.read(path) else { continue }
                for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                    let trimmed = line.trimmingWhitespace
                    guard !trimmed.hasPrefix("#"), ruleMatchesBoard(trimmed) else { continue }
                    rules.append(InstalledUdevRule(file: path, line: index + 1, text: trimmed))
                }
            }
        }
        return rules
    }

    /// A rule line that names vendor 0483 and product df11 or 0afb (alone or in an `a|b` list).
    static func ruleMatchesBoard(_ line: String) -> Bool {
        let lower = line.lowercased()
        return lower.contains("\"0483\"") && lower.contains("idproduct")
            && (lower.contains("df11") || lower.contains("0afb"))
    }

    // MARK: Devices

    static func sysfsBoards(_ files: HostFiles, user: UserIdentity, useAccessCall: Bool) -> [SysfsBoard] {
        let base = "/sys/bus/usb/devices"
        let groups = groupNames(files)
        var boards: [SysfsBoard] = []
        for name in files.list(base) {
            let dir = base + "/" + name
            guard let port = PortPath(name),
                files.attribute(dir + "/idVendor")?.lowercased() == "0483",
                let productText = files.attribute(dir + "/idProduct"),
                let productID = UInt16(productText, radix: 16), stProductIDs.contains(productID),
                let bus = files.attribute(dir + "/busnum").flatMap({ Int($0) }),
                let device = files.attribute(dir + "/devnum").flatMap({ Int($0) })
            else { continue }
            let node = "/dev/bus/usb/" + threeDigits(bus) + "/" + threeDigits(device)
            let status = files.fileStatus(node)
            let canOpen: Bool
            if useAccessCall {
                canOpen = access(files.resolve(node), R_OK | W_OK) == 0
            } else if let status {
                canOpen = user.canReadWrite(owner: status.st_uid, group: status.st_gid, mode: status.st_mode)
            } else {
                canOpen = false
            }
            boards.append(
                SysfsBoard(
                    port: port, vendorID: 0x0483, productID: productID, product: files.attribute(dir + "/product"),
                    serial: files.attribute(dir + "/serial"),
                    speed: USBSpeed(sysfsMbps: files.attribute(dir + "/speed") ?? ""), node: node,
                    nodeMode: status.map { $0.st_mode & 0o7777 },
                    nodeGroup: status.map { groups[$0.st_gid] ?? String($0.st_gid) }, userCanOpen: canOpen,
                    bcdDevice: files.attribute(dir + "/bcdDevice").flatMap { UInt16($0, radix: 16) },
                    interfaceName: files.attribute(dir + "/" + name + ":1.0/interface")))
        }
        return boards.sorted { $0.port < $1.port }
    }

    /// gid → name from the root's `/etc/group` (so fake roots resolve their own names).
    static func groupNames(_ files: HostFiles) -> [UInt32: String] {
        var names: [UInt32: String] = [:]
        for line in (files.read("/etc/group") ?? "").split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            if fields.count >= 3, let gid = UInt32(fields[2]) { names[gid] = String(fields[0]) }
        }
        return names
    }

    static func threeDigits(_ value: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, 3 - digits.count)) + digits
    }

    static func currentUser() -> UserIdentity {
        let count = getgroups(0, nil)
        var groups = [gid_t](repeating: 0, count: Int(max(count, 0)))
        let filled = count > 0 ? getgroups(count, &groups) : 0
        return UserIdentity(uid: getuid(), gid: getgid(), groups: Array(groups.prefix(Int(max(filled, 0)))))
    }

    // MARK: libusb

    static let libusbName = "libusb-1.0.so.0"
    static let libraryFolders = [
        "/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib", "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
    ]

    static func libusbAvailable(_ files: HostFiles) -> Bool {
        if files.isLiveSystem, let handle = dlopen(libusbName, RTLD_LAZY | RTLD_LOCAL) {
            dlclose(handle)
            return true
        }
        return libraryFolders.contains { files.exists($0 + "/" + libusbName) }
    }
}
