public import DFU

/// One sparse file of a split image, produced on demand: the header and chunk headers are
/// synthesized, RAW data is read from the source when the bytes are asked for. It is itself a
/// `ByteSource`, so the fastboot `download` streams it like any file.
public struct SparsePiece: ByteSource {
    public enum Chunk: Sendable, Hashable {
        case raw(firstBlock: Int64, blocks: Int64)
        case fill(firstBlock: Int64, blocks: Int64, word: UInt32)
        case dontCare(blocks: Int64)

        var blocks: Int64 {
            switch self {
            case .raw(_, let blocks), .fill(_, let blocks, _), .dontCare(let blocks): blocks
            }
        }
    }

    public let source: any ByteSource
    public let blockSize: Int
    public let totalBlocks: Int64
    public let chunks: [Chunk]
    /// The blocks this piece writes or skips on purpose, `firstBlock..<endBlock`.
    public let firstBlock: Int64
    public let endBlock: Int64
    /// Byte offset of each chunk's header in the piece.
    private let offsets: [Int64]
    public let count: Int64

    init(
        source: any ByteSource, blockSize: Int, totalBlocks: Int64, chunks: [Chunk], firstBlock: Int64, endBlock: Int64
    ) {
        self.source = source
        self.blockSize = blockSize
        self.totalBlocks = totalBlocks
        self.chunks = chunks
        self.firstBlock = firstBlock
        self.endBlock = endBlock
        var position = Int64(SparseFormat.fileHeaderSize)
        var offsets: [Int64] = []
        offsets.reserveCapacity(chunks.count)
        for chunk in chunks {
            offsets.append(position)
            position += Int64(Self.encodedSize(chunk, blockSize: blockSize))
        }
        self.offsets = offsets
        count = position
    }

    /// Payload bytes of the image this piece carries as RAW data (the rest is FILL or skipped).
    public var rawBytes: Int64 {
        chunks.reduce(0) { total, chunk in
            if case .raw(_, let blocks) = chunk { return total + blocks * Int64(blockSize) }
            return total
        }
    }

    static func encodedSize(_ chunk: Chunk, blockSize: Int) -> Int {
        switch chunk {
        case .raw(_, let blocks): SparseFormat.chunkHeaderSize + Int(blocks) * blockSize
        case .fill: SparseFormat.chunkHeaderSize + 4
        case .dontCare: SparseFormat.chunkHeaderSize
        }
    }

    public func read(offset: Int64, length: Int) throws -> [UInt8] {
        let end = min(count, offset + Int64(max(length, 0)))
        var position = max(0, offset)
        // The common case while downloading: the whole request is RAW data of one chunk, so the
        // source's bytes are the answer (no second buffer of the transfer's size).
        if position >= Int64(SparseFormat.fileHeaderSize), position < end {
            let index = chunkIndex(containing: position)
            let dataStart = offsets[index] + Int64(SparseFormat.chunkHeaderSize)
            let chunkEnd = offsets[index] + Int64(Self.encodedSize(chunks[index], blockSize: blockSize))
            if case .raw(let first, _) = chunks[index], position >= dataStart, end <= chunkEnd {
                let take = Int(end - position)
                var data = try source.read(offset: first * Int64(blockSize) + position - dataStart, length: take)
                if data.count < take { data += [UInt8](repeating: 0, count: take - data.count) }
                return data
            }
        }
        var result: [UInt8] = []
        result.reserveCapacity(Int(max(0, end - position)))
        while position < end {
            if position < Int64(SparseFormat.fileHeaderSize) {
                let header = SparseFormat.fileHeader(
                    blockSize: blockSize, totalBlocks: UInt32(totalBlocks), chunks: UInt32(chunks.count))
                let slice = header[Int(position)..<Int(min(end, Int64(header.count)))]
                result += slice
                position += Int64(slice.count)
                continue
            }
            let index = chunkIndex(containing: position)
            let chunk = chunks[index]
            let inner = position - offsets[index]
            let chunkEnd = offsets[index] + Int64(Self.encodedSize(chunk, blockSize: blockSize))
            if inner < Int64(SparseFormat.chunkHeaderSize) {
                let header = Self.header(chunk, blockSize: blockSize)
                let slice = header[Int(inner)..<Int(min(Int64(header.count), inner + end - position))]
                result += slice
                position += Int64(slice.count)
                continue
            }
            let dataOffset = inner - Int64(SparseFormat.chunkHeaderSize)
            let take = Int(min(end, chunkEnd) - position)
            switch chunk {
            case .fill(_, _, let word):
                var bytes: [UInt8] = []
                bytes.appendLittleEndian(word)
                result += bytes[Int(dataOffset)..<Int(dataOffset) + take]
            case .raw(let first, _):
                let sourceOffset = first * Int64(blockSize) + dataOffset
                var data = try source.read(offset: sourceOffset, length: take)
                // The last block is padded with zeros past the end of the file.
                if data.count < take { data += [UInt8](repeating: 0, count: take - data.count) }
                result += data
            case .dontCare:
                break
            }
            position += Int64(take)
        }
        return result
    }

    private func chunkIndex(containing position: Int64) -> Int {
        var low = 0
        var high = offsets.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if offsets[middle] <= position { low = middle } else { high = middle - 1 }
        }
        return low
    }

    static func header(_ chunk: Chunk, blockSize: Int) -> [UInt8] {
        let size = UInt32(encodedSize(chunk, blockSize: blockSize))
        switch chunk {
        case .raw(_, let blocks): return SparseFormat.chunkHeader(.raw, blocks: UInt32(blocks), totalBytes: size)
        case .fill(_, let blocks, _): return SparseFormat.chunkHeader(.fill, blocks: UInt32(blocks), totalBytes: size)
        case .dontCare(let blocks): return SparseFormat.chunkHeader(.dontCare, blocks: UInt32(blocks), totalBytes: size)
        }
    }
}
