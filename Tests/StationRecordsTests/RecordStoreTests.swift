import Foundation
import StationRecords
import TestSupport
import Testing

@Suite("Attempt records in SQLite")
struct RecordStoreTests {
    func start(port: String = "1-1.2", serial: String? = "0038001E3038510136383630", at seconds: Double = 0)
        -> AttemptStart
    {
        AttemptStart(
            serial: serial, port: port, soc: "mp15", layoutPath: "/lines/a.tsv",
            layoutSHA256: String(repeating: "ab", count: 32),
            started: Date(timeIntervalSince1970: 1_800_000_000 + seconds), toolVersion: "0.1.0", hostName: "line-7")
    }

    let fsbl = PartitionRecord(
        id: 0x01, name: "fsbl1-boot", bytes: 262_144, sha256: String(repeating: "1", count: 64), verified: false)
    let rootfs = PartitionRecord(
        id: 0x21, name: "rootfs", bytes: 1 << 20, sha256: String(repeating: "2", count: 64), verified: true)

    @Test("an attempt is unfinished from its start until its end is written, then complete with its partitions")
    func lifecycle() async throws {
        let directory = try TemporaryDirectory()
        let store = try RecordStore(path: directory.file("records.sqlite"))
        let id = try await store.begin(start())
        var stored = try await store.attempts()
        #expect(stored.count == 1)
        #expect(stored[0].result == .unfinished)
        #expect(stored[0].ended == nil)
        #expect(stored[0].partitions.isEmpty)

        try await store.finish(
            id,
            AttemptEnd(
                result: .done, ended: Date(timeIntervalSince1970: 1_800_000_021.5), serial: nil,
                partitions: [fsbl, rootfs]))
        stored = try await store.attempts()
        #expect(stored[0].result == .done)
        #expect(
            stored[0].start.serial == "0038001E3038510136383630", "a nil serial at the end keeps the one seen at start")
        #expect(stored[0].ended == Date(timeIntervalSince1970: 1_800_000_021.5))
        #expect(stored[0].partitions == [fsbl, rootfs])
        #expect(stored[0].start == start())

        // A reopened store (another process, `station report`) reads the same.
        let reopened = try RecordStore(path: directory.file("records.sqlite"))
        #expect(try await reopened.attempts() == stored)
    }

    @Test("a finish that fails half-way is rolled back: the row stays unfinished with no partitions")
    func finishIsOneTransaction() async throws {
        let directory = try TemporaryDirectory()
        let store = try RecordStore(path: directory.file("records.sqlite"))
        let id = try await store.begin(start())
        // The second partition repeats the first one's Id: its INSERT fails after the UPDATE and
        // the first INSERT ran.
        await #expect(throws: RecordStoreError.self) {
            try await store.finish(
                id, AttemptEnd(result: .failed, ended: Date(), diagnosisCode: "write-error", partitions: [fsbl, fsbl]))
        }
        let stored = try await store.attempts()
        #expect(stored[0].result == .unfinished)
        #expect(stored[0].diagnosisCode == nil)
        #expect(stored[0].partitions.isEmpty)
        // Finishing twice is refused too.
        try await store.finish(id, AttemptEnd(result: .cancelled, ended: Date()))
        await #expect(throws: RecordStoreError.self) {
            try await store.finish(id, AttemptEnd(result: .done, ended: Date()))
        }
        #expect(try await store.attempts()[0].result == .cancelled)
    }

    @Test("--since keeps attempts started at or after the time")
    func since() async throws {
        let directory = try TemporaryDirectory()
        let store = try RecordStore(path: directory.file("records.sqlite"))
        for (index, port) in ["1-1.1", "1-1.2", "1-1.3"].enumerated() {
            _ = try await store.begin(start(port: port, at: Double(index) * 3600))
        }
        let since = try #require(Timestamp.parse("2027-01-15T09:00:00Z"))
        #expect(Timestamp.format(Date(timeIntervalSince1970: 1_800_000_000)) == "2027-01-15T08:00:00.000Z")
        #expect(try await store.attempts(since: since).map(\.start.port) == ["1-1.2", "1-1.3"])
        #expect(try await store.attempts(since: Timestamp.parse("2027-01-16")).isEmpty)
    }

    @Test("CSV and JSON exports carry every field")
    func exports() async throws {
        let directory = try TemporaryDirectory()
        let store = try RecordStore(path: directory.file("records.sqlite"))
        let failed = try await store.begin(start(port: "1-1.1"))
        try await store.finish(
            failed,
            AttemptEnd(
                result: .failed, ended: Date(timeIntervalSince1970: 1_800_000_009), diagnosisCode: "write-error",
                diagnosisCause: "U-Boot could not write \"rootfs\", a storage error", partitions: [fsbl]))
        _ = try await store.begin(start(port: "1-1.2", serial: nil, at: 1))
        let attempts = try await store.attempts()

        let csv = RecordExport.csv(attempts).split(separator: "\r\n").map(String.init)
        #expect(csv.count == 3)
        #expect(csv[0] == RecordExport.csvColumns.joined(separator: ","))
        #expect(
            csv[1]
                == "1,0038001E3038510136383630,1-1.1,mp15,/lines/a.tsv,\(String(repeating: "ab", count: 32)),"
                + "2027-01-15T08:00:00.000Z,2027-01-15T08:00:09.000Z,failed,write-error,"
                + "\"U-Boot could not write \"\"rootfs\"\", a storage error\",0.1.0,line-7,"
                + "0x01:fsbl1-boot:262144:\(String(repeating: "1", count: 64)):not-verified")
        #expect(csv[2].hasPrefix("2,,1-1.2,mp15,"))
        #expect(csv[2].contains(",,unfinished,,,0.1.0,line-7,"))

        let json = try RecordExport.json(attempts)
        let root = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let rows = try #require(root["attempts"] as? [[String: Any]])
        #expect(rows.count == 2)
        #expect(
            Set(rows[1].keys) == [
                "id", "serial", "port", "soc", "layout", "layoutSHA256", "started", "ended", "result", "diagnosisCode",
                "diagnosisCause", "toolVersion", "host", "partitions",
            ])
        #expect(rows[1]["serial"] is NSNull)
        #expect(rows[1]["result"] as? String == "unfinished")
        let partition = try #require((rows[0]["partitions"] as? [[String: Any]])?.first)
        #expect(partition["id"] as? String == "0x01")
        #expect(partition["bytes"] as? Int == 262_144)
        #expect(partition["verified"] as? Bool == false)
    }

    @Test("SHA-256 of a file matches sha256sum")
    func digest() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("image.bin")
        let bytes = (0..<3_000_001).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let sha256sum = try ExternalTool("sha256sum", package: "coreutils").run([path])
        let expected = String(sha256sum.standardOutput.prefix(64))
        #expect(try FileDigest.sha256(path: path) == expected)
        #expect(FileDigest.sha256(bytes: bytes) == expected)
        #expect(throws: FileDigestError.self) { try FileDigest.sha256(path: directory.file("missing")) }
    }

    @Test("an unwritable database names the file")
    func unwritable() throws {
        #expect {
            try RecordStore(path: "/nonexistent-folder/records.sqlite")
        } throws: { error in
            "\(error)".hasPrefix("/nonexistent-folder/records.sqlite: attempt records:")
        }
    }
}
