import FlashLayout
import GPT

/// An error U-Boot reports through GetPhase (`stm32prog_err()` text).
struct UBootFailure: Error {
    var message: String
}

/// A layout U-Boot accepted; `initialize` is the device init run at the DETACH (§C.4): plans,
/// erases, GPT writes. It returns the partitions of enumeration 2 or the first error.
struct UBootLayoutSession {
    var lines: [LayoutLine]

    func initialize(_ board: VirtualBoard) -> Result<UBootProgram, UBootFailure> {
        UBootLayoutInterpreter.initializeDevices(lines, board: board)
    }
}

/// Bridges U-Boot's layout handling (the FlashLayout target) to the virtual U-Boot.
enum UBootLayoutInterpreter {
    /// Parses a received layout as U-Boot's `parse_flash_layout()` (optional STM32 header).
    static func parse(_ bytes: [UInt8], fault: FaultScenario = .none) -> Result<UBootLayoutSession, UBootFailure> {
        if fault == .layoutRejected { return .failure(olderUBootRejection(bytes)) }
        switch UBootLayout.parse(bytes) {
        case .success(let lines): return .success(UBootLayoutSession(lines: lines))
        case .failure(let error): return .failure(UBootFailure(message: error.message))
        }
    }

    /// layout-rejected: an older U-Boot that does not know the newer types (FIP v2021.10,
    /// FWU_MDATA/ENV/ESP v2022.10) stops at the first line using one (§C.10.1 version notes).
    static func olderUBootRejection(_ bytes: [UInt8]) -> UBootFailure {
        let text = hasSTM32Magic(bytes) && bytes.count >= 256 ? Array(bytes.dropFirst(256)) : bytes
        let lines = text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        for (index, line) in lines.enumerated() {
            let fields = line.split(separator: UInt8(ascii: "\t")).map { String(decoding: $0, as: UTF8.self) }
            guard fields.count >= 6, !(fields.first?.hasPrefix("#") ?? true) else { continue }
            let type = fields[3].filter { $0 != "\r" }
            if ["FIP", "FWU_MDATA", "ENV", "ESP"].contains(type) {
                return UBootFailure(message: "Layout line \(index + 1): type parsing error : '\(type)'")
            }
        }
        return UBootFailure(message: "Layout: invalid FlashLayout")
    }

    /// The board's geometry of `target`; nil when the board has no such device.
    static func geometry(_ target: LayoutTarget, board: VirtualBoard) -> DeviceGeometry? {
        if target.kind == .ram { return DeviceGeometry(size: nil, eraseSize: 1) }
        guard let device = board.storage.device(named: target.description) else { return nil }
        return DeviceGeometry(
            size: device.size, eraseSize: device.eraseSize, bootPartitionSize: device.bootPartitionSize)
    }

    /// `stm32prog_devices_init()`: group by device, plan each, then erase `D` RawImage lines,
    /// write the GPT of full-update MMC devices, erase the other `D` lines.
    static func initializeDevices(_ lines: [LayoutLine], board: VirtualBoard) -> Result<UBootProgram, UBootFailure> {
        let devices: [LayoutDevice]
        switch UBootLayout.devices(lines) {
        case .success(let found): devices = found
        case .failure(let error): return .failure(UBootFailure(message: error.message))
        }
        var plans: [DevicePlan] = []
        for device in devices {
            guard let geometry = geometry(device.target, board: board) else {
                return .failure(UBootFailure(message: notFoundMessage(device.target)))
            }
            switch DevicePlanner.plan(device, geometry: geometry) {
            case .success(let plan):
                if let mismatch = partialUpdateMismatch(plan, board: board) { return .failure(mismatch) }
                plans.append(plan)
            case .failure(let error): return .failure(UBootFailure(message: error.message))
            }
        }
        var program = UBootProgram(partitions: [])
        do {
            for plan in plans {
                for partition in plan.partitions where partition.line.isDelete && partition.line.type == .rawImage {
                    try erase(partition, plan: plan, board: board, program: &program)
                }
            }
            for plan in plans where plan.writesGPT {
                try UBootGPT.write(plan, board: board)
                program.gptWrites += 1
            }
            for plan in plans {
                for partition in plan.partitions where partition.line.isDelete && partition.line.type != .rawImage {
                    try erase(partition, plan: plan, board: board, program: &program)
                }
            }
        } catch let failure as UBootFailure {
            return .failure(failure)
        } catch {
            return .failure(UBootFailure(message: "\(error)"))
        }
        program.partitions = plans.flatMap { plan in
            plan.partitions.map { partition in
                UBootPartition(
                    id: partition.line.id, name: partition.line.name, size: partition.size ?? 0,
                    programmed: partition.line.isSelected && !partition.line.isEmpty,
                    device: plan.target.kind == .ram ? nil : plan.target.description,
                    hardwarePartition: partition.hardwarePartition, offset: partition.offset,
                    alternateString: partition.altName)
            }
        }.sorted { $0.id < $1.id }
        return .success(program)
    }

    /// `init_device()` on a partial update of an MMC: partition N must match entry N of the GPT
    /// already on the device, start and size (MTD partition tables are not modelled).
    static func partialUpdateMismatch(_ plan: DevicePlan, board: VirtualBoard) -> UBootFailure? {
        guard plan.target.kind == .mmc, !plan.fullUpdate else { return nil }
        let disk = try? GPTDisk.read(from: try board.storage.prepareImage(device: plan.target.description))
        let block = plan.geometry.blockSize
        for partition in plan.partitions {
            guard let number = partition.gptNumber else { continue }
            let label = "\(partition.line.name) (0x\(String(partition.line.id, radix: 16)))"
            guard let entries = disk?.entries, number <= entries.count, entries[number - 1].isUsed else {
                return UBootFailure(message: "\(label):Couldn't find part \(number) on device mmc \(plan.target.index)")
            }
            let entry = entries[number - 1]
            let (start, size) = (entry.firstLBA * block, entry.sectorCount * block)
            if partition.offset != start {
                return UBootFailure(
                    message:
                        "\(label): Bad address for partition \(number) (\(entry.name)) = 0x\(hex(partition.offset)) <> 0x\(hex(start)) expected"
                )
            }
            if let planned = partition.size, planned != size {
                return UBootFailure(
                    message:
                        "\(label): Bad size for partition \(number) (\(entry.name)) at 0x\(hex(partition.offset)) = 0x\(hex(planned)) <> 0x\(hex(size)) expected"
                )
            }
        }
        return nil
    }

    private static func hex(_ value: UInt64) -> String { String(value, radix: 16) }

    private static func erase(
        _ partition: PlannedPartition, plan: DevicePlan, board: VirtualBoard, program: inout UBootProgram
    ) throws {
        guard plan.target.kind != .ram, let size = partition.size else { return }
        do {
            try board.storage.erase(
                device: plan.target.description, hardwarePartition: partition.hardwarePartition,
                offset: partition.offset,
                length: size)
        } catch {
            let what = plan.target.isMTD ? "MTD erase commands failed (\(error))" : "MMC erase failed"
            throw UBootFailure(message: "\(partition.line.name) (0x\(String(partition.line.id, radix: 16))): \(what)")
        }
        program.erasedBytes += size
    }

    /// U-Boot's message for a device the board does not have.
    static func notFoundMessage(_ target: LayoutTarget) -> String {
        switch target.kind {
        case .mmc: "mmc device \(target.index) not found"
        case .nor, .nand, .spiNand: "MTD device \(target.description) not found"
        default: "invalid target: \(target.kind.rawValue)"
        }
    }
}
