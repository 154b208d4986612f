public import FlashLayout

/// The partition string of U-Boot's `gpt write mmc <dev> "<string>"`, built the way `stm32prog`'s
/// `create_gpt_partitions()` builds it from the same plan (protocol reference §C.11): one
/// `name=…,start=0x…,size=0x…,type=…[,bootable][,uuid=…];` per GPT partition in plan order,
/// eMMC boot partitions and RawImage lines left out. Types are written as GUIDs (the plan's, so
/// ENV gets U-Boot's 3DE21764-95BD-… and not the 95DB typo of ST's toolbox); a last partition of
/// unknown size runs to the device end (`size=-`).
public enum GPTWriteSpec {
    /// nil when U-Boot writes no GPT on this device (not MMC, or a partial update).
    public static func partitions(_ device: DevicePlan) -> String? {
        guard device.writesGPT else { return nil }
        var text = ""
        for partition in device.partitions where partition.gptNumber != nil {
            text += "name=\(partition.line.name),start=0x\(String(partition.offset, radix: 16))"
            text += ",size=" + (partition.size.map { "0x" + String($0, radix: 16) } ?? "-")
            if let type = partition.gptTypeGUID { text += ",type=\(type)" }
            if partition.bootable { text += ",bootable" }
            if let unique = partition.gptUniqueGUID { text += ",uuid=\(unique)" }
            text += ";"
        }
        return text.isEmpty ? nil : text
    }
}
