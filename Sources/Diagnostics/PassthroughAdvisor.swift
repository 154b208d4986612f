public import USBModel

/// A hypervisor or container runtime we can write a USB passthrough recipe for.
public enum PassthroughTarget: String, Codable, Sendable, Hashable, CaseIterable {
    case virtualbox, vmware, qemu, libvirt, proxmox, wsl, docker, podman

    public var displayName: String {
        switch self {
        case .virtualbox: "VirtualBox"
        case .vmware: "VMware Workstation/Fusion/ESXi"
        case .qemu: "QEMU"
        case .libvirt: "libvirt (virsh, virt-manager)"
        case .proxmox: "Proxmox VE"
        case .wsl: "WSL 2 (usbipd-win)"
        case .docker: "Docker"
        case .podman: "Podman"
        }
    }
}

/// Writes the commands or configuration that keep an STM32MP board passed through while it
/// re-enumerates as ROM, TF-A, U-Boot (twice) and maybe fastboot. Rules (anchors §3): match
/// VID 0483 with PIDs df11 and 0afb, or the physical port; never product, serial or revision,
/// which change between stages. Pure functions: the text is the interface, tested verbatim.
public enum PassthroughAdvisor {
    /// - Parameters:
    ///   - vm: the VM name, VMID, or image, as the target names it; a placeholder when nil.
    ///   - port: match this physical port instead of the IDs (where the target can).
    ///   - insideGuest: we run inside that VM or container, so say that this runs on the host.
    public static func advice(
        for target: PassthroughTarget, vm: String? = nil, port: PortPath? = nil, insideGuest: Bool = false
    ) -> String {
        let recipe = recipe(for: target, vm: vm, port: port)
        var lines = ["\(target.displayName): keep the STM32MP board passed through at every stage"]
        lines.append(
            recipe.placement
                ?? (insideGuest
                    ? "Run this on the host, not inside this \(target.guestName):" : "Run this on the host:"))
        lines.append("")
        lines += recipe.steps.map { $0.isEmpty ? "" : "  " + $0 }
        lines.append("")
        lines.append(
            "Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched."
        )
        lines.append("Pitfalls:")
        lines += recipe.pitfalls.map { "  - " + $0 }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The one step that matters most, for a diagnosis's next steps.
    public static func keyStep(for target: PassthroughTarget) -> String {
        switch target {
        case .virtualbox:
            "on the host, `VBoxManage usbfilter add 0 --target \"<vm>\" --name \"STM32MP DFU\" --vendorid 0483 --productid df11` (no product, serial or revision in the filter)."
        case .vmware: "in the VM's .vmx, `usb.autoConnect.device0 = \"vid:0483 pid:df11 autoclean:0\"`."
        case .qemu:
            "`-device usb-host,bus=xhci.0,vendorid=0x0483,productid=0xdf11` (or hostbus=/hostport= for the port), never hostaddr."
        case .libvirt:
            "libvirt's <hostdev> follows only the bus/device it resolved at start; pass `usb-host,vendorid=0x0483,productid=0xdf11` to QEMU through <qemu:commandline> instead."
        case .proxmox: "on the host, `qm set <vmid> -usb0 host=0483:df11` (or host=<bus>-<port> for the port)."
        case .wsl:
            "in an administrator PowerShell, `usbipd policy add --effect Allow --operation AutoBind --hardware-id 0483:df11`, then `usbipd attach --wsl --busid <busid> --auto-attach`."
        case .docker, .podman:
            "start the container with `--device-cgroup-rule='c 189:* rmw' -v /dev/bus/usb:/dev/bus/usb -v /run/udev:/run/udev:ro`, not `--device /dev/bus/usb/BBB/DDD`."
        }
    }

    struct Recipe {
        var steps: [String]
        var pitfalls: [String]
        /// Where to run it, when that is not simply "the host".
        var placement: String? = nil
    }

    static func recipe(for target: PassthroughTarget, vm: String?, port: PortPath?) -> Recipe {
        switch target {
        case .virtualbox: virtualBox(vm: vm ?? "<vm>", port: port)
        case .vmware: vmware(vm: vm, port: port)
        case .qemu: qemu(port: port)
        case .libvirt: libvirt(vm: vm ?? "<domain>", port: port)
        case .proxmox: proxmox(vm: vm ?? "<vmid>", port: port)
        case .wsl: wsl(port: port)
        case .docker, .podman: container(target, image: vm ?? "<image>", port: port)
        }
    }

    static func virtualBox(vm: String, port: PortPath?) -> Recipe {
        var pitfalls = [
            "A filter that also sets --product, --serialnumber or --revision stops matching at the next stage; list filters with `VBoxManage showvminfo \"\(vm)\" --machinereadable | grep USBFilter` and remove such ones (`VBoxManage usbfilter remove <index> --target \"\(vm)\"`).",
            "The VM needs a USB 2 or 3 controller (`VBoxManage modifyvm \"\(vm)\" --usbxhci on`, VM powered off; older releases need the Extension Pack for it).",
            "Filters apply each time a device attaches to the host, so every stage is captured again; the host must not hold the board (close host-side flashers).",
        ]
        if port != nil {
            pitfalls.append(
                "VirtualBox's port filter field is host-specific, so these filters match the IDs; with several boards attach only one, or run the flasher on the host with --port."
            )
        }
        return Recipe(
            steps: [
                "VBoxManage usbfilter add 0 --target \"\(vm)\" --name \"STM32MP DFU (ROM, TF-A, U-Boot)\" --vendorid 0483 --productid df11",
                "VBoxManage usbfilter add 1 --target \"\(vm)\" --name \"STM32MP U-Boot fastboot\" --vendorid 0483 --productid 0afb",
            ],
            pitfalls: pitfalls)
    }

    static func vmware(vm: String?, port: PortPath?) -> Recipe {
        let file = vm.map { $0.hasSuffix(".vmx") ? $0 : $0 + ".vmx" } ?? "<vm>.vmx"
        var steps = ["# Power the VM off, then add to \(file):"]
        var pitfalls = [
            "Do not add product names or serials (the `name:` form): they change between stages.",
            "A running VM with such lines grabs the board from the host too; remove them when you flash on the host.",
            "If the board drops during enumeration in the VM, add `usb.quirks.device0 = \"0x0483:0xdf11 skip-reset, skip-refresh, skip-setconfig\"`.",
        ]
        if let port {
            steps.append(
                "usb.autoConnect.device0 = \"path:\(port.bus)/\(port.ports.map(String.init).joined(separator: "/")) autoclean:0\""
            )
            pitfalls.append(
                "The path form follows the physical port, but how VMware numbers ports behind hubs is not confirmed here: copy the exact `path:` value that vmware.log shows for the board (lines with vid:0483), or use the vid/pid lines instead. ESXi autoconnect by path is speed-specific: a port that saw a high-speed device will not reconnect a full-speed one."
            )
        } else {
            steps += [
                "usb.autoConnect.device0 = \"vid:0483 pid:df11 autoclean:0\"",
                "usb.autoConnect.device1 = \"vid:0483 pid:0afb autoclean:0\"",
            ]
        }
        return Recipe(steps: steps, pitfalls: pitfalls)
    }

    /// `-device usb-host,…` arguments for the given port, or one per PID.
    static func qemuDevices(bus: String, port: PortPath?) -> [String] {
        if let port {
            return [
                "usb-host,bus=\(bus),hostbus=\(port.bus),hostport=\(port.ports.map(String.init).joined(separator: "."))"
            ]
        }
        return [
            "usb-host,bus=\(bus),vendorid=0x0483,productid=0xdf11",
            "usb-host,bus=\(bus),vendorid=0x0483,productid=0x0afb",
        ]
    }

    static let qemuPitfalls = [
        "QEMU rescans host devices every 2 s: a stage shorter than that can be missed, and the tool simply waits for the next one.",
        "After 3 failed opens of a device it keeps seeing, QEMU stops trying until the device has been gone for a whole scan: make sure the host can open the board (install the udev rule on the host: `stm32mp-flash udev-rules --install`) and that no host program holds it.",
        "Never use hostaddr= (it changes at every re-enumeration); with several boards, vendorid/productid grab the first one, so match the port.",
    ]

    static func qemu(port: PortPath?) -> Recipe {
        let devices = qemuDevices(bus: "xhci.0", port: port)
        var steps = ["# Add to the QEMU command line:", "-device qemu-xhci,id=xhci \\"]
        steps += devices.enumerated().map { "-device " + $0.element + ($0.offset == devices.count - 1 ? "" : " \\") }
        steps += ["", "# Or add it to a running VM from the QEMU monitor:"] + devices.map { "device_add " + $0 }
        return Recipe(steps: steps, pitfalls: qemuPitfalls)
    }

    static func libvirt(vm: String, port: PortPath?) -> Recipe {
        var steps = [
            "# `virsh edit \(vm)`: add the qemu namespace to the <domain> element and the block below it.",
            "# libvirt names its first USB controller \"usb\", so its bus is usb.0.",
            "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
            "  <qemu:commandline>",
        ]
        for device in qemuDevices(bus: "usb.0", port: port) {
            steps += ["    <qemu:arg value='-device'/>", "    <qemu:arg value='\(device)'/>"]
        }
        steps += ["  </qemu:commandline>", "</domain>"]
        return Recipe(
            steps: steps,
            pitfalls: [
                "A plain <hostdev type='usb'> with <vendor id='0x0483'/><product id='0xdf11'/> is resolved to one bus/device when the VM starts or the device is attached, so the VM loses the board at its first re-enumeration; use the qemu:commandline form above.",
                "With AppArmor or SELinux confinement, QEMU may be denied /dev/bus/usb nodes it was not given by libvirt; if the guest sees nothing, check the host's audit log.",
            ] + qemuPitfalls)
    }

    static func proxmox(vm: String, port: PortPath?) -> Recipe {
        var steps: [String]
        if let port {
            steps = ["qm set \(vm) -usb0 host=\(port)"]
        } else {
            steps = ["qm set \(vm) -usb0 host=0483:df11", "qm set \(vm) -usb1 host=0483:0afb"]
        }
        steps.append("# Append ,usb3=1 to attach through the VM's xHCI controller.")
        return Recipe(
            steps: steps,
            pitfalls: [
                "Only root may assign raw host USB devices; other users need a USB resource mapping (Datacenter → Resource Mappings) with the same IDs or port.",
                "A VM with USB passthrough cannot be live-migrated.",
            ] + qemuPitfalls)
    }

    static func wsl(port: PortPath?) -> Recipe {
        var steps = ["# Windows, administrator PowerShell (usbipd-win with the `policy` command):"]
        if let port {
            steps.append("usbipd policy add --effect Allow --operation AutoBind --busid \(port)")
        } else {
            steps += [
                "usbipd policy add --effect Allow --operation AutoBind --hardware-id 0483:df11",
                "usbipd policy add --effect Allow --operation AutoBind --hardware-id 0483:0afb",
            ]
        }
        steps += [
            "usbipd list",
            "# Keep this running while you flash (BUSID from `usbipd list`, e.g. 1-4):",
            "usbipd attach --wsl --busid \(port?.description ?? "<busid>") --auto-attach",
            "",
            "# Inside WSL: udev must run for the device nodes to get the rule's permissions.",
            "sudo stm32mp-flash udev-rules --install",
        ]
        return Recipe(
            steps: steps,
            pitfalls: [
                "`usbipd bind` shares one Windows device instance, whose id includes the serial: after re-enumeration the board is a new, unshared device (\"Device is not shared\"). The AutoBind policy shares every future match.",
                "`attach --hardware-id` is resolved to a BUSID once; --auto-attach follows the BUSID (the Windows port), so keep the board on the same port.",
                "Without systemd in WSL, udev does not run: enable it (`[boot] systemd=true` in /etc/wsl.conf, then `wsl --shutdown`) or run `sudo service udev restart` after each attach.",
                "\"Device busy (exported)\" during re-attach is a race in the attach loop; it retries.",
                "Inside WSL the board shows on the vhci_hcd bus with a different bus/port than Windows' BUSID.",
            ],
            placement: "Run the first part on Windows (the host), the last step inside WSL:")
    }

    static func container(_ target: PassthroughTarget, image: String, port: PortPath?) -> Recipe {
        let tool = target.rawValue
        var steps = [
            "\(tool) run --device-cgroup-rule='c 189:* rmw' -v /dev/bus/usb:/dev/bus/usb -v /run/udev:/run/udev:ro \(image) stm32mp-flash …",
            "",
            "# compose file:",
            "    device_cgroup_rules:",
            "      - 'c 189:* rmw'",
            "    volumes:",
            "      - /dev/bus/usb:/dev/bus/usb",
            "      - /run/udev:/run/udev:ro",
        ]
        if let port {
            steps += [
                "", "# Containers cannot filter by port; tell the flasher instead:",
                "stm32mp-flash flash --port \(port) …",
            ]
        }
        var pitfalls = [
            "`--device /dev/bus/usb/BBB/DDD` copies one node at start; the board gets a new device number at every stage, so the container loses it.",
            "Major 189 is the USB device node class; the rule grants all USB devices, which `--privileged` also would, with much more.",
            "udev rules and permissions live on the host: install them there (`sudo stm32mp-flash udev-rules --install`).",
            "Hot-plug events may not reach the container; the tool then polls /dev/bus/usb.",
            "Docker Desktop on macOS/Windows has no direct USB access; run the flasher on the host or in a Linux VM with passthrough.",
        ]
        if target == .podman {
            pitfalls.append(
                "Rootless Podman: device cgroup rules are not confirmed to apply; add `--group-add keep-groups` so your host group (e.g. plugdev) reaches the node, or run rootful with sudo."
            )
        }
        return Recipe(steps: steps, pitfalls: pitfalls)
    }
}

extension PassthroughTarget {
    /// "VM", "WSL distribution" or "container", for "run this on the host, not inside this …".
    var guestName: String {
        switch self {
        case .wsl: "WSL distribution"
        case .docker, .podman: "container"
        default: "VM"
        }
    }
}
