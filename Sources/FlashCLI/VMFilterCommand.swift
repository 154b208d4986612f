import ArgumentParser
import Diagnostics
import USBModel

/// `stm32mp-flash vm-filter`: the passthrough configuration that survives every re-enumeration.
struct VMFilterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vm-filter",
        abstract: "Print the VM/WSL/container USB passthrough setup that keeps the board attached at every stage.",
        discussion: """
            The board re-enumerates as ROM, TF-A and U-Boot with new product strings: the recipes \
            match VID 0483 (PIDs df11, 0afb) or the physical port only. Without --for, the hypervisor \
            or container this runs in is detected.
            """)

    @Option(
        name: .customLong("for"),
        help: ArgumentHelp(
            "Hypervisor or runtime: \(PassthroughTarget.allCases.map(\.rawValue).joined(separator: ", ")).",
            valueName: "NAME"),
        completion: .list(PassthroughTarget.allCases.map(\.rawValue)))
    var target: String?

    @Option(
        help: ArgumentHelp(
            "VM name (VirtualBox, VMware .vmx, libvirt domain), Proxmox VMID, or container image.", valueName: "NAME"))
    var vm: String?

    @Option(
        help: ArgumentHelp(
            "Match this host port (bus-port[.port…], e.g. 3-1.2) where the hypervisor can.", valueName: "PATH"))
    var port: String?

    @Option(help: ArgumentHelp("Detect the environment below DIR instead of /.", valueName: "DIR"))
    var root = "/"

    func validate() throws {
        if let target, PassthroughTarget(rawValue: target.lowercased()) == nil {
            throw ValidationError(
                "Unknown --for '\(target)'; use one of: \(PassthroughTarget.allCases.map(\.rawValue).joined(separator: ", "))."
            )
        }
        if let port, PortPath(port) == nil {
            throw ValidationError(
                "--port '\(port)' is not a port path like 3-1.2 (bus, dash, ports separated by dots).")
        }
    }

    func run() async throws {
        let detected = EnvironmentProbe.detect(root: root).passthroughTargets
        let targets: [PassthroughTarget]
        if let target, let chosen = PassthroughTarget(rawValue: target.lowercased()) {
            targets = [chosen]
        } else if detected.isEmpty {
            throw ValidationError(
                "No VM, WSL 2 or container detected here: pass --for with the hypervisor or runtime to configure.")
        } else {
            targets = detected
        }
        let recipes = targets.map { target in
            PassthroughAdvisor.advice(
                for: target, vm: vm, port: port.flatMap(PortPath.init), insideGuest: detected.contains(target))
        }
        print(recipes.joined(separator: "\n"), terminator: "")
    }
}
