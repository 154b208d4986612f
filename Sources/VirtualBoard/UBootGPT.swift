import FlashLayout
import GPT

/// The GPT U-Boot writes on a full-update MMC device (`gpt write mmc …`, §C.11): protective MBR,
/// primary and backup tables, one entry per planned partition with a GPT number (boot
/// partitions and RawImage lines excluded), fixed unique GUIDs where U-Boot has them.
enum UBootGPT {
    static func write(_ plan: DevicePlan, board: VirtualBoard) throws {
        let name = plan.target.description
        guard let size = board.storage.size(device: name) else {
            throw UBootFailure(message: UBootLayoutInterpreter.notFoundMessage(plan.target))
        }
        // U-Boot takes random GUIDs; the board derives them from its serial and device so that
        // runs are reproducible.
        var generator = SeededGenerator(seed: board.configuration.serial + name)
        let block = plan.geometry.blockSize
        var entries: [GPTPartitionEntry] = []
        for partition in plan.partitions.sorted(by: { ($0.gptNumber ?? 0) < ($1.gptNumber ?? 0) }) where partition.gptNumber != nil {
            guard let typeText = partition.gptTypeGUID, let type = GUID(typeText), let length = partition.size, length >= block else {
                throw UBootFailure(message: "GPT partitionning fail: \(partition.line.name)")
            }
            let unique = partition.gptUniqueGUID.flatMap(GUID.init) ?? GUID.random(using: &generator)
            var entry = GPTPartitionEntry(
                name: partition.line.name, typeGUID: type, uniqueGUID: unique, firstLBA: partition.offset / block,
                lastLBA: (partition.offset + length) / block - 1)
            entry.legacyBIOSBootable = partition.bootable
            entries.append(entry)
        }
        let disk = GPTDisk(
            totalSectors: size / block, diskGUID: GUID.random(using: &generator), entries: entries, sectorSize: Int(block))
        do {
            try disk.write(to: try board.storage.prepareImage(device: name))
        } catch {
            throw UBootFailure(message: "GPT partitionning fail: \(error)")
        }
        board.console("GPT partitionning on mmc \(plan.target.index): \(entries.count) partitions")
    }
}

/// SplitMix64, seeded from a string: reproducible "random" GUIDs.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: String) {
        state = seed.utf8.reduce(0xCBF2_9CE4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 }
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
