import DFU
import Decompression
import Foundation
import ImageSources
import TestSupport
import Testing

@Suite("Block maps made by bmaptool")
struct BlockMapTests {
    @Test("a bmaptool 2.0 map of a real ext4 image: counts, extents, and every range's checksum holds")
    func realMap() throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 16, dataKiB: 2048)
        let map = try BlockMap.load(path: fixture.bmap)
        let size = try #require(FileManager.default.attributesOfItem(atPath: fixture.image)[.size] as? Int)
        #expect(map.version == "2.0")
        #expect(map.imageSize == Int64(size))
        #expect(map.blockSize == 4096)
        #expect(map.checksumType == .sha256)
        #expect(map.ranges.count > 1)
        #expect(map.mappedBytes == map.mappedBlocksCount * 4096)
        #expect(map.mappedBytes < Int64(size) / 2)
        #expect(map.mappedBytes > 2048 * 1024)
        let image = try ImageReader(path: fixture.image, compression: nil, size: map.imageSize)
        for extent in map.extents {
            let source = SegmentSource(
                segment: SendSegment(offset: extent.offset, length: extent.length, extents: [extent]), image: image,
                checksumType: map.checksumType)
            try source.prepare()
        }
    }

    @Test("a range whose bytes changed after the map was made fails with bmap-checksum before any byte is handed out")
    func checksumMismatch() throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 16, dataKiB: 1024)
        let map = try BlockMap.load(path: fixture.bmap)
        let target = try #require(map.extents.max { $0.length < $1.length })
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: fixture.image))
        try handle.seek(toOffset: UInt64(target.offset + target.length / 2))
        let old = try #require(try handle.read(upToCount: 1))
        try handle.seek(toOffset: UInt64(target.offset + target.length / 2))
        try handle.write(contentsOf: Data([old[0] ^ 0xFF]))
        try handle.close()
        let prepared = try PreparedImage.prepare(path: fixture.image)
        #expect(prepared.selection == .blockMap)
        let image = try ImageReader(path: fixture.image, compression: nil, size: prepared.size)
        let source = SegmentSource(
            segment: SendSegment(offset: target.offset, length: target.length, extents: [target]), image: image,
            checksumType: map.checksumType)
        let error = try #require(throws: ImageSourceError.self) { try source.prepare() }
        #expect(error.code == .bmapChecksum)
        #expect(error.line == target.line)
        #expect(error.path == fixture.image)
    }

    @Test("bmaptool's discovery: rootfs.ext4.bmap serves rootfs.ext4.zst; the map applies to the uncompressed image")
    func discovery() throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 8, dataKiB: 512)
        let compressed = try SparseImageFixture.compress(fixture.image, with: "zstd")
        #expect(BlockMap.discover(beside: compressed) == fixture.bmap)
        let prepared = try PreparedImage.prepare(path: compressed)
        #expect(prepared.compression == .zstd)
        #expect(prepared.selection == .blockMap)
        #expect(prepared.size == 8 << 20)
        #expect(prepared.bytesToSend == prepared.map?.mappedBytes)
        let none = try PreparedImage.prepare(path: compressed, options: ImageOptions(map: .none))
        #expect(none.selection == .whole)
        #expect(none.bytesToSend == 8 << 20)
    }

    @Test("format 1.3 (SHA-1 in the sha1 attribute) and 1.0 (no checksums) are read")
    func olderFormats() throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 8, dataKiB: 256)
        let modern = try BlockMap.load(path: fixture.bmap)
        let image = try Data(contentsOf: URL(fileURLWithPath: fixture.image))
        var ranges = ""
        for extent in modern.extents {
            let slice = folder.file("slice")
            try image.subdata(in: Int(extent.offset)..<Int(extent.end)).write(to: URL(fileURLWithPath: slice))
            let sha1 = try ExternalTool("sha1sum", package: "coreutils").run([slice]).standardOutput.prefix(40)
            let last = (extent.end - 1) / 4096
            let first = extent.offset / 4096
            ranges += "<Range sha1=\"\(sha1)\"> \(first == last ? "\(first)" : "\(first)-\(last)") </Range>\n"
        }
        let head = """
            <?xml version="1.0" ?>
            <bmap version="%@">
            <ImageSize> \(modern.imageSize) </ImageSize>
            <BlockSize> 4096 </BlockSize>
            <BlocksCount> \(modern.blocksCount) </BlocksCount>
            <MappedBlocksCount> \(modern.mappedBlocksCount) </MappedBlocksCount>
            <BlockMap>
            """
        let v13 = String(format: head, "1.3") + ranges + "</BlockMap>\n</bmap>\n"
        let map13 = try BlockMap.parse(Array(v13.utf8), path: "old.bmap")
        #expect(map13.checksumType == .sha1)
        #expect(
            map13.extents
                == modern.extents.map {
                    var e = $0; e.checksum = map13.extents.first { $0.offset == e.offset }?.checksum;
                    e.line = map13.extents.first { $0.offset == e.offset }?.line; return e
                })
        let reader = try ImageReader(path: fixture.image, compression: nil, size: modern.imageSize)
        for extent in map13.extents {
            try SegmentSource(
                segment: SendSegment(offset: extent.offset, length: extent.length, extents: [extent]), image: reader,
                checksumType: .sha1
            ).prepare()
        }
        let v10 =
            String(format: head, "1.0") + ranges.replacingOccurrences(of: "sha1=", with: "x=")
            + "</BlockMap>\n</bmap>\n"
        let map10 = try BlockMap.parse(Array(v10.utf8), path: "older.bmap")
        #expect(map10.checksumType == nil)
        #expect(map10.mappedBytes == modern.mappedBytes)
    }

    @Test("a bad map names the file, the line and the field")
    func badMaps() throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 8, dataKiB: 256)
        let text = try String(contentsOfFile: fixture.bmap, encoding: .utf8)
        let lines = text.components(separatedBy: "\n")
        func line(of needle: String) -> Int {
            (lines.firstIndex { $0.trimmingCharacters(in: .whitespaces).hasPrefix(needle) } ?? -1) + 1
        }

        let wrongCount = text.replacingOccurrences(
            of: "<BlocksCount> 2048 </BlocksCount>", with: "<BlocksCount> 2047 </BlocksCount>")
        #expect(wrongCount != text)
        let countError = try #require(throws: BlockMapError.self) {
            try BlockMap.parse(Array(wrongCount.utf8), path: "a.bmap")
        }
        #expect(countError.field == "BlocksCount")
        #expect(countError.line == line(of: "<BlocksCount>"))
        #expect(countError.description.hasPrefix("a.bmap:\(line(of: "<BlocksCount>")): BlocksCount: "))

        let edited = text.replacingOccurrences(
            of: "<ImageSize> 8388608 </ImageSize>", with: "<ImageSize> 8388607 </ImageSize>")
        let editError = try #require(throws: BlockMapError.self) {
            try BlockMap.parse(Array(edited.utf8), path: "b.bmap")
        }
        #expect(editError.field == "BmapFileChecksum")

        let broken = text.replacingOccurrences(of: "</BlockSize>", with: "</BlockSiz>")
        let syntax = try #require(throws: BlockMapError.self) { try BlockMap.parse(Array(broken.utf8), path: "c.bmap") }
        #expect(syntax.line == line(of: "<BlockSize>"))

        let firstRange = try #require(lines.first { $0.contains("<Range") })
        let beyond = text.replacingOccurrences(of: firstRange, with: "<Range> 5000-5001 </Range>")
        let rangeError = try #require(throws: BlockMapError.self) {
            try BlockMap.parse(Array(beyond.utf8), path: "d.bmap")
        }
        #expect(rangeError.line == line(of: "<Range"))

        // A map made for another image: size check in prepare.
        let other = try SparseImageFixture.make(in: folder.path, name: "other.ext4", megabytes: 9, dataKiB: 64)
        let mismatch = try #require(throws: ImageSourceError.self) {
            try PreparedImage.prepare(path: other.image, options: ImageOptions(map: .file(fixture.bmap)))
        }
        #expect(mismatch.code == .badBlockMap)
        #expect(mismatch.path == fixture.bmap)
    }

    @Test("--skip-holes sends the data extents of a sparse file, widened to 4 KiB")
    func holes() throws {
        let folder = try TemporaryDirectory()
        let path = folder.file("sparse.img")
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: 64 << 20)
        for offset in [0, 8 << 20, (32 << 20) + 100] {
            try handle.seek(toOffset: UInt64(offset))
            try handle.write(contentsOf: Data(repeating: 0xA5, count: 5000))
        }
        try handle.close()
        let prepared = try PreparedImage.prepare(path: path, options: ImageOptions(map: .none, skipHoles: true))
        #expect(prepared.selection == .holes)
        #expect(prepared.extents.count == 3)
        for extent in prepared.extents {
            #expect(extent.offset % 4096 == 0)
            #expect(extent.length % 4096 == 0)
        }
        #expect(prepared.extents.map(\.offset) == [0, 8 << 20, 32 << 20])
        #expect(prepared.bytesToSend < 1 << 20)
        let whole = try PreparedImage.prepare(path: path, options: ImageOptions(map: .none))
        #expect(whole.bytesToSend == 64 << 20)
    }

    @Test("ranges past 4 GiB go as one contiguous segment from the last addressable block")
    func beyondFourGiB() {
        let gib: Int64 = 1 << 30
        let extents = [
            ImageExtent(offset: 0, length: 4096), ImageExtent(offset: gib, length: 8192),
            ImageExtent(offset: 4 * gib + 4096, length: 4096), ImageExtent(offset: 5 * gib, length: 4096),
        ]
        let (segments, beyond) = RangeSchedule.segments(extents, blockSize: 4096)
        #expect(beyond == 2)
        #expect(segments.count == 3)
        #expect(segments[2].offset == 4 * gib - 4096)
        #expect(segments[2].end == 5 * gib + 4096)
        #expect(segments[2].extents.count == 2)
        #expect(segments.allSatisfy { $0.offset < RangeSchedule.addressLimit })
        // An extent crossing the boundary starts the run.
        let crossing = [ImageExtent(offset: 4 * gib - 8192, length: 16384), ImageExtent(offset: 6 * gib, length: 4096)]
        let (joined, count) = RangeSchedule.segments(crossing, blockSize: 4096)
        #expect(count == 1)
        #expect(joined == [SendSegment(offset: 4 * gib - 8192, length: 2 * gib + 12288, extents: crossing)])
    }
}
