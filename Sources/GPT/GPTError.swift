public import SystemPackage

/// Why a GPT could not be written or read. Descriptions are full sentences for the CLI.
public enum GPTError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Sector size, sector count or entry count that cannot hold a GPT.
    case invalidGeometry(String)
    case tooManyEntries(count: Int, capacity: Int)
    case nameTooLong(name: String)
    /// A used entry outside [firstUsableLBA, lastUsableLBA] or with lastLBA < firstLBA.
    case partitionOutOfRange(index: Int, name: String, firstLBA: UInt64, lastLBA: UInt64)
    case partitionsOverlap(first: String, second: String)
    case io(path: String, operation: String, Errno)
    /// The file ends before the sector that should hold a GPT structure.
    case truncated(path: String, lba: UInt64)
    case badSignature(lba: UInt64)
    case badHeaderCRC(lba: UInt64, stored: UInt32, computed: UInt32)
    case badEntriesCRC(lba: UInt64, stored: UInt32, computed: UInt32)
    /// A header field this reader does not handle (revision, header size, entry size, positions).
    case unsupportedHeader(lba: UInt64, String)
    /// Primary and backup headers describe different tables.
    case backupMismatch(String)

    public var description: String {
        switch self {
        case .invalidGeometry(let detail): "The disk geometry cannot hold a GPT: \(detail)."
        case .tooManyEntries(let count, let capacity):
            "\(count) partition entries do not fit in a table of \(capacity) entries."
        case .nameTooLong(let name):
            "The partition name \"\(name)\" is longer than the 36 UTF-16 code units a GPT entry holds."
        case .partitionOutOfRange(let index, let name, let first, let last):
            "Partition \(index + 1) (\(name)) spans LBA \(first)–\(last), outside the usable area or reversed."
        case .partitionsOverlap(let first, let second): "Partitions \(first) and \(second) overlap."
        case .io(let path, let operation, let errno): "Cannot \(operation) \(path): \(errno)."
        case .truncated(let path, let lba): "\(path) ends before LBA \(lba), where a GPT structure should be."
        case .badSignature(let lba): "No GPT header at LBA \(lba): the \"EFI PART\" signature is missing."
        case .badHeaderCRC(let lba, let stored, let computed):
            "The GPT header at LBA \(lba) is corrupt: its CRC32 is \(hex(stored)) but the bytes give \(hex(computed))."
        case .badEntriesCRC(let lba, let stored, let computed):
            "The GPT entry array at LBA \(lba) is corrupt: its CRC32 is \(hex(stored)) but the bytes give \(hex(computed))."
        case .unsupportedHeader(let lba, let detail): "The GPT header at LBA \(lba) is not supported: \(detail)."
        case .backupMismatch(let detail): "The backup GPT does not match the primary one: \(detail)."
        }
    }
}

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}
