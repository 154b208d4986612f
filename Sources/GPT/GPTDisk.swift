import FileAccess
import SystemPackage

/// A GUID partition table for a whole disk or disk image: protective MBR at LBA 0, primary header
/// at LBA 1 and its entry array from LBA 2, backup entry array and backup header at the end.
public struct GPTDisk: Sendable, Hashable {
    public var sectorSize: Int
    public var totalSectors: UInt64
    public var diskGUID: GUID
    /// Slots of the entry array from the first; trailing unused slots are implied.
    public var entries: [GPTPartitionEntry]
    /// Capacity of the entry array (128 everywhere in practice).
    public var entryCount: Int

    static let signature = Array("EFI PART".utf8)
    static let revision: UInt32 = 0x0001_0000
    static let headerSize = 92

    public init(
        totalSectors: UInt64, diskGUID: GUID = .random(), entries: [GPTPartitionEntry] = [], sectorSize: Int = 512,
        entryCount: Int = 128
    ) {
        self.sectorSize = sectorSize
        self.totalSectors = totalSectors
        self.diskGUID = diskGUID
        self.entries = entries
        self.entryCount = entryCount
    }

    /// Sectors taken by one copy of the entry array (32 for 128 entries of 128 bytes on 512-byte sectors).
    public var entryArraySectors: UInt64 {
        UInt64((entryCount * GPTPartitionEntry.size + sectorSize - 1) / sectorSize)
    }

    /// 34 with the usual geometry: MBR, header, 32 sectors of entries.
    public var firstUsableLBA: UInt64 { 2 + entryArraySectors }

    /// `totalSectors - 34` with the usual geometry.
    public var lastUsableLBA: UInt64 { totalSectors - 2 - entryArraySectors }

    var backupHeaderLBA: UInt64 { totalSectors - 1 }
    var backupEntriesLBA: UInt64 { backupHeaderLBA - entryArraySectors }

    /// Checks everything `write` relies on, so that a table is never half written.
    public func validate() throws(GPTError) {
        guard sectorSize >= 512, sectorSize & (sectorSize - 1) == 0 else {
            throw .invalidGeometry("sector size \(sectorSize) is not a power of two of at least 512")
        }
        guard (1...4096).contains(entryCount) else {
            throw .invalidGeometry("an entry array of \(entryCount) entries is outside 1–4096")
        }
        guard totalSectors > 2 * (1 + entryArraySectors) + 1 else {
            throw .invalidGeometry("\(totalSectors) sectors leave no room between the primary and backup tables")
        }
        guard entries.count <= entryCount else { throw .tooManyEntries(count: entries.count, capacity: entryCount) }
        let used = entries.enumerated().filter { $0.element.isUsed }
        for (index, entry) in used {
            guard entry.name.utf16.count <= GPTPartitionEntry.maximumNameLength else {
                throw .nameTooLong(name: entry.name)
            }
            guard entry.firstLBA >= firstUsableLBA, entry.lastLBA <= lastUsableLBA, entry.firstLBA <= entry.lastLBA
            else {
                throw .partitionOutOfRange(
                    index: index, name: entry.name, firstLBA: entry.firstLBA, lastLBA: entry.lastLBA)
            }
        }
        let sorted = used.map(\.element).sorted { $0.firstLBA < $1.firstLBA }
        for (earlier, later) in zip(sorted, sorted.dropFirst()) where later.firstLBA <= earlier.lastLBA {
            throw .partitionsOverlap(first: earlier.name, second: later.name)
        }
    }
}

// MARK: - On-disk layout

extension GPTDisk {
    /// The entry array, padded with unused slots to `entryCount`.
    func encodedEntries() -> [UInt8] {
        var bytes = entries.flatMap { $0.encoded() }
        bytes += [UInt8](repeating: 0, count: entryCount * GPTPartitionEntry.size - bytes.count)
        return bytes
    }

    /// A header sector for the copy at `lba`, whose entries start at `entriesLBA`.
    func encodedHeader(at lba: UInt64, alternate: UInt64, entriesLBA: UInt64, entriesCRC: UInt32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: sectorSize)
        bytes.replaceSubrange(0..<8, with: Self.signature)
        bytes.store(littleEndian: Self.revision, at: 8)
        bytes.store(littleEndian: UInt32(Self.headerSize), at: 12)
        bytes.store(littleEndian: lba, at: 24)
        bytes.store(littleEndian: alternate, at: 32)
        bytes.store(littleEndian: firstUsableLBA, at: 40)
        bytes.store(littleEndian: lastUsableLBA, at: 48)
        bytes.replaceSubrange(56..<72, with: diskGUID.diskBytes)
        bytes.store(littleEndian: entriesLBA, at: 72)
        bytes.store(littleEndian: UInt32(entryCount), at: 80)
        bytes.store(littleEndian: UInt32(GPTPartitionEntry.size), at: 84)
        bytes.store(littleEndian: entriesCRC, at: 88)
        bytes.store(littleEndian: CRC32.checksum(of: bytes[0..<Self.headerSize]), at: 16)
        return bytes
    }

    /// Sector 0: one partition record of type 0xEE covering the disk (capped at 2³²−1 sectors),
    /// so that MBR-only tools see the disk as in use.
    func encodedProtectiveMBR() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 512)
        let record = 446
        bytes.replaceSubrange(record..<record + 8, with: [0x00, 0x00, 0x02, 0x00, 0xEE, 0xFF, 0xFF, 0xFF])
        bytes.store(littleEndian: UInt32(1), at: record + 8)
        bytes.store(littleEndian: UInt32(min(totalSectors - 1, UInt64(UInt32.max))), at: record + 12)
        bytes[510] = 0x55
        bytes[511] = 0xAA
        return bytes
    }
}

// MARK: - Writing and reading files

extension GPTDisk {
    /// Writes the protective MBR, both headers and both entry arrays with positioned writes. The
    /// file is created if missing and never truncated; every other sector is left as it was, so
    /// sparse images stay sparse.
    public func write(to path: String) throws(GPTError) {
        try validate()
        let entryBytes = encodedEntries()
        let entriesCRC = CRC32.checksum(of: entryBytes)
        let primary = encodedHeader(at: 1, alternate: backupHeaderLBA, entriesLBA: 2, entriesCRC: entriesCRC)
        let backup = encodedHeader(
            at: backupHeaderLBA, alternate: 1, entriesLBA: backupEntriesLBA, entriesCRC: entriesCRC)
        let file = try SectorFile(path: path, sectorSize: sectorSize, writable: true)
        defer { file.close() }
        try file.write(encodedProtectiveMBR(), at: 0)
        try file.write(primary, atLBA: 1)
        try file.write(entryBytes, atLBA: 2)
        try file.write(entryBytes, atLBA: backupEntriesLBA)
        try file.write(backup, atLBA: backupHeaderLBA)
    }

    /// Reads and checks the table of `path`: signature, revision, header CRC and entry-array CRC
    /// of the primary copy, then the same for the backup copy it points to, which must agree.
    public static func read(from path: String, sectorSize: Int = 512) throws(GPTError) -> GPTDisk {
        precondition(sectorSize >= 512 && sectorSize & (sectorSize - 1) == 0, "sector size: a power of two ≥ 512")
        let file = try SectorFile(path: path, sectorSize: sectorSize, writable: false)
        defer { file.close() }
        let primary = try HeaderCopy.read(from: file, at: 1)
        let arraySectors = GPTDisk(
            totalSectors: 0, diskGUID: .zero, sectorSize: sectorSize, entryCount: primary.entryCount
        )
        .entryArraySectors
        guard primary.alternateLBA >= 2 * (1 + arraySectors) + 1 else {
            throw .unsupportedHeader(
                lba: 1, "the backup header would be at LBA \(primary.alternateLBA), inside the primary table")
        }
        let backup = try HeaderCopy.read(from: file, at: primary.alternateLBA)
        guard backup.alternateLBA == 1, backup.entriesCRC == primary.entriesCRC, backup.entries == primary.entries,
            backup.diskGUID == primary.diskGUID, backup.firstUsableLBA == primary.firstUsableLBA,
            backup.lastUsableLBA == primary.lastUsableLBA
        else { throw .backupMismatch("the header at LBA \(primary.alternateLBA) describes another table") }

        var entries = primary.entries
        while let last = entries.last, !last.isUsed { entries.removeLast() }
        let disk = GPTDisk(
            totalSectors: primary.alternateLBA + 1, diskGUID: primary.diskGUID, entries: entries,
            sectorSize: sectorSize, entryCount: primary.entryCount)
        guard disk.firstUsableLBA == primary.firstUsableLBA, disk.lastUsableLBA == primary.lastUsableLBA else {
            throw .unsupportedHeader(
                lba: 1, "usable LBAs \(primary.firstUsableLBA)–\(primary.lastUsableLBA) are not the standard ones")
        }
        return disk
    }
}

/// The fields of one header copy that `read` compares, with its entries already CRC-checked.
private struct HeaderCopy {
    var alternateLBA: UInt64
    var firstUsableLBA: UInt64
    var lastUsableLBA: UInt64
    var diskGUID: GUID
    var entryCount: Int
    var entriesCRC: UInt32
    var entries: [GPTPartitionEntry]

    static func read(from file: SectorFile, at lba: UInt64) throws(GPTError) -> HeaderCopy {
        let sector = try file.read(atLBA: lba, count: file.sectorSize)
        guard Array(sector[0..<8]) == GPTDisk.signature else { throw .badSignature(lba: lba) }
        let headerSize = Int(sector.littleEndian(UInt32.self, at: 12))
        guard headerSize >= GPTDisk.headerSize, headerSize <= file.sectorSize else {
            throw .unsupportedHeader(lba: lba, "header size \(headerSize)")
        }
        var zeroedCRC = Array(sector[0..<headerSize])
        zeroedCRC.store(littleEndian: UInt32(0), at: 16)
        let storedCRC = sector.littleEndian(UInt32.self, at: 16)
        let computedCRC = CRC32.checksum(of: zeroedCRC)
        guard storedCRC == computedCRC else { throw .badHeaderCRC(lba: lba, stored: storedCRC, computed: computedCRC) }
        let revision = sector.littleEndian(UInt32.self, at: 8)
        guard revision == GPTDisk.revision else { throw .unsupportedHeader(lba: lba, "revision \(revision)") }
        guard sector.littleEndian(UInt64.self, at: 24) == lba else {
            throw .unsupportedHeader(lba: lba, "it says it is at LBA \(sector.littleEndian(UInt64.self, at: 24))")
        }
        let entrySize = Int(sector.littleEndian(UInt32.self, at: 84))
        guard entrySize == GPTPartitionEntry.size else { throw .unsupportedHeader(lba: lba, "entry size \(entrySize)") }
        let entryCount = Int(sector.littleEndian(UInt32.self, at: 80))
        guard (1...4096).contains(entryCount) else { throw .unsupportedHeader(lba: lba, "\(entryCount) entries") }

        let entriesLBA = sector.littleEndian(UInt64.self, at: 72)
        let entryBytes = try file.read(atLBA: entriesLBA, count: entryCount * entrySize)
        let storedEntriesCRC = sector.littleEndian(UInt32.self, at: 88)
        let computedEntriesCRC = CRC32.checksum(of: entryBytes)
        guard storedEntriesCRC == computedEntriesCRC else {
            throw .badEntriesCRC(lba: entriesLBA, stored: storedEntriesCRC, computed: computedEntriesCRC)
        }
        return HeaderCopy(
            alternateLBA: sector.littleEndian(UInt64.self, at: 32),
            firstUsableLBA: sector.littleEndian(UInt64.self, at: 40),
            lastUsableLBA: sector.littleEndian(UInt64.self, at: 48),
            diskGUID: GUID(diskBytes: Array(sector[56..<72])), entryCount: entryCount, entriesCRC: storedEntriesCRC,
            entries: (0..<entryCount).map { index in
                GPTPartitionEntry(decoding: Array(entryBytes[index * entrySize..<(index + 1) * entrySize]))
            })
    }
}

/// Positioned reads and writes on an image file, with errors carrying the path.
private struct SectorFile {
    let descriptor: FileDescriptor
    let path: String
    let sectorSize: Int

    init(path: String, sectorSize: Int, writable: Bool) throws(GPTError) {
        do {
            descriptor =
                writable
                ? try FileDescriptor.open(
                    FilePath(path), .readWrite, options: [.create],
                    permissions: [.ownerReadWrite, .groupRead, .otherRead])
                : try FileDescriptor.open(FilePath(path), .readOnly)
        } catch {
            throw .io(path: path, operation: "open", error as? Errno ?? .ioError)
        }
        self.path = path
        self.sectorSize = sectorSize
    }

    func close() { try? descriptor.close() }

    func write(_ bytes: [UInt8], atLBA lba: UInt64) throws(GPTError) {
        try write(bytes, at: Int64(lba) * Int64(sectorSize))
    }

    func write(_ bytes: [UInt8], at offset: Int64) throws(GPTError) {
        do {
            let written = try bytes.withUnsafeBytes { try descriptor.writeAll(toAbsoluteOffset: offset, $0) }
            precondition(written == bytes.count, "writeAll returns the full count")
        } catch {
            throw .io(path: path, operation: "write", error as? Errno ?? .ioError)
        }
    }

    func read(atLBA lba: UInt64, count: Int) throws(GPTError) -> [UInt8] {
        // LBAs come from the file; one past the largest possible file is simply "not there".
        guard lba <= UInt64(Int64.max) / UInt64(sectorSize) - UInt64(count) else {
            throw .truncated(path: path, lba: lba)
        }
        let bytes: [UInt8]
        do {
            bytes = try descriptor.read(count: count, atAbsoluteOffset: Int64(lba) * Int64(sectorSize))
        } catch {
            throw .io(path: path, operation: "read", error as? Errno ?? .ioError)
        }
        guard bytes.count == count else { throw .truncated(path: path, lba: lba) }
        return bytes
    }
}
