/// Reads a sparse file the way U-Boot's `write_sparse_image()` does (all four chunk types), for
/// the virtual board and for tests. The caller applies each chunk to its storage.
public struct SparseDecoder {
    public enum Chunk: Sendable, Hashable {
        /// `data` goes at block `block`.
        case raw(block: Int64, data: Range<Int>)
        case fill(block: Int64, blocks: Int64, word: UInt32)
        case dontCare(block: Int64, blocks: Int64)
        case crc32(UInt32)
    }

    public let blockSize: Int
    public let totalBlocks: Int64
    public let chunks: [Chunk]

    /// True when `bytes` start with the sparse magic (`is_sparse_image()`).
    public static func isSparse(_ bytes: [UInt8]) -> Bool {
        bytes.count >= SparseFormat.fileHeaderSize && bytes.littleEndian(UInt32.self, at: 0) == SparseFormat.magic
    }

    /// Parses and checks the headers; `deviceBlockSize` is the storage's block size (U-Boot
    /// refuses a sparse block size that is not a multiple of it).
    public init(_ bytes: [UInt8], deviceBlockSize: Int = 512) throws(SparseError) {
        guard Self.isSparse(bytes) else { throw .malformed("no sparse magic") }
        guard bytes.littleEndian(UInt16.self, at: 4) == 1 else { throw .malformed("major version is not 1") }
        let fileHeader = Int(bytes.littleEndian(UInt16.self, at: 8))
        let chunkHeader = Int(bytes.littleEndian(UInt16.self, at: 10))
        guard fileHeader >= SparseFormat.fileHeaderSize, chunkHeader >= SparseFormat.chunkHeaderSize else {
            throw .malformed("header sizes \(fileHeader)/\(chunkHeader)")
        }
        blockSize = Int(bytes.littleEndian(UInt32.self, at: 12))
        guard blockSize > 0, blockSize % deviceBlockSize == 0 else { throw .malformed("sparse image block size issue") }
        totalBlocks = Int64(bytes.littleEndian(UInt32.self, at: 16))
        let count = Int(bytes.littleEndian(UInt32.self, at: 20))
        var position = fileHeader
        var block: Int64 = 0
        var chunks: [Chunk] = []
        for index in 0..<count {
            guard position + chunkHeader <= bytes.count else { throw .malformed("chunk \(index) truncated") }
            let type = bytes.littleEndian(UInt16.self, at: position)
            let blocks = Int64(bytes.littleEndian(UInt32.self, at: position + 4))
            let total = Int(bytes.littleEndian(UInt32.self, at: position + 8))
            let data = position + chunkHeader
            guard total >= chunkHeader, position + total <= bytes.count else {
                throw .malformed("chunk \(index) size \(total)")
            }
            switch SparseFormat.ChunkType(rawValue: type) {
            case .raw:
                guard total - chunkHeader == Int(blocks) * blockSize else {
                    throw .malformed("raw chunk \(index) size")
                }
                chunks.append(.raw(block: block, data: data..<data + Int(blocks) * blockSize))
            case .fill:
                guard total - chunkHeader >= 4 else { throw .malformed("fill chunk \(index) size") }
                chunks.append(.fill(block: block, blocks: blocks, word: bytes.littleEndian(UInt32.self, at: data)))
            case .dontCare:
                chunks.append(.dontCare(block: block, blocks: blocks))
            case .crc32:
                guard total - chunkHeader >= 4 else { throw .malformed("crc chunk \(index) size") }
                chunks.append(.crc32(bytes.littleEndian(UInt32.self, at: data)))
            case nil:
                throw .malformed("unknown chunk type 0x\(String(type, radix: 16))")
            }
            block += blocks
            position += total
        }
        guard block <= totalBlocks else { throw .malformed("chunks cover \(block) blocks, header says \(totalBlocks)") }
        self.chunks = chunks
    }
}
