import Foundation
import GPT
import Testing

@Suite("CRC32")
struct CRC32Tests {
    @Test(arguments: [
        ("123456789", UInt32(0xCBF4_3926)), ("", 0), ("a", 0xE8B7_BE43),
        ("The quick brown fox jumps over the lazy dog", 0x414F_A339),
    ])
    func knownVectors(text: String, crc: UInt32) {
        #expect(CRC32.checksum(of: Array(text.utf8)) == crc)
    }

    @Test func incrementalEqualsOneShot() {
        var crc = CRC32()
        crc.update(with: Array("12345".utf8))
        crc.update(with: Array("6789".utf8))
        #expect(crc.value == 0xCBF4_3926)
    }
}

@Suite("GUID")
struct GUIDTests {
    @Test func parsesAndPrintsUpperCase() throws {
        let guid = try #require(GUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"))
        #expect(guid.description == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
        #expect(GUID(guid.description) == guid)
    }

    /// The EFI System Partition type as it appears in every GPT on disk.
    @Test func diskBytesAreMixedEndian() throws {
        let guid = try #require(GUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"))
        let disk: [UInt8] = [
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
        ]
        #expect(guid.diskBytes == disk)
        #expect(GUID(diskBytes: disk) == guid)
    }

    @Test(arguments: [
        "", "C12A7328F81F11D2BA4B00A0C93EC93B", "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
        "G12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "C12A7328-F81F-11D2-BA4B00-A0C93EC93B", "{C12A7328-F81F-11D2-BA4B-00A0C93EC93B}",
    ])
    func rejectsMalformedText(text: String) {
        #expect(GUID(text) == nil)
    }

    @Test func randomIsVersion4AndDistinct() {
        let guids = (0..<64).map { _ in GUID.random() }
        #expect(Set(guids).count == 64)
        for guid in guids {
            #expect(guid.canonicalBytes[6] >> 4 == 4)
            #expect(guid.canonicalBytes[8] >> 6 == 0b10)
            #expect(Array(guid.description)[14] == "4")
        }
    }

    @Test func codableAsCanonicalString() throws {
        let guid = try #require(GUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4"))
        let json = try JSONEncoder().encode([guid])
        #expect(String(decoding: json, as: UTF8.self) == "[\"0FC63DAF-8483-4772-8E79-3D69D8477DE4\"]")
        #expect(try JSONDecoder().decode([GUID].self, from: json) == [guid])
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([GUID].self, from: Data("[\"nope\"]".utf8)) }
    }

    @Test func legacyBootableIsAttributeBit2() {
        var entry = GPTPartitionEntry(
            name: "bootfs", typeGUID: .random(), uniqueGUID: .random(), firstLBA: 34, lastLBA: 99)
        entry.attributes = 1 << 60
        entry.legacyBIOSBootable = true
        #expect(entry.attributes == 1 << 60 | 4)
        entry.legacyBIOSBootable = false
        #expect(entry.attributes == 1 << 60)
        #expect(entry.sectorCount == 66)
    }
}
