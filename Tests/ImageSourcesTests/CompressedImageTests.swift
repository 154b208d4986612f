import DFU
import Decompression
import Foundation
import ImageSources
import TestSupport
import Testing

@Suite("Compressed Binaries through the system libraries")
struct CompressedImageTests {
    static let tools = ["gzip", "xz", "zstd"]

    func readAll(_ reader: ImageReader) throws -> Data {
        var data = Data()
        var offset: Int64 = 0
        while offset < reader.size {
            let chunk = try reader.read(offset: offset, length: 1 << 20)
            data += chunk
            offset += Int64(chunk.count)
        }
        return data
    }

    @Test("gzip, xz and zstd files made by the real tools decode byte-exact with the right size", arguments: tools)
    func roundTrip(tool: String) throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 8, dataKiB: 1024)
        let compressed = try SparseImageFixture.compress(fixture.image, with: tool)
        let prepared = try PreparedImage.prepare(path: compressed, options: ImageOptions(map: .none))
        #expect(prepared.size == 8 << 20)
        #expect(prepared.sizeSource == (tool == "gzip" ? .counted : .recorded))
        let reader = try ImageReader(path: compressed, compression: prepared.compression, size: prepared.size)
        #expect(try readAll(reader) == (try Data(contentsOf: URL(fileURLWithPath: fixture.image))))
        // Reading backwards starts the stream over.
        let early = try reader.read(offset: 1024, length: 16)
        let plain = try Data(contentsOf: URL(fileURLWithPath: fixture.image))
        #expect(Data(early) == plain.subdata(in: 1024..<1040))
    }

    @Test(
        "4 KiB reads, as the engine sends DFU blocks, with jumps forward across the read-ahead buffer, decode byte-exact",
        arguments: tools)
    func engineReadPattern(tool: String) throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 4, dataKiB: 1024)
        let compressed = try SparseImageFixture.compress(fixture.image, with: tool)
        let prepared = try PreparedImage.prepare(path: compressed, options: ImageOptions(map: .none))
        let reader = try ImageReader(path: compressed, compression: prepared.compression, size: prepared.size)
        let plain = Array(try Data(contentsOf: URL(fileURLWithPath: fixture.image)))
        var offset = 0
        var block = 0
        while offset < plain.count {
            let bytes = try reader.read(offset: Int64(offset), length: 4096)
            #expect(bytes[...] == plain[offset..<min(plain.count, offset + 4096)], "at \(offset)")
            offset += bytes.count
            block += 1
            // Every 7th block jumps ahead by an odd amount: the skip ends inside the 128 KiB
            // decoded ahead, or past it, never on a boundary.
            if block % 7 == 0 { offset += 3 * 4096 + 512 * block }
        }
    }

    @Test("concatenated gzip members and zstd frames are one image", arguments: ["gzip", "zstd"])
    func concatenated(tool: String) throws {
        let folder = try TemporaryDirectory()
        let a = folder.file("a.bin")
        let b = folder.file("b.bin")
        var generator = SeededBytes(seed: 7)
        let first = Data(generator.bytes(300_000))
        let second = Data(generator.bytes(200_000))
        try first.write(to: URL(fileURLWithPath: a))
        try second.write(to: URL(fileURLWithPath: b))
        let ca = try SparseImageFixture.compress(a, with: tool)
        let cb = try SparseImageFixture.compress(b, with: tool)
        let joined = folder.file("joined.bin" + (tool == "gzip" ? ".gz" : ".zst"))
        try (try Data(contentsOf: URL(fileURLWithPath: ca)) + Data(contentsOf: URL(fileURLWithPath: cb))).write(
            to: URL(fileURLWithPath: joined))
        let prepared = try PreparedImage.prepare(path: joined)
        #expect(prepared.size == 500_000)
        let reader = try ImageReader(path: joined, compression: prepared.compression, size: prepared.size)
        #expect(try readAll(reader) == first + second)
    }

    @Test("a truncated stream fails with bad-compressed-image, before the last bytes", arguments: tools)
    func truncated(tool: String) throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 8, dataKiB: 1024)
        let compressed = try SparseImageFixture.compress(fixture.image, with: tool)
        let full = try PreparedImage.prepare(path: compressed, options: ImageOptions(map: .none))
        let data = try Data(contentsOf: URL(fileURLWithPath: compressed))
        try data.prefix(data.count * 2 / 3).write(to: URL(fileURLWithPath: compressed))
        // The size may still be found (zstd frame header, or planned before the damage): the
        // stream must fail while reading, never yield a short image.
        let error = try #require(throws: ImageSourceError.self) {
            let prepared = try PreparedImage.prepare(path: compressed, options: ImageOptions(map: .none))
            _ = try readAll(try ImageReader(path: compressed, compression: prepared.compression, size: prepared.size))
        }
        #expect(error.code == .badCompressedImage)
        let planned = try ImageReader(path: compressed, compression: full.compression, size: full.size)
        let late = try #require(throws: ImageSourceError.self) { _ = try readAll(planned) }
        #expect(late.code == .badCompressedImage)
    }

    @Test("a corrupt byte in the middle fails with bad-compressed-image", arguments: tools)
    func corrupt(tool: String) throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 8, dataKiB: 1024)
        let compressed = try SparseImageFixture.compress(fixture.image, with: tool)
        let prepared = try PreparedImage.prepare(path: compressed, options: ImageOptions(map: .none))
        var data = try Data(contentsOf: URL(fileURLWithPath: compressed))
        for index in stride(from: data.count / 3, to: data.count / 3 + 64, by: 1) { data[index] ^= 0x5A }
        try data.write(to: URL(fileURLWithPath: compressed))
        let reader = try ImageReader(path: compressed, compression: prepared.compression, size: prepared.size)
        let error = try #require(throws: ImageSourceError.self) { _ = try readAll(reader) }
        #expect(error.code == .badCompressedImage)
        #expect(error.path == compressed)
    }

    @Test("trailing data after the stream is an error, not ignored", arguments: tools)
    func trailing(tool: String) throws {
        let folder = try TemporaryDirectory()
        let path = folder.file("small.bin")
        try Data(repeating: 7, count: 100_000).write(to: URL(fileURLWithPath: path))
        let compressed = try SparseImageFixture.compress(path, with: tool)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: compressed))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("garbage!".utf8))
        try handle.close()
        let error = try #require(throws: (any Error).self) {
            let prepared = try PreparedImage.prepare(path: compressed)
            _ = try readAll(try ImageReader(path: compressed, compression: prepared.compression, size: prepared.size))
        }
        #expect((error as? ImageSourceError)?.code == .badCompressedImage)
    }

    @Test("a compressed image with a map: ranges are decoded, staged and checked")
    func compressedWithMap() throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 16, dataKiB: 1536)
        let compressed = try SparseImageFixture.compress(fixture.image, with: "xz")
        let prepared = try PreparedImage.prepare(path: compressed)
        #expect(prepared.selection == .blockMap)
        let plain = try Data(contentsOf: URL(fileURLWithPath: fixture.image))
        let reader = try ImageReader(path: compressed, compression: .xz, size: prepared.size)
        let (segments, _) = RangeSchedule.segments(prepared.extents, blockSize: 4096)
        for segment in segments {
            let source = SegmentSource(segment: segment, image: reader, checksumType: prepared.map?.checksumType)
            try source.prepare()
            let bytes = try source.read(offset: 0, length: Int(segment.length))
            #expect(Data(bytes) == plain.subdata(in: Int(segment.offset)..<Int(segment.end)))
        }
    }
}
