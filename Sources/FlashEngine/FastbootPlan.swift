public import FlashLayout
public import UBootScript

/// How partitions reach the storage once U-Boot runs (`flash --transport`).
public enum FlashTransport: String, Sendable, Hashable, CaseIterable, Codable {
    /// U-Boot `stm32prog` over DFU: the layout at phase 0x00, then each partition (the default).
    case dfu
    /// Hand U-Boot a script at phase 0x00 that starts fastboot, then flash by partition name over
    /// bulk transfers. UNCONFIRMED on hardware.
    case fastboot
    /// Try the fast path; continue over DFU when the layout does not fit it or U-Boot falls back.
    case auto
}

/// What the fast path does with a layout: the one MMC device fastboot writes, the hand-off
/// script, and the fastboot steps in order. User-area partitions first (by Id, as U-Boot would
/// ask), `erase` for `PED` lines without a file, eMMC boot partitions last, each followed by
/// `oem bootbus`/`oem partconf` as `stm32prog` does after a boot partition (the fastboot
/// reference §3 explains why boot partitions go last: U-Boot leaves the hardware partition
/// selected after a boot-partition write).
public struct FastbootPlan: Sendable, Hashable {
    public enum Step: Sendable, Hashable {
        /// Send the file of line `id` to the GPT partition `name`.
        case flash(id: UInt8, name: String)
        /// Erase the GPT partition of line `id` (PED without a file).
        case erase(id: UInt8, name: String)
        /// Send the file of line `id` to eMMC boot partition `hardwarePartition` (1 or 2).
        case flashBoot(id: UInt8, target: String, hardwarePartition: Int)
        /// `oem bootbus: 0 0 0` then `oem partconf: 1 <n>` (boot from boot partition n, access user).
        case selectBoot(hardwarePartition: Int)
    }

    /// The device the script writes the GPT on and fastboot flashes.
    public var device: DevicePlan
    public var script: HandoffScript
    public var steps: [Step]
    /// Line Ids the steps send a file for (what a successful run delivered).
    public var flashedIDs: [UInt8] {
        steps.compactMap { step in
            switch step {
            case .flash(let id, _), .flashBoot(let id, _, _): id
            case .erase, .selectBoot: nil
            }
        }
    }

    /// The fastboot target line `id` is sent to.
    public func stepName(_ id: UInt8) -> String {
        for step in steps {
            switch step {
            case .flash(id, let name), .erase(id, let name), .flashBoot(id, let name, _): return name
            default: continue
            }
        }
        return device.partitions.first { $0.line.id == id }?.line.name ?? "0x\(String(id, radix: 16))"
    }

    /// Why a layout cannot take the fast path.
    public struct Unsuitable: Error, Sendable, Hashable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    public init(_ plan: PartitionPlan) throws(Unsuitable) {
        let used = plan.devices.filter { device in
            device.partitions.contains { $0.line.isRequested || $0.line.isDelete }
        }
        guard used.count == 1, let device = used.first else {
            throw Unsuitable(
                reason: used.isEmpty
                    ? "the layout programs no partition"
                    : "the layout programs \(used.map(\.target.description).joined(separator: ", ")); fastboot flashes one MMC device"
            )
        }
        guard device.target.kind == .mmc else {
            throw Unsuitable(reason: "fastboot on ST's U-Boot flashes MMC only; the layout programs \(device.target)")
        }
        if let raw = device.partitions.first(where: { $0.line.type == .rawImage && $0.line.isRequested }) {
            throw Unsuitable(
                reason: "line \(raw.line.line) '\(raw.line.name)' is a RawImage, which has no partition name")
        }
        var user: [Step] = []
        var boot: [Step] = []
        for partition in device.partitions.sorted(by: { $0.line.id < $1.line.id }) {
            let line = partition.line
            if let hardwarePartition = partition.hardwarePartition {
                guard line.isRequested else { continue }
                boot.append(
                    .flashBoot(
                        id: line.id, target: "\(device.target)boot\(hardwarePartition - 1)",
                        hardwarePartition: hardwarePartition))
                boot.append(.selectBoot(hardwarePartition: hardwarePartition))
            } else if line.isRequested {
                user.append(.flash(id: line.id, name: line.name))
            } else if line.isSelected, line.isDelete {
                user.append(.erase(id: line.id, name: line.name))
            }
        }
        self.device = device
        script = HandoffScript(device: device)
        steps = user + boot
    }
}
