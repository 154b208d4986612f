import FlashLayout
import GPT

/// The GPT U-Boot writes on a full-update MMC device (`gpt write mmc …`, §C.11): protective MBR,
/// primary and backup tables, one entry per planned partition with a GPT number (boot
/// partitions and RawImage lines excluded), fixed unique GUIDs where U-Boot has them, random ones elsewhere (as U-Boot).
enum UBootGPT {
    static func write(_ plan: DevicePlan, board: VirtualBoard) throws {
        let name = plan.target.description
        guard let size = board.storage.size(device: name) else {
            throw UBootFailure(message: UBootLayoutInterpreter.notFoundMessage(plan.target))
        }
        let block = plan.geometry.blockSize
        var entries: [GPTPartitionEntry] = []
        for partition in plan.partitions.sorted(by: { ($0.gptNumber ?? 0) < ($1.gptNumber ?? 0) })
        where partition.gptNumber != nil {
            guard let typeText = partition.gptTypeGUID, let type = GUID(typeText), let length = partition.size,
                length >= block
            else {
                throw UBootFailure(message: "GPT partitionning fail: \(partition.line.name)")
            }
            let unique = partition.gptUniqueGUID.flatMap(GUID.init) ?? GUID.random()
            var entry = GPTPartitionEntry(
                name: partition.line.name, typeGUID: type, uniqueGUID: unique, firstLBA: partition.offset / block,
                lastLBA: (partition.offset + length) / block - 1)
            entry.legacyBIOSBootable = partition.bootable
            entries.append(entry)
        }
        let disk = GPTDisk(
            totalSectors: size / block, diskGUID: GUID.random(), entries: entries, sectorSize: Int(block))
        do {
            try board.storage.writeGPT(disk, device: name)
        } catch {
            throw UBootFailure(message: "GPT partitionning fail: \(error)")
        }
        board.console("GPT partitionning on mmc \(plan.target.index): \(entries.count) partitions")
    }
}
