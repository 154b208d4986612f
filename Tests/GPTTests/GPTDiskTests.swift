import Foundation
import GPT
import TestSupport
import Testing

@Suite("GPT disk images, checked with sfdisk and sgdisk")
struct GPTDiskTests {
    static let sectors: UInt64 = 64 * 1024 * 1024 / 512
    static let linuxData = GUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")!
    static let linuxReserved = GUID("8DA63339-0007-60C0-C436-083AC8230908")!
    static let fip = GUID("19D5DF83-11B0-457B-BE2C-7559C13142A5")!
    static let diskGUID = GUID("6A1B3C4D-5E6F-4A70-8B91-A2B3C4D5E6F7")!

    static let entries: [GPTPartitionEntry] = [
        GPTPartitionEntry(
            name: "fsbl1", typeGUID: linuxReserved, uniqueGUID: GUID("11111111-2222-4333-8444-555555555555")!,
            firstLBA: 34, lastLBA: 545),
        GPTPartitionEntry(
            name: "fip-a", typeGUID: fip, uniqueGUID: GUID("4FD84C93-54EF-463F-A7EF-AE25FF887087")!, firstLBA: 546,
            lastLBA: 4641),
        GPTPartitionEntry(
            name: "bootfs", typeGUID: linuxData, uniqueGUID: GUID("AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE")!,
            firstLBA: 4642, lastLBA: 20_000, attributes: GPTPartitionEntry.legacyBIOSBootableBit),
        GPTPartitionEntry(
            name: "données-ü", typeGUID: linuxData, uniqueGUID: GUID("E91C4E10-16E6-4C0E-BD0E-77BECF4A3582")!,
            firstLBA: 20_480, lastLBA: sectors - 34),
    ]

    let directory: TemporaryDirectory
    init() throws { directory = try TemporaryDirectory(prefix: "gpt") }

    /// A 64 MiB sparse file, as the virtual board's storage is.
    func sparseImage(_ name: String = "disk.img") throws -> String {
        let path = directory.file(name)
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: Self.sectors * 512)
        try handle.close()
        return path
    }

    func writtenImage() throws -> String {
        let path = try sparseImage()
        try GPTDisk(totalSectors: Self.sectors, diskGUID: Self.diskGUID, entries: Self.entries).write(to: path)
        return path
    }

    @Test func geometry() {
        let disk = GPTDisk(totalSectors: Self.sectors)
        #expect(disk.firstUsableLBA == 34)
        #expect(disk.lastUsableLBA == Self.sectors - 34)
        #expect(disk.entryArraySectors == 32)
    }

    @Test func sfdiskReadsWhatWeWrote() throws {
        let path = try writtenImage()
        let result = try ExternalTool("sfdisk", package: "fdisk").run(["--json", path])
        #expect(result.status == 0, "\(result.standardError)")
        let json = try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any]
        let table = try #require(json?["partitiontable"] as? [String: Any])
        #expect(table["label"] as? String == "gpt")
        #expect(table["id"] as? String == Self.diskGUID.description)
        #expect(table["firstlba"] as? Int == 34)
        #expect(table["lastlba"] as? Int == Int(Self.sectors) - 34)
        let partitions = try #require(table["partitions"] as? [[String: Any]])
        #expect(partitions.count == Self.entries.count)
        for (partition, entry) in zip(partitions, Self.entries) {
            #expect(partition["name"] as? String == entry.name)
            #expect(partition["start"] as? Int == Int(entry.firstLBA))
            #expect(partition["size"] as? Int == Int(entry.sectorCount))
            #expect(partition["type"] as? String == entry.typeGUID.description)
            #expect(partition["uuid"] as? String == entry.uniqueGUID.description)
            #expect(partition["attrs"] as? String == (entry.legacyBIOSBootable ? "LegacyBIOSBootable" : nil))
        }
    }

    @Test func sgdiskFindsNoProblems() throws {
        let path = try writtenImage()
        let result = try ExternalTool("sgdisk", package: "gdisk").run(["-v", path])
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput.contains("No problems found."), "\(result.standardOutput)")
    }

    @Test func readsBackItsOwnImage() throws {
        let disk = try GPTDisk.read(from: try writtenImage())
        #expect(disk == GPTDisk(totalSectors: Self.sectors, diskGUID: Self.diskGUID, entries: Self.entries))
    }

    /// The other direction: a table made by sgdisk, including an unused slot before the last entry.
    @Test func readsATableMadeBySgdisk() throws {
        let path = try sparseImage()
        let result = try ExternalTool("sgdisk", package: "gdisk").run([
            "-U", Self.diskGUID.description, "-n", "1:2048:+1M", "-t", "1:8300", "-c", "1:bootfs", "-A", "1:set:2",
            "-n", "3:4096:+2M", "-t", "3:EF00", "-c", "3:esp", "-u", "3:C0FFEE00-0000-4000-8000-000000000001", path,
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let disk = try GPTDisk.read(from: path)
        #expect(disk.diskGUID == Self.diskGUID)
        #expect(disk.totalSectors == Self.sectors)
        #expect(disk.entries.count == 3)
        #expect(disk.entries[0].name == "bootfs" && disk.entries[0].typeGUID == Self.linuxData)
        #expect(disk.entries[0].firstLBA == 2048 && disk.entries[0].lastLBA == 4095)
        #expect(disk.entries[0].legacyBIOSBootable)
        #expect(!disk.entries[1].isUsed)
        #expect(disk.entries[2].name == "esp" && disk.entries[2].firstLBA == 4096)
        #expect(disk.entries[2].typeGUID == GUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"))
        #expect(disk.entries[2].uniqueGUID == GUID("C0FFEE00-0000-4000-8000-000000000001"))
    }

    @Test func leavesOtherSectorsAloneAndStaysSparse() throws {
        let path = try sparseImage()
        let marker = Data(repeating: 0x5A, count: 512)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        for lba: UInt64 in [34, 50_000, Self.sectors - 34] {
            try handle.seek(toOffset: lba * 512)
            handle.write(marker)
        }
        try handle.close()

        try GPTDisk(totalSectors: Self.sectors, diskGUID: Self.diskGUID, entries: Self.entries).write(to: path)

        let after = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        for lba: UInt64 in [34, 50_000, Self.sectors - 34] {
            try after.seek(toOffset: lba * 512)
            #expect(after.readData(ofLength: 512) == marker, "sector \(lba) was changed")
        }
        try after.close()
        var status = stat()
        #expect(stat(path, &status) == 0)
        #expect(status.st_size == Int(Self.sectors) * 512)
        #expect(status.st_blocks * 512 < 1024 * 1024, "the image lost its holes: \(status.st_blocks) blocks")
    }

    @Test func detectsCorruption() throws {
        func corrupted(at offset: UInt64) throws -> String {
            let path = try writtenImage()
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
            try handle.seek(toOffset: offset)
            let byte = handle.readData(ofLength: 1)[0]
            try handle.seek(toOffset: offset)
            handle.write(Data([byte ^ 0x01]))
            try handle.close()
            return path
        }
        func failure(reading path: String) -> GPTError? {
            do {
                _ = try GPTDisk.read(from: path)
                return nil
            } catch { return error }
        }
        #expect(failure(reading: try corrupted(at: 512)) == .badSignature(lba: 1))
        guard case .badHeaderCRC(1, let stored, let computed)? = failure(reading: try corrupted(at: 512 + 40)) else {
            Issue.record("a corrupt primary header was accepted")
            return
        }
        #expect(stored != computed)
        guard case .badEntriesCRC(2, _, _)? = failure(reading: try corrupted(at: 2 * 512 + 56)) else {
            Issue.record("a corrupt entry array was accepted")
            return
        }
        guard
            case .badHeaderCRC(Self.sectors - 1, _, _)? = failure(
                reading: try corrupted(at: (Self.sectors - 1) * 512 + 20))
        else {
            Issue.record("a corrupt backup header was accepted")
            return
        }
    }

    @Test func refusesInvalidTablesBeforeWriting() throws {
        let path = try sparseImage()
        func attempt(_ entries: [GPTPartitionEntry]) throws(GPTError) {
            try GPTDisk(totalSectors: Self.sectors, entries: entries).write(to: path)
        }
        var overlapping = Self.entries
        overlapping[1].firstLBA = 500
        #expect(throws: GPTError.partitionsOverlap(first: "fsbl1", second: "fip-a")) { try attempt(overlapping) }
        var tooLate = Self.entries
        tooLate[3].lastLBA = Self.sectors - 33
        #expect(
            throws: GPTError.partitionOutOfRange(
                index: 3, name: "données-ü", firstLBA: 20_480, lastLBA: Self.sectors - 33)
        ) {
            try attempt(tooLate)
        }
        var longName = Self.entries
        longName[0].name = String(repeating: "n", count: 37)
        #expect(throws: GPTError.nameTooLong(name: longName[0].name)) { try attempt(longName) }
        #expect(throws: GPTError.tooManyEntries(count: 129, capacity: 128)) {
            try attempt(Array(repeating: .unused, count: 129))
        }
        // Nothing was written by the refused attempts.
        #expect(throws: GPTError.badSignature(lba: 1)) { try GPTDisk.read(from: path) }
    }

    @Test func errorsReadAsSentences() {
        let errors: [GPTError] = [
            .badSignature(lba: 1), .badHeaderCRC(lba: 1, stored: 1, computed: 2),
            .partitionsOverlap(first: "a", second: "b"),
            .nameTooLong(name: "x"), .truncated(path: "/x", lba: 9), .backupMismatch("x"),
        ]
        for error in errors { #expect(error.description.hasSuffix(".")) }
        #expect(GPTError.badHeaderCRC(lba: 1, stored: 0xAB, computed: 2).description.contains("0x000000AB"))
    }
}

@Suite("GPT reader on hostile headers")
struct GPTHostileHeaderTests {
    /// Rewrites the primary header's `field` at `offset` and fixes its CRC, so only the reader's
    /// own sanity checks stand between the value and a crash.
    func imageWithPrimaryField(_ value: UInt64, at offset: Int) throws -> (TemporaryDirectory, String) {
        let directory = try TemporaryDirectory(prefix: "gpt-hostile")
        let path = directory.file("disk.img")
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        try GPTDisk(totalSectors: 4096, entries: []).write(to: path)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: 512)
        var header = [UInt8](handle.readData(ofLength: 92))
        for index in 0..<8 { header[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        for index in 16..<20 { header[index] = 0 }
        let crc = CRC32.checksum(of: header)
        for index in 0..<4 { header[16 + index] = UInt8(truncatingIfNeeded: crc >> (8 * index)) }
        try handle.seek(toOffset: 512)
        handle.write(Data(header))
        try handle.close()
        return (directory, path)
    }

    @Test(arguments: [UInt64(1), 0, 33, UInt64.max, 1 << 60])
    func backupPositionIsCheckedBeforeUse(alternate: UInt64) throws {
        let (directory, path) = try imageWithPrimaryField(alternate, at: 32)
        #expect(throws: GPTError.self) { try GPTDisk.read(from: path) }
        directory.remove()
    }

    @Test(arguments: [UInt64.max, 1 << 60, 5000])
    func entryArrayPositionIsCheckedBeforeUse(entriesLBA: UInt64) throws {
        let (directory, path) = try imageWithPrimaryField(entriesLBA, at: 72)
        #expect(throws: GPTError.self) { try GPTDisk.read(from: path) }
        directory.remove()
    }
}
