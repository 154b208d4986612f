/// What U-Boot knows about a storage device when it plans the partitions (from `mmc_init`, MTD
/// or DRAM). Defaults when the user gives none are in `DeviceGeometry.defaults(for:eMMC:)`.
public struct DeviceGeometry: Sendable, Hashable, Codable {
    /// User-area size in bytes; nil when unknown (the last partition's size is then unknown).
    public var size: UInt64?
    /// MMC block size (512).
    public var blockSize: UInt64
    /// Erase unit in bytes: MMC erase group × block size, MTD erase block, 1 for RAM.
    public var eraseSize: UInt64
    /// eMMC hardware boot partition size (boot1/boot2); nil on SD cards and MTD.
    public var bootPartitionSize: UInt64?

    public init(size: UInt64?, blockSize: UInt64 = 512, eraseSize: UInt64, bootPartitionSize: UInt64? = nil) {
        self.size = size
        self.blockSize = blockSize
        self.eraseSize = eraseSize
        self.bootPartitionSize = bootPartitionSize
    }

    /// Documented defaults (docs/layout-format.md, "Device geometry"): SD 512 B erase, eMMC
    /// 512 KiB erase groups and 4 MiB boot partitions, NOR 64 KiB, NAND 256 KiB, SPI-NAND
    /// 128 KiB, RAM 1 B. An MMC is taken for an eMMC when a line uses boot1/boot2 on it or its
    /// index is not 0 (ST boards: mmc0 = SD card on SDMMC1, mmc1 = eMMC on SDMMC2).
    public static func defaults(for target: LayoutTarget, eMMC: Bool, size: UInt64? = nil) -> DeviceGeometry {
        switch target.kind {
        case .mmc where eMMC: DeviceGeometry(size: size, eraseSize: 512 * 1024, bootPartitionSize: 4 << 20)
        case .mmc: DeviceGeometry(size: size, eraseSize: 512)
        case .nor: DeviceGeometry(size: size, eraseSize: 64 * 1024)
        case .nand: DeviceGeometry(size: size, eraseSize: 256 * 1024)
        case .spiNand: DeviceGeometry(size: size, eraseSize: 128 * 1024)
        case .ram, .none: DeviceGeometry(size: size, eraseSize: 1)
        }
    }

    /// GPT header + entries take 34 blocks at each end (`GPT_HEADER_SZ`).
    static let gptBlocks: UInt64 = 34

    /// U-Boot's usable range on this device: `first` is the lowest allowed offset, `last` the
    /// end of the last partition (nil when the size is unknown).
    func usableRange(for kind: TargetKind) -> (first: UInt64, last: UInt64?) {
        switch kind {
        case .mmc:
            let blocks = size.map { $0 / blockSize }
            if eraseSize / blockSize > Self.gptBlocks {
                let group = eraseSize / blockSize
                return (eraseSize, blocks.map { $0 >= group ? ($0 - group) * blockSize : 0 })
            }
            return (
                Self.gptBlocks * blockSize,
                blocks.map { $0 >= Self.gptBlocks + 1 ? ($0 - Self.gptBlocks - 1) * blockSize : 0 }
            )
        case .ram:
            return (0, size)
        default:
            return (0, size)
        }
    }
}

/// One partition as U-Boot will lay it out.
public struct PlannedPartition: Sendable, Hashable, Codable {
    public var line: LayoutLine
    /// Byte offset on the device (0 for boot1/boot2 and RawImage).
    public var offset: UInt64
    /// Size in bytes; nil when it runs to a device end of unknown size.
    public var size: UInt64?
    /// GPT entry number (1-based) when U-Boot writes a GPT with it.
    public var gptNumber: Int?
    /// 1 or 2 for eMMC boot partitions.
    public var hardwarePartition: Int?
    /// Partition type GUID written to the GPT.
    public var gptTypeGUID: String?
    /// Fixed unique GUID U-Boot gives rootfs and fip-a/fip-b; nil = random.
    public var gptUniqueGUID: String?
    /// `System` partitions get the legacy-BIOS-bootable attribute.
    public var bootable: Bool
    /// The DFU alternate name U-Boot announces in enumeration 2.
    public var altName: String
}

/// One device of the plan.
public struct DevicePlan: Sendable, Hashable, Codable {
    public var target: LayoutTarget
    public var geometry: DeviceGeometry
    /// Every line on the device is `P`.
    public var fullUpdate: Bool
    /// U-Boot writes a new GPT (MMC in full update). False: partial update or MTD/RAM, and the
    /// partitions must match what is already on the device.
    public var writesGPT: Bool
    /// U-Boot's order: boot2, boot1, then by offset.
    public var partitions: [PlannedPartition]
}

/// A rule of `init_device()` that fails whatever the board's geometry: the device's size and
/// erase unit cannot rescue the layout, so `check` reports these as errors (layout-format.md).
public struct UnconditionalDeviceProblem: Sendable, Hashable {
    public enum Rule: Sendable, Hashable {
        /// Two partitions start at the same offset (`same address`).
        case sameOffset
        /// An MMC partition starts inside the primary GPT (below 34 × 512 bytes).
        case insideGPT
        /// `Binary(n)` with n > 1 where only NAND FSBL copies are allowed.
        case multipleBinary
    }

    public var rule: Rule
    /// U-Boot's message and the line it is about.
    public var error: UBootLayoutError
}

/// `init_device()`: sorts a device's lines, sizes them from the next offset, checks limits and
/// alignment, and derives the GPT U-Boot writes and the alternate names it announces.
public enum DevicePlanner {
    public static func plan(_ device: LayoutDevice, geometry: DeviceGeometry) -> Result<DevicePlan, UBootLayoutError> {
        let kind = device.target.kind
        let (first, last) = geometry.usableRange(for: kind)
        let sorted = sortedAsUBoot(device.lines)
        var partitions: [PlannedPartition] = []
        var gptNumber = 1
        var rootfsSeen = false
        let writesGPT = kind == .mmc && device.isFullUpdate
        for (index, line) in sorted.enumerated() {
            let label = "\(line.name) (0x\(hex(line.id)))"
            if case .binary(let copies) = line.type, copies > 1 {
                if !(kind == .nand || kind == .spiNand) || line.id >= 0x10 || !line.name.hasPrefix("fsbl") {
                    return .failure(
                        UBootLayoutError("\(label): multiple binary \(copies) not supported", line: line.line))
                }
            }
            var planned = PlannedPartition(
                line: line, offset: line.offset.address ?? 0, size: nil, gptNumber: nil, hardwarePartition: nil,
                gptTypeGUID: nil, gptUniqueGUID: nil, bootable: false, altName: "")
            if line.type == .rawImage {
                planned.offset = 0
                planned.size = geometry.size
            } else if line.offset == .boot1 || line.offset == .boot2 {
                guard kind == .mmc else {
                    return .failure(
                        UBootLayoutError(
                            "\(label): hw partition not expected : \(line.offset == .boot1 ? -1 : -2)", line: line.line)
                    )
                }
                planned.hardwarePartition = line.offset == .boot1 ? 1 : 2
                planned.size = geometry.bootPartitionSize
            } else {
                let address = planned.offset
                if index + 1 < sorted.count {
                    let next = sorted[index + 1]
                    let nextAddress = next.offset.address ?? 0
                    guard address < nextAddress else {
                        return .failure(
                            UBootLayoutError(
                                "\(label): same address : 0x\(hex(address)) == \(next.name) (0x\(hex(next.id))): 0x\(hex(nextAddress))",
                                line: line.line))
                    }
                    planned.size = nextAddress - address
                } else if let last {
                    guard address <= last else {
                        return .failure(
                            UBootLayoutError(
                                "\(label): invalid address 0x\(hex(address)) (max=0x\(hex(last)))", line: line.line))
                    }
                    planned.size = last - address
                }
                guard address >= first else {
                    return .failure(
                        UBootLayoutError(
                            "\(label): invalid address 0x\(hex(address)) (min=0x\(hex(first)))", line: line.line))
                }
                planned.gptNumber = gptNumber
                gptNumber += 1
            }
            if geometry.eraseSize > 1, planned.offset % geometry.eraseSize != 0 {
                return .failure(
                    UBootLayoutError(
                        "\(label): not aligned address : 0x\(hex(planned.offset)) on erase size 0x\(hex(geometry.eraseSize))",
                        line: line.line))
            }
            if writesGPT, planned.gptNumber != nil {
                planned.gptTypeGUID = GPTTypes.typeGUID(for: line.type)
                planned.bootable = line.type == .system
                if !rootfsSeen, line.name == "rootfs" || line.name == "rootfs-a" {
                    rootfsSeen = true
                    planned.gptUniqueGUID = GPTTypes.rootfsGUID(mmcIndex: device.target.index)
                }
                if line.type == .fip, let guid = GPTTypes.fipGUID(name: line.name) { planned.gptUniqueGUID = guid }
            }
            planned.altName = altName(planned, device: device.target)
            partitions.append(planned)
        }
        return .success(
            DevicePlan(
                target: device.target, geometry: geometry, fullUpdate: device.isFullUpdate, writesGPT: writesGPT,
                partitions: partitions))
    }

    /// The first byte U-Boot ever lets an MMC partition start at: 34 blocks of 512 bytes hold the
    /// protective MBR and the primary GPT, and a larger erase group only raises the limit.
    public static let firstUsableMMCByte: UInt64 = DeviceGeometry.gptBlocks * 512

    /// Every `init_device()` failure on this device that no geometry avoids, in U-Boot's order
    /// (the device's lines sorted as U-Boot sorts them). Runs on whatever lines parsed, so `check`
    /// reports them even when other lines have errors.
    public static func unconditionalProblems(_ device: LayoutDevice) -> [UnconditionalDeviceProblem] {
        let kind = device.target.kind
        let sorted = sortedAsUBoot(device.lines)
        var problems: [UnconditionalDeviceProblem] = []
        for (index, line) in sorted.enumerated() {
            let label = "\(line.name) (0x\(hex(line.id)))"
            if case .binary(let copies) = line.type, copies > 1,
                !(kind == .nand || kind == .spiNand) || line.id >= 0x10 || !line.name.hasPrefix("fsbl")
            {
                problems.append(
                    .init(
                        rule: .multipleBinary,
                        error: UBootLayoutError("\(label): multiple binary \(copies) not supported", line: line.line)))
            }
            guard line.type != .rawImage, let address = line.offset.address else { continue }
            if index + 1 < sorted.count {
                let next = sorted[index + 1]
                let nextAddress = next.offset.address ?? 0
                if address >= nextAddress {
                    problems.append(
                        .init(
                            rule: .sameOffset,
                            error: UBootLayoutError(
                                "\(label): same address : 0x\(hex(address)) == \(next.name) (0x\(hex(next.id))): 0x\(hex(nextAddress))",
                                line: line.line)))
                }
            }
            if kind == .mmc, address < firstUsableMMCByte {
                problems.append(
                    .init(
                        rule: .insideGPT,
                        error: UBootLayoutError(
                            "\(label): invalid address 0x\(hex(address)) (min=0x\(hex(firstUsableMMCByte)))",
                            line: line.line)))
            }
        }
        return problems
    }

    /// U-Boot's `part_cmp`: boot2, boot1, then by offset (ties keep file order).
    static func sortedAsUBoot(_ lines: [LayoutLine]) -> [LayoutLine] {
        lines.enumerated().sorted { a, b in
            let (ra, rb) = (sortRank(a.element), sortRank(b.element))
            if ra != rb { return ra < rb }
            let (oa, ob) = (a.element.offset.address ?? 0, b.element.offset.address ?? 0)
            return oa != ob ? oa < ob : a.offset < b.offset
        }.map(\.element)
    }

    /// boot2 sorts before boot1, both before the rest (U-Boot compares its negative part ids).
    private static func sortRank(_ line: LayoutLine) -> Int {
        switch line.offset {
        case .boot2: -2
        case .boot1: -1
        case .address: 0
        }
    }

    /// `@<name>/0x<id>/1*<size><unit><a|e>`, sizes with U-Boot's "strictly greater" unit rule.
    public static func altName(_ partition: PlannedPartition, device: LayoutTarget) -> String {
        let size = partition.size ?? 0
        let (value, unit): (UInt64, String) =
            size > 1 << 30
            ? (size >> 30, "G") : size > 1 << 20 ? (size >> 20, "M") : size > 1 << 10 ? (size >> 10, "K") : (size, "B")
        let access = partition.line.isSelected && !partition.line.isEmpty ? "e" : "a"
        let id = String(partition.line.id, radix: 16)
        return
            "@\(partition.line.name)/0x\(id.count < 2 ? "0" + id : id)/1*\(UInt32(truncatingIfNeeded: value))\(unit)\(access)"
    }
}

/// The GUIDs U-Boot's `stm32prog` puts in the GPT (protocol reference §C.11).
public enum GPTTypes {
    public static let linuxReserved = "8DA63339-0007-60C0-C436-083AC8230908"
    public static let fip = "19D5DF83-11B0-457B-BE2C-7559C13142A5"
    public static let fwuMetadata = "8A7A84A0-8387-40F6-AB41-A8B9A5A60D23"
    public static let ubootEnv = "3DE21764-95BD-54BD-A5C3-4ABE786F38A8"
    public static let efiSystem = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    public static let linuxData = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

    public static func typeGUID(for type: PartitionType) -> String {
        switch type {
        case .binary: linuxReserved
        case .fip: fip
        case .fwuMetadata: fwuMetadata
        case .env: ubootEnv
        case .esp: efiSystem
        case .system, .fileSystem, .rawImage: linuxData
        }
    }

    /// The fixed unique GUID of the first `rootfs`/`rootfs-a` on mmc0–mmc2.
    public static func rootfsGUID(mmcIndex: Int) -> String? {
        switch mmcIndex {
        case 0: "E91C4E10-16E6-4C0E-BD0E-77BECF4A3582"
        case 1: "491F6117-415D-4F53-88C9-6E0DE54DEAC6"
        case 2: "FD58F1C7-BE0D-4338-88E9-AD8F050AEB18"
        default: nil
        }
    }

    /// The fixed unique GUIDs of FIP partitions named `fip-a` and `fip-b`.
    public static func fipGUID(name: String) -> String? {
        switch name {
        case "fip-a": "4FD84C93-54EF-463F-A7EF-AE25FF887087"
        case "fip-b": "09C54952-D5BF-45AF-ACEE-335303766FB3"
        default: nil
        }
    }
}
