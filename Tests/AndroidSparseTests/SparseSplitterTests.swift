import DFU
import Foundation
import TestSupport
import Testing

@testable import AndroidSparse

@Suite struct SparseSplitterTests {
    /// 300 KiB + 100 bytes: random blocks, a zero run, a run of one repeated word, random again,
    /// and a partial last block, so every chunk type the generator makes shows up.
    static let image: [UInt8] = {
        var generator = SystemRandomNumberGenerator()
        var bytes: [UInt8] = (0..<(64 << 10)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes += [UInt8](repeating: 0, count: 96 << 10)
        bytes += (0..<(64 << 10)).map { [0xEF, 0xBE, 0xAD, 0xDE][$0 % 4] }
        bytes += (0..<(76 << 10) + 100).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return bytes
    }()

    func pieces(_ splitter: SparseSplitter) throws -> [SparsePiece] {
        var result: [SparsePiece] = []
        while let piece = try splitter.next() { result.append(piece) }
        return result
    }

    @Test func simg2imgRebuildsTheImageFromSeveralPieces() throws {
        let folder = try TemporaryDirectory()
        let splitter = try SparseSplitter(source: MemoryByteSource(Self.image), maxPieceBytes: 48 << 10)
        let pieces = try pieces(splitter)
        #expect(pieces.count > 3)
        var files: [String] = []
        for (index, piece) in pieces.enumerated() {
            #expect(piece.count <= 48 << 10)
            let bytes = try piece.read(offset: 0, length: Int(piece.count))
            #expect(bytes.count == Int(piece.count))
            files.append(folder.file("piece\(index).simg"))
            try Data(bytes).write(to: URL(fileURLWithPath: files.last!))
        }
        let result = try ExternalTool("simg2img", package: "android-sdk-libsparse-utils").run(
            files + [folder.file("out.img")])
        #expect(result.status == 0, "\(result.standardError)")
        let out = Array(try Data(contentsOf: URL(fileURLWithPath: folder.file("out.img"))))
        let padded = (Self.image.count + 4095) / 4096 * 4096
        #expect(out.count == padded)
        #expect(Array(out.prefix(Self.image.count)) == Self.image)
        #expect(out.dropFirst(Self.image.count).allSatisfy { $0 == 0 })
    }

    /// The download reads a piece in transfer-sized slices: slices that lie inside one RAW
    /// chunk come straight from the source, the others are assembled; both give the same bytes,
    /// including the zero padding of the last block.
    @Test func slicedReadsEqualOneRead() throws {
        let splitter = try SparseSplitter(source: MemoryByteSource(Self.image), maxPieceBytes: 1 << 20)
        for piece in try pieces(splitter) {
            let whole = try piece.read(offset: 0, length: Int(piece.count))
            for slice in [1000, 4096, 12 << 10] {
                var joined: [UInt8] = []
                var offset: Int64 = 0
                while offset < piece.count {
                    let bytes = try piece.read(offset: offset, length: slice)
                    joined += bytes
                    offset += Int64(bytes.count)
                }
                #expect(joined == whole, "slices of \(slice)")
            }
            // A slice ending in the padded last block.
            let tail = try piece.read(offset: piece.count - 200, length: 200)
            #expect(tail == Array(whole.suffix(200)))
        }
    }

    @Test func usesFillForRunsOfOneWordAndRawOtherwise() throws {
        let splitter = try SparseSplitter(source: MemoryByteSource(Self.image), maxPieceBytes: 1 << 20)
        let pieces = try pieces(splitter)
        #expect(pieces.count == 1)
        let chunks = pieces[0].chunks
        #expect(chunks.contains(.fill(firstBlock: 16, blocks: 24, word: 0)))
        #expect(chunks.contains(.fill(firstBlock: 40, blocks: 16, word: 0xDEAD_BEEF)))
        #expect(chunks.first == .raw(firstBlock: 0, blocks: 16))
        // Only the random blocks travel as data.
        #expect(pieces[0].rawBytes == Int64(16 + 20) * 4096)
    }

    @Test func unmappedRangesBecomeDontCareAndCostNothing() throws {
        let folder = try TemporaryDirectory()
        // Only the first 16 KiB and the last block are "mapped" (as a bmap would say).
        let mapped: [Range<Int64>] = [0..<(16 << 10), Int64(Self.image.count - 100)..<Int64(Self.image.count)]
        let splitter = try SparseSplitter(
            source: MemoryByteSource(Self.image), maxPieceBytes: 1 << 20, mappedBytes: mapped)
        let pieces = try pieces(splitter)
        #expect(pieces.count == 1)
        #expect(pieces[0].rawBytes == 5 * 4096)
        let bytes = try pieces[0].read(offset: 0, length: Int(pieces[0].count))
        try Data(bytes).write(to: URL(fileURLWithPath: folder.file("p.simg")))
        let result = try ExternalTool("simg2img", package: "android-sdk-libsparse-utils").run([
            folder.file("p.simg"), folder.file("out.img"),
        ])
        #expect(result.status == 0)
        let out = Array(try Data(contentsOf: URL(fileURLWithPath: folder.file("out.img"))))
        #expect(Array(out.prefix(16 << 10)) == Array(Self.image.prefix(16 << 10)))
        #expect(out[(16 << 10)..<(Self.image.count - 4096)].allSatisfy { $0 == 0 })
        let lastBlock = (Self.image.count / 4096) * 4096
        #expect(Array(out[lastBlock..<Self.image.count]) == Array(Self.image[lastBlock...]))
    }

    @Test func decoderReadsImg2simgOutput() throws {
        let folder = try TemporaryDirectory()
        try Data(Self.image).write(to: URL(fileURLWithPath: folder.file("in.img")))
        let made = try ExternalTool("img2simg", package: "android-sdk-libsparse-utils").run([
            folder.file("in.img"), folder.file("in.simg"),
        ])
        #expect(made.status == 0)
        let sparse = Array(try Data(contentsOf: URL(fileURLWithPath: folder.file("in.simg"))))
        let decoder = try SparseDecoder(sparse)
        var rebuilt = [UInt8](repeating: 0, count: Int(decoder.totalBlocks) * decoder.blockSize)
        for chunk in decoder.chunks {
            switch chunk {
            case .raw(let block, let data):
                rebuilt.replaceSubrange(
                    Int(block) * decoder.blockSize..<Int(block) * decoder.blockSize + data.count, with: sparse[data])
            case .fill(let block, let blocks, let word):
                let pattern = (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) }
                for index in 0..<Int(blocks) * decoder.blockSize / 4 {
                    rebuilt.replaceSubrange(
                        Int(block) * decoder.blockSize + index * 4..<Int(block) * decoder.blockSize + index * 4 + 4,
                        with: pattern)
                }
            case .dontCare, .crc32: break
            }
        }
        #expect(Array(rebuilt.prefix(Self.image.count)) == Self.image)
    }

    @Test func refusesPiecesTooSmallForOneBlock() {
        #expect(throws: SparseError.pieceTooSmall(maxPieceBytes: 4096, blockSize: 4096)) {
            try SparseSplitter(source: MemoryByteSource(Self.image), maxPieceBytes: 4096)
        }
        #expect(throws: SparseError.badBlockSize(1000)) {
            try SparseSplitter(source: MemoryByteSource(Self.image), maxPieceBytes: 1 << 20, blockSize: 1000)
        }
    }

    @Test func decoderRejectsWhatUBootRejects() throws {
        let piece = try #require(
            try SparseSplitter(source: MemoryByteSource(Self.image), maxPieceBytes: 1 << 20).next())
        var bytes = try piece.read(offset: 0, length: Int(piece.count))
        bytes[12] = 0x01  // block size 4097
        #expect(throws: SparseError.malformed("sparse image block size issue")) { try SparseDecoder(bytes) }
        #expect(!SparseDecoder.isSparse(Array(Self.image.prefix(64))))
    }
}
