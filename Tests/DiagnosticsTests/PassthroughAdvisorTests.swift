import Diagnostics
import Testing
import USBModel

/// Exact recipes per hypervisor: the text is the interface users copy, so any change must be
/// deliberate and reviewed here.
@Suite("PassthroughAdvisor golden output")
struct PassthroughAdvisorTests {
    @Test func virtualbox() {
        let expected = #"""
            VirtualBox: keep the STM32MP board passed through at every stage
            Run this on the host:

              VBoxManage usbfilter add 0 --target "<vm>" --name "STM32MP DFU (ROM, TF-A, U-Boot)" --vendorid 0483 --productid df11
              VBoxManage usbfilter add 1 --target "<vm>" --name "STM32MP U-Boot fastboot" --vendorid 0483 --productid 0afb

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - A filter that also sets --product, --serialnumber or --revision stops matching at the next stage; list filters with `VBoxManage showvminfo "<vm>" --machinereadable | grep USBFilter` and remove such ones (`VBoxManage usbfilter remove <index> --target "<vm>"`).
              - The VM needs a USB 2 or 3 controller (`VBoxManage modifyvm "<vm>" --usbxhci on`, VM powered off; older releases need the Extension Pack for it).
              - Filters apply each time a device attaches to the host, so every stage is captured again; the host must not hold the board (close host-side flashers).
            """# + "\n"
        #expect(PassthroughAdvisor.advice(for: .virtualbox) == expected)
    }

    @Test func vmware() {
        let expected = #"""
            VMware Workstation/Fusion/ESXi: keep the STM32MP board passed through at every stage
            Run this on the host:

              # Power the VM off, then add to <vm>.vmx:
              usb.autoConnect.device0 = "vid:0483 pid:df11 autoclean:0"
              usb.autoConnect.device1 = "vid:0483 pid:0afb autoclean:0"

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - Do not add product names or serials (the `name:` form): they change between stages.
              - A running VM with such lines grabs the board from the host too; remove them when you flash on the host.
              - If the board drops during enumeration in the VM, add `usb.quirks.device0 = "0x0483:0xdf11 skip-reset, skip-refresh, skip-setconfig"`.
            """# + "\n"
        #expect(PassthroughAdvisor.advice(for: .vmware) == expected)
    }

    @Test func vmwareByPort() {
        let expected = #"""
            VMware Workstation/Fusion/ESXi: keep the STM32MP board passed through at every stage
            Run this on the host, not inside this VM:

              # Power the VM off, then add to dev.vmx:
              usb.autoConnect.device0 = "path:3/1/2 autoclean:0"

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - Do not add product names or serials (the `name:` form): they change between stages.
              - A running VM with such lines grabs the board from the host too; remove them when you flash on the host.
              - If the board drops during enumeration in the VM, add `usb.quirks.device0 = "0x0483:0xdf11 skip-reset, skip-refresh, skip-setconfig"`.
              - The path form follows the physical port, but how VMware numbers ports behind hubs is not confirmed here: copy the exact `path:` value that vmware.log shows for the board (lines with vid:0483), or use the vid/pid lines instead. ESXi autoconnect by path is speed-specific: a port that saw a high-speed device will not reconnect a full-speed one.
            """# + "\n"
        #expect(
            PassthroughAdvisor.advice(for: .vmware, vm: "dev", port: PortPath("3-1.2"), insideGuest: true) == expected)
    }

    @Test func qemu() {
        let expected = #"""
            QEMU: keep the STM32MP board passed through at every stage
            Run this on the host:

              # Add to the QEMU command line:
              -device qemu-xhci,id=xhci \
              -device usb-host,bus=xhci.0,vendorid=0x0483,productid=0xdf11 \
              -device usb-host,bus=xhci.0,vendorid=0x0483,productid=0x0afb

              # Or add it to a running VM from the QEMU monitor:
              device_add usb-host,bus=xhci.0,vendorid=0x0483,productid=0xdf11
              device_add usb-host,bus=xhci.0,vendorid=0x0483,productid=0x0afb

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - QEMU rescans host devices every 2 s: a stage shorter than that can be missed, and the tool simply waits for the next one.
              - After 3 failed opens of a device it keeps seeing, QEMU stops trying until the device has been gone for a whole scan: make sure the host can open the board (install the udev rule on the host: `stm32mp-flash udev-rules --install`) and that no host program holds it.
              - Never use hostaddr= (it changes at every re-enumeration); with several boards, vendorid/productid grab the first one, so match the port.
            """# + "\n"
        #expect(PassthroughAdvisor.advice(for: .qemu) == expected)
    }

    @Test func qemuByPort() {
        let expected = #"""
            QEMU: keep the STM32MP board passed through at every stage
            Run this on the host, not inside this VM:

              # Add to the QEMU command line:
              -device qemu-xhci,id=xhci \
              -device usb-host,bus=xhci.0,hostbus=3,hostport=1.2

              # Or add it to a running VM from the QEMU monitor:
              device_add usb-host,bus=xhci.0,hostbus=3,hostport=1.2

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - QEMU rescans host devices every 2 s: a stage shorter than that can be missed, and the tool simply waits for the next one.
              - After 3 failed opens of a device it keeps seeing, QEMU stops trying until the device has been gone for a whole scan: make sure the host can open the board (install the udev rule on the host: `stm32mp-flash udev-rules --install`) and that no host program holds it.
              - Never use hostaddr= (it changes at every re-enumeration); with several boards, vendorid/productid grab the first one, so match the port.
            """# + "\n"
        #expect(
            PassthroughAdvisor.advice(for: .qemu, vm: "dev", port: PortPath("3-1.2"), insideGuest: true) == expected)
    }

    @Test func libvirt() {
        let expected = #"""
            libvirt (virsh, virt-manager): keep the STM32MP board passed through at every stage
            Run this on the host:

              # `virsh edit <domain>`: add the qemu namespace to the <domain> element and the block below it.
              # libvirt names its first USB controller "usb", so its bus is usb.0.
              <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
                <qemu:commandline>
                  <qemu:arg value='-device'/>
                  <qemu:arg value='usb-host,bus=usb.0,vendorid=0x0483,productid=0xdf11'/>
                  <qemu:arg value='-device'/>
                  <qemu:arg value='usb-host,bus=usb.0,vendorid=0x0483,productid=0x0afb'/>
                </qemu:commandline>
              </domain>

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - A plain <hostdev type='usb'> with <vendor id='0x0483'/><product id='0xdf11'/> is resolved to one bus/device when the VM starts or the device is attached, so the VM loses the board at its first re-enumeration; use the qemu:commandline form above.
              - With AppArmor or SELinux confinement, QEMU may be denied /dev/bus/usb nodes it was not given by libvirt; if the guest sees nothing, check the host's audit log.
              - QEMU rescans host devices every 2 s: a stage shorter than that can be missed, and the tool simply waits for the next one.
              - After 3 failed opens of a device it keeps seeing, QEMU stops trying until the device has been gone for a whole scan: make sure the host can open the board (install the udev rule on the host: `stm32mp-flash udev-rules --install`) and that no host program holds it.
              - Never use hostaddr= (it changes at every re-enumeration); with several boards, vendorid/productid grab the first one, so match the port.
            """# + "\n"
        #expect(PassthroughAdvisor.advice(for: .libvirt) == expected)
    }

    @Test func libvirtByPort() {
        let expected = #"""
            libvirt (virsh, virt-manager): keep the STM32MP board passed through at every stage
            Run this on the host, not inside this VM:

              # `virsh edit dev`: add the qemu namespace to the <domain> element and the block below it.
              # libvirt names its first USB controller "usb", so its bus is usb.0.
              <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
                <qemu:commandline>
                  <qemu:arg value='-device'/>
                  <qemu:arg value='usb-host,bus=usb.0,hostbus=3,hostport=1.2'/>
                </qemu:commandline>
              </domain>

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - A plain <hostdev type='usb'> with <vendor id='0x0483'/><product id='0xdf11'/> is resolved to one bus/device when the VM starts or the device is attached, so the VM loses the board at its first re-enumeration; use the qemu:commandline form above.
              - With AppArmor or SELinux confinement, QEMU may be denied /dev/bus/usb nodes it was not given by libvirt; if the guest sees nothing, check the host's audit log.
              - QEMU rescans host devices every 2 s: a stage shorter than that can be missed, and the tool simply waits for the next one.
              - After 3 failed opens of a device it keeps seeing, QEMU stops trying until the device has been gone for a whole scan: make sure the host can open the board (install the udev rule on the host: `stm32mp-flash udev-rules --install`) and that no host program holds it.
              - Never use hostaddr= (it changes at every re-enumeration); with several boards, vendorid/productid grab the first one, so match the port.
            """# + "\n"
        #expect(
            PassthroughAdvisor.advice(for: .libvirt, vm: "dev", port: PortPath("3-1.2"), insideGuest: true) == expected)
    }

    @Test func proxmox() {
        let expected = #"""
            Proxmox VE: keep the STM32MP board passed through at every stage
            Run this on the host:

              qm set <vmid> -usb0 host=0483:df11
              qm set <vmid> -usb1 host=0483:0afb
              # Append ,usb3=1 to attach through the VM's xHCI controller.

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - Only root may assign raw host USB devices; other users need a USB resource mapping (Datacenter → Resource Mappings) with the same IDs or port.
              - A VM with USB passthrough cannot be live-migrated.
              - QEMU rescans host devices every 2 s: a stage shorter than that can be missed, and the tool simply waits for the next one.
              - After 3 failed opens of a device it keeps seeing, QEMU stops trying until the device has been gone for a whole scan: make sure the host can open the board (install the udev rule on the host: `stm32mp-flash udev-rules --install`) and that no host program holds it.
              - Never use hostaddr= (it changes at every re-enumeration); with several boards, vendorid/productid grab the first one, so match the port.
            """# + "\n"
        #expect(PassthroughAdvisor.advice(for: .proxmox) == expected)
    }

    @Test func proxmoxByPort() {
        let expected = #"""
            Proxmox VE: keep the STM32MP board passed through at every stage
            Run this on the host, not inside this VM:

              qm set dev -usb0 host=3-1.2
              # Append ,usb3=1 to attach through the VM's xHCI controller.

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - Only root may assign raw host USB devices; other users need a USB resource mapping (Datacenter → Resource Mappings) with the same IDs or port.
              - A VM with USB passthrough cannot be live-migrated.
              - QEMU rescans host devices every 2 s: a stage shorter than that can be missed, and the tool simply waits for the next one.
              - After 3 failed opens of a device it keeps seeing, QEMU stops trying until the device has been gone for a whole scan: make sure the host can open the board (install the udev rule on the host: `stm32mp-flash udev-rules --install`) and that no host program holds it.
              - Never use hostaddr= (it changes at every re-enumeration); with several boards, vendorid/productid grab the first one, so match the port.
            """# + "\n"
        #expect(
            PassthroughAdvisor.advice(for: .proxmox, vm: "dev", port: PortPath("3-1.2"), insideGuest: true) == expected)
    }

    @Test func wsl() {
        let expected = #"""
            WSL 2 (usbipd-win): keep the STM32MP board passed through at every stage
            Run the first part on Windows (the host), the last step inside WSL:

              # Windows, administrator PowerShell (usbipd-win with the `policy` command):
              usbipd policy add --effect Allow --operation AutoBind --hardware-id 0483:df11
              usbipd policy add --effect Allow --operation AutoBind --hardware-id 0483:0afb
              usbipd list
              # Keep this running while you flash (BUSID from `usbipd list`, e.g. 1-4):
              usbipd attach --wsl --busid <busid> --auto-attach

              # Inside WSL: udev must run for the device nodes to get the rule's permissions.
              sudo stm32mp-flash udev-rules --install

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - `usbipd bind` shares one Windows device instance, whose id includes the serial: after re-enumeration the board is a new, unshared device ("Device is not shared"). The AutoBind policy shares every future match.
              - `attach --hardware-id` is resolved to a BUSID once; --auto-attach follows the BUSID (the Windows port), so keep the board on the same port.
              - Without systemd in WSL, udev does not run: enable it (`[boot] systemd=true` in /etc/wsl.conf, then `wsl --shutdown`) or run `sudo service udev restart` after each attach.
              - "Device busy (exported)" during re-attach is a race in the attach loop; it retries.
              - Inside WSL the board shows on the vhci_hcd bus with a different bus/port than Windows' BUSID.
            """# + "\n"
        #expect(PassthroughAdvisor.advice(for: .wsl) == expected)
    }

    @Test func wslByPort() {
        let expected = #"""
            WSL 2 (usbipd-win): keep the STM32MP board passed through at every stage
            Run the first part on Windows (the host), the last step inside WSL:

              # Windows, administrator PowerShell (usbipd-win with the `policy` command):
              usbipd policy add --effect Allow --operation AutoBind --busid 3-1.2
              usbipd list
              # Keep this running while you flash (BUSID from `usbipd list`, e.g. 1-4):
              usbipd attach --wsl --busid 3-1.2 --auto-attach

              # Inside WSL: udev must run for the device nodes to get the rule's permissions.
              sudo stm32mp-flash udev-rules --install

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - `usbipd bind` shares one Windows device instance, whose id includes the serial: after re-enumeration the board is a new, unshared device ("Device is not shared"). The AutoBind policy shares every future match.
              - `attach --hardware-id` is resolved to a BUSID once; --auto-attach follows the BUSID (the Windows port), so keep the board on the same port.
              - Without systemd in WSL, udev does not run: enable it (`[boot] systemd=true` in /etc/wsl.conf, then `wsl --shutdown`) or run `sudo service udev restart` after each attach.
              - "Device busy (exported)" during re-attach is a race in the attach loop; it retries.
              - Inside WSL the board shows on the vhci_hcd bus with a different bus/port than Windows' BUSID.
            """# + "\n"
        #expect(PassthroughAdvisor.advice(for: .wsl, vm: "dev", port: PortPath("3-1.2"), insideGuest: true) == expected)
    }

    @Test func docker() {
        let expected = #"""
            Docker: keep the STM32MP board passed through at every stage
            Run this on the host:

              docker run --device-cgroup-rule='c 189:* rmw' -v /dev/bus/usb:/dev/bus/usb -v /run/udev:/run/udev:ro <image> stm32mp-flash …

              # compose file:
                  device_cgroup_rules:
                    - 'c 189:* rmw'
                  volumes:
                    - /dev/bus/usb:/dev/bus/usb
                    - /run/udev:/run/udev:ro

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - `--device /dev/bus/usb/BBB/DDD` copies one node at start; the board gets a new device number at every stage, so the container loses it.
              - Major 189 is the USB device node class; the rule grants all USB devices, which `--privileged` also would, with much more.
              - udev rules and permissions live on the host: install them there (`sudo stm32mp-flash udev-rules --install`).
              - Hot-plug events may not reach the container; the tool then polls /dev/bus/usb.
              - Docker Desktop on macOS/Windows has no direct USB access; run the flasher on the host or in a Linux VM with passthrough.
            """# + "\n"
        #expect(PassthroughAdvisor.advice(for: .docker) == expected)
    }

    @Test func podmanByPort() {
        let expected = #"""
            Podman: keep the STM32MP board passed through at every stage
            Run this on the host, not inside this container:

              podman run --device-cgroup-rule='c 189:* rmw' -v /dev/bus/usb:/dev/bus/usb -v /run/udev:/run/udev:ro dev stm32mp-flash …

              # compose file:
                  device_cgroup_rules:
                    - 'c 189:* rmw'
                  volumes:
                    - /dev/bus/usb:/dev/bus/usb
                    - /run/udev:/run/udev:ro

              # Containers cannot filter by port; tell the flasher instead:
              stm32mp-flash flash --port 3-1.2 …

            Why: the board keeps VID 0483 and PID df11 (0afb for fastboot) from the ROM through TF-A to U-Boot, but its product string, revision and sometimes serial change at every stage, so only IDs or the port may be matched.
            Pitfalls:
              - `--device /dev/bus/usb/BBB/DDD` copies one node at start; the board gets a new device number at every stage, so the container loses it.
              - Major 189 is the USB device node class; the rule grants all USB devices, which `--privileged` also would, with much more.
              - udev rules and permissions live on the host: install them there (`sudo stm32mp-flash udev-rules --install`).
              - Hot-plug events may not reach the container; the tool then polls /dev/bus/usb.
              - Docker Desktop on macOS/Windows has no direct USB access; run the flasher on the host or in a Linux VM with passthrough.
              - Rootless Podman: device cgroup rules are not confirmed to apply; add `--group-add keep-groups` so your host group (e.g. plugdev) reaches the node, or run rootful with sudo.
            """# + "\n"
        #expect(
            PassthroughAdvisor.advice(for: .podman, vm: "dev", port: PortPath("3-1.2"), insideGuest: true) == expected)
    }
}
