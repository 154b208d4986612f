import Foundation
import TestSupport
import Testing

/// Big images over real libusb: the built `stm32mp-flash flash` against the emulated MP15 board,
/// whose U-Boot applies the command alternate's offset as `stm32prog` does. One layout carries a
/// mapped rootfs (plain ext4 with bmaptool's map beside it) and three compressed file systems
/// (gzip, xz, zstd); the SD card image is pre-filled with a marker over the rootfs, so a byte the
/// host must not send is seen to keep what the medium held.
@Suite(.timeLimit(.minutes(6))) struct BigImageEmulationTests {
    static let marker: UInt8 = 0xEE

    @Test func mappedAndCompressedFileSystemsLandByteExactThroughTheCommandAlternate() async throws {
        let directory = try ShortTemporaryDirectory()
        let flash = try builtExecutable("stm32mp-flash")
        let examples = try await makeExamples(in: directory)

        // rootfs (8 MiB, plain + map); bootfs (4 MiB) .gz, userfs (8 MiB) .xz, datafs (8 MiB) .zst,
        // each compressed one alone in its folder so no map is found beside it (sent whole).
        let rootfs = try SparseImageFixture.make(in: directory.path, megabytes: 8, dataKiB: 1536, seed: 3)
        var compressed: [String: (file: String, image: [UInt8])] = [:]
        for (name, tool, megabytes) in [("bootfs", "gzip", 4), ("userfs", "xz", 8), ("datafs", "zstd", 8)] {
            let folder = directory.file(name)
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let fixture = try SparseImageFixture.make(
                in: folder, name: name + ".ext4", megabytes: megabytes, dataKiB: 700,
                seed: UInt64(megabytes + name.count))
            let image = Array(try Data(contentsOf: URL(fileURLWithPath: fixture.image)))
            let file = try SparseImageFixture.compress(fixture.image, with: tool)
            try FileManager.default.removeItem(atPath: fixture.image)
            try FileManager.default.removeItem(atPath: fixture.bmap)
            compressed[name] = (file, image)
        }
        let template = try String(contentsOfFile: examples + "/mp15-sdcard.tsv", encoding: .utf8)
        var text = template.replacingOccurrences(of: "mp15-sdcard/rootfs.ext4", with: rootfs.image)
            .replacingOccurrences(of: "mp15-sdcard/bootfs.ext4", with: compressed["bootfs"]!.file)
            .replacingOccurrences(of: "mp15-sdcard/userfs.ext4", with: compressed["userfs"]!.file)
            .replacingOccurrences(of: "\tmp15-sdcard/", with: "\t\(examples)/mp15-sdcard/")
        text += "P\t0x13\tdatafs\tFileSystem\tmmc0\t0x01984400\t\(compressed["datafs"]!.file)\n"
        let layout = directory.file("big.tsv")
        try text.write(toFile: layout, atomically: true, encoding: .utf8)

        let plan = try await boardPlan(layout, in: directory)
        let partitions = try #require(plan.devices.first { $0.ip == "mmc0" }).partitions
        func offset(_ name: String) throws -> UInt64 {
            UInt64(try #require(partitions.first { $0.name == name }).offset)
        }
        // The medium held something before: the rootfs area is all marker bytes.
        let storage = directory.file("storage")
        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
        let card = storage + "/mmc0.img"
        _ = FileManager.default.createFile(atPath: card, contents: nil)
        let writer = try FileHandle(forWritingTo: URL(fileURLWithPath: card))
        try writer.truncate(atOffset: 4 << 30)
        try writer.seek(toOffset: try offset("rootfs"))
        try writer.write(contentsOf: Data(repeating: Self.marker, count: 8 << 20))
        try writer.close()

        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            ["--soc", "mp15", "--storage", storage, "--", flash, "flash", "--json", layout],
            in: directory, timeout: 300)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let events = try result.lines.map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        #expect(events.last?["event"] as? String == "done")

        // The map, read here from bmaptool's XML (not through the tool's parser).
        let ranges = try Self.mappedRanges(bmap: rootfs.bmap)
        let mappedBytes = ranges.reduce(0) { $0 + $1.count }
        let rootfsDone = try #require(
            events.first { $0["event"] as? String == "phase-done" && $0["phase"] as? String == "0x11" })
        #expect(rootfsDone["bytes"] as? Int == mappedBytes, "only the mapped ranges go over the wire")
        #expect(mappedBytes < (8 << 20) / 3)

        let reader = try FileHandle(forReadingFrom: URL(fileURLWithPath: card))
        defer { try? reader.close() }
        func stored(at offset: UInt64, _ count: Int) throws -> [UInt8] {
            try reader.seek(toOffset: offset)
            return Array(try reader.read(upToCount: count) ?? Data())
        }
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: rootfs.image)))
        let written = try stored(at: try offset("rootfs"), image.count)
        var mapped = [Bool](repeating: false, count: image.count)
        for range in ranges {
            #expect(written[range] == image[range], "mapped range \(range) differs")
            for index in range { mapped[index] = true }
        }
        let untouched = zip(written, mapped).filter { !$0.1 }.map(\.0)
        #expect(!untouched.isEmpty && untouched.allSatisfy { $0 == Self.marker }, "an unmapped byte was written")

        for (name, entry) in compressed.sorted(by: { $0.key < $1.key }) {
            #expect(try stored(at: try offset(name), entry.image.count) == entry.image, "\(name) is not byte-exact")
        }
    }

    /// Byte ranges of a bmaptool map: `<Range …> first-last </Range>` block numbers × BlockSize.
    static func mappedRanges(bmap path: String) throws -> [Range<Int>] {
        let xml = try String(contentsOfFile: path, encoding: .utf8)
        let blockSize = try #require(
            xml.firstMatch(of: /<BlockSize>\s*(\d+)\s*<\/BlockSize>/).flatMap { Int($0.1) })
        return xml.matches(of: /<Range[^>]*>\s*(\d+)(?:-(\d+))?\s*<\/Range>/).compactMap { match in
            guard let first = Int(match.1) else { return nil }
            let last = match.2.flatMap { Int($0) } ?? first
            return first * blockSize..<(last + 1) * blockSize
        }
    }
}
