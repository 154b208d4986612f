import FoundationEssentials
import Glibc

/// A boot stage the host sends from RAM (IP `none` lines: 0x01 FSBL, 0x02 DDR FIP, 0x03 FIP).
public struct BootStage: Sendable, Hashable, Codable {
    public var line: LayoutLine
    /// The resolved file path, nil when the line's Binary is none or the file is missing.
    public var file: String?
    public var fileSize: Int64?
}

/// Everything the host needs to flash a layout, in U-Boot's terms.
public struct PartitionPlan: Sendable, Hashable {
    public var bootStages: [BootStage]
    public var devices: [DevicePlan]
    /// Resolved file and size of each line with a Binary, by Id.
    public var files: [UInt8: (path: String, size: Int64)]
    /// The Ids U-Boot will ask for, in order (increasing Id over P-and-not-E device lines).
    public var requestOrder: [UInt8]
    /// The phase 0x00 payload.
    public var payload: LayoutPayload
    /// Things worth saying about the plan (partial updates, unknown sizes …).
    public var notes: [String]

    public static func == (a: PartitionPlan, b: PartitionPlan) -> Bool {
        a.bootStages == b.bootStages && a.devices == b.devices && a.requestOrder == b.requestOrder
            && a.payload == b.payload && a.notes == b.notes
            && a.files.mapValues { "\($0.path)|\($0.size)" } == b.files.mapValues { "\($0.path)|\($0.size)" }
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(payload) }

    /// The planned partition with this Id, on whatever device.
    public func partition(id: UInt8) -> (device: DevicePlan, partition: PlannedPartition)? {
        for device in devices {
            if let partition = device.partitions.first(where: { $0.line.id == id }) { return (device, partition) }
        }
        return nil
    }

    /// Bytes the host sends for phase `id` (0x00: the payload).
    public func bytesToSend(phase id: UInt8) -> Int64? {
        id == 0 ? Int64(payload.bytes.count) : files[id]?.size
    }
}

/// Options of `plan` (and of the engine's own planning).
public struct PlanOptions: Sendable {
    /// Device sizes by IP (`mmc0`), in bytes.
    public var deviceSizes: [String: UInt64]
    /// Erase unit overrides by IP, in bytes.
    public var eraseSizes: [String: UInt64]
    /// eMMC boot partition size override by IP.
    public var bootPartitionSizes: [String: UInt64]
    /// Folder that relative Binary paths are resolved against (the layout's folder).
    public var layoutDirectory: String
    /// Which copy of a relative Binary to use when it exists both ways (`--binaries-from`).
    public var binaryBase: BinaryBase?

    public init(
        deviceSizes: [String: UInt64] = [:], eraseSizes: [String: UInt64] = [:],
        bootPartitionSizes: [String: UInt64] = [:], layoutDirectory: String = "", binaryBase: BinaryBase? = nil
    ) {
        self.deviceSizes = deviceSizes
        self.eraseSizes = eraseSizes
        self.bootPartitionSizes = bootPartitionSizes
        self.layoutDirectory = layoutDirectory
        self.binaryBase = binaryBase
    }

    /// The geometry `plan` uses for a device: documented defaults, then the user's overrides.
    public func geometry(for device: LayoutDevice) -> DeviceGeometry {
        let key = device.target.description
        let isEMMC =
            device.target.kind == .mmc
            && (device.target.index != 0 || device.lines.contains { $0.offset == .boot1 || $0.offset == .boot2 })
        var geometry = DeviceGeometry.defaults(for: device.target, eMMC: isEMMC, size: deviceSizes[key])
        if let erase = eraseSizes[key] { geometry.eraseSize = erase }
        if let boot = bootPartitionSizes[key] { geometry.bootPartitionSize = boot }
        return geometry
    }
}

/// Builds the plan with U-Boot's rules: `treat_partition_list()`, then `init_device()` per device.
public enum PartitionPlanner {
    public static func plan(_ lines: [LayoutLine], options: PlanOptions = .init()) -> Result<
        PartitionPlan, UBootLayoutError
    > {
        let devices: [LayoutDevice]
        switch UBootLayout.devices(lines) {
        case .success(let value): devices = value
        case .failure(let error): return .failure(error)
        }
        var plans: [DevicePlan] = []
        for device in devices {
            switch DevicePlanner.plan(device, geometry: options.geometry(for: device)) {
            case .success(let plan): plans.append(plan)
            case .failure(let error): return .failure(error)
            }
        }
        var files: [UInt8: (path: String, size: Int64)] = [:]
        for line in lines {
            guard let binary = line.binary, line.isBootStage || line.isRequested,
                let path = BinaryPath.resolve(
                    binary, layoutDirectory: options.layoutDirectory, base: options.binaryBase),
                let size = fileSize(path)
            else { continue }
            files[line.id] = (path, size)
        }
        let stages = lines.filter(\.isBootStage).map {
            BootStage(line: $0, file: files[$0.id]?.path, fileSize: files[$0.id]?.size)
        }
        var notes: [String] = []
        for plan in plans {
            if plan.target.kind == .mmc, !plan.fullUpdate {
                notes.append(
                    "\(plan.target): partial update (a line is not P): U-Boot writes no GPT; each partition must match the one already on the device"
                )
            }
            if plan.target.isMTD {
                notes.append(
                    "\(plan.target): MTD partitions are never created; each one must match the board's device-tree partition of the same rank"
                )
            }
            if plan.geometry.size == nil, plan.target.kind != .ram,
                let last = plan.partitions.last(where: { $0.gptNumber != nil })
            {
                notes.append(
                    "\(plan.target): size unknown, so '\(last.line.name)' runs to the device end (give --device-size \(plan.target)=SIZE)"
                )
            }
        }
        let requested = plans.flatMap(\.partitions).filter { $0.line.isRequested }.map(\.line.id).sorted()
        return .success(
            PartitionPlan(
                bootStages: stages, devices: plans, files: files, requestOrder: requested,
                payload: LayoutPayload.normalized(lines), notes: notes))
    }

    /// Size of a regular file, from `stat(2)`.
    public static func fileSize(_ path: String) -> Int64? {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int64(info.st_size)
    }
}
