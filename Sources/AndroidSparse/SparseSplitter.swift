public import DFU

/// Cuts one partition image into Android sparse files no larger than the device's
/// `max-download-size`, generated on the fly: every piece covers the whole image (total blocks),
/// carries its own share of the blocks as RAW or FILL chunks and DONT_CARE for everything else,
/// so U-Boot's `flash` of each piece in turn writes the image (what AOSP's fastboot does with
/// libsparse's resparse). Unmapped ranges (a bmap, or holes when skipping them) become DONT_CARE
/// too and cost nothing on the wire.
///
/// Memory is bounded: pieces are planned one at a time (`next()`), the input is read in 256 KiB
/// windows (one block when blocks are larger), and a piece keeps only its chunk list (at most `maxChunksPerPiece` entries). The
/// data is read twice: once to plan a piece (from `source`), once while it is sent (from
/// `dataSource`). Each of the two only ever reads forward, so a compressed Binary given as two
/// readers is decompressed twice in all, never restarted.
public final class SparseSplitter {
    public let source: any ByteSource
    /// Where the pieces read their RAW blocks (another reader of the same bytes, or `source`).
    public let dataSource: any ByteSource
    public let blockSize: Int
    public let maxPieceBytes: Int
    public let totalBlocks: Int64
    /// Mapped block ranges in increasing order; nil = everything is mapped.
    let mapped: [Range<Int64>]?
    private var cursor: Int64 = 0
    private var mappedIndex = 0
    /// The planning window, kept across pieces: the next piece starts inside it.
    private var buffer: [UInt8] = []
    private var bufferStart: Int64 = -1
    static let window = 256 << 10
    static let maxChunksPerPiece = 65536

    /// `mappedBytes`: byte ranges that hold data (bmap ranges, or non-hole extents); nil = all.
    /// Ranges are widened to whole blocks. `dataSource`: the same bytes as `source`, read while
    /// pieces are sent (nil: `source`).
    public init(
        source: any ByteSource, maxPieceBytes: Int, blockSize: Int = 4096, mappedBytes: [Range<Int64>]? = nil,
        dataSource: (any ByteSource)? = nil
    ) throws(SparseError) {
        guard blockSize >= 512, blockSize % 512 == 0 else { throw .badBlockSize(blockSize) }
        let overhead = SparseFormat.fileHeaderSize + 3 * SparseFormat.chunkHeaderSize
        guard maxPieceBytes >= overhead + blockSize else {
            throw .pieceTooSmall(maxPieceBytes: maxPieceBytes, blockSize: blockSize)
        }
        self.source = source
        self.dataSource = dataSource ?? source
        self.blockSize = blockSize
        self.maxPieceBytes = maxPieceBytes
        let blocks = (source.count + Int64(blockSize) - 1) / Int64(blockSize)
        totalBlocks = blocks
        mapped = mappedBytes.map { ranges in
            var merged: [Range<Int64>] = []
            for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) where !range.isEmpty {
                let lower = max(0, range.lowerBound / Int64(blockSize))
                let upper = min(blocks, (range.upperBound + Int64(blockSize) - 1) / Int64(blockSize))
                guard lower < upper else { continue }
                if let last = merged.last, last.upperBound >= lower {
                    merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, upper)
                } else {
                    merged.append(lower..<upper)
                }
            }
            return merged
        }
    }

    /// The next piece, or nil when the image is covered. An image with no mapped block still
    /// gives no piece: there is nothing to write.
    public func next() throws -> SparsePiece? {
        skipUnmapped()
        guard cursor < totalBlocks else { return nil }
        let start = cursor
        var budget =
            maxPieceBytes - SparseFormat.fileHeaderSize - (start > 0 ? SparseFormat.chunkHeaderSize : 0)
            - SparseFormat.chunkHeaderSize
        var chunks: [SparsePiece.Chunk] = []
        if start > 0 { chunks.append(.dontCare(blocks: start)) }
        pieceLoop: while cursor < totalBlocks, chunks.count < Self.maxChunksPerPiece {
            if let gapEnd = unmappedEnd(at: cursor) {
                guard budget >= SparseFormat.chunkHeaderSize else { break }
                append(.dontCare(blocks: gapEnd - cursor), to: &chunks, budget: &budget)
                cursor = gapEnd
                continue
            }
            let runEnd = mappedEnd(at: cursor)
            while cursor < runEnd {
                let blockOffset = cursor * Int64(blockSize)
                if bufferStart < 0 || blockOffset < bufferStart || blockOffset >= bufferStart + Int64(buffer.count) {
                    buffer = []  // freed before the next window is read: one window in memory
                    buffer = try source.read(offset: blockOffset, length: max(Self.window, blockSize))
                    bufferStart = blockOffset
                    let padded = (buffer.count + blockSize - 1) / blockSize * blockSize
                    if buffer.count < padded { buffer += [UInt8](repeating: 0, count: padded - buffer.count) }
                }
                let inner = Int(blockOffset - bufferStart)
                let word = Self.fillWord(buffer, from: inner, count: blockSize)
                let cost = cost(ofAdding: cursor, word: word, after: chunks.last)
                guard cost <= budget, chunks.count < Self.maxChunksPerPiece else { break pieceLoop }
                budget -= cost
                extend(&chunks, block: cursor, word: word)
                cursor += 1
            }
        }
        let end = cursor
        if end < totalBlocks { chunks.append(.dontCare(blocks: totalBlocks - end)) }
        return SparsePiece(
            source: dataSource, blockSize: blockSize, totalBlocks: totalBlocks, chunks: chunks, firstBlock: start,
            endBlock: end)
    }

    private func skipUnmapped() {
        // Trailing unmapped blocks need no piece of their own.
        guard let mapped else { return }
        while mappedIndex < mapped.count, mapped[mappedIndex].upperBound <= cursor { mappedIndex += 1 }
        if mappedIndex == mapped.count { cursor = totalBlocks }
    }

    /// When `block` is unmapped: where the unmapped run ends.
    private func unmappedEnd(at block: Int64) -> Int64? {
        guard let mapped else { return nil }
        while mappedIndex < mapped.count, mapped[mappedIndex].upperBound <= block { mappedIndex += 1 }
        guard mappedIndex < mapped.count else { return totalBlocks }
        let next = mapped[mappedIndex]
        return block < next.lowerBound ? next.lowerBound : nil
    }

    private func mappedEnd(at block: Int64) -> Int64 {
        guard let mapped, mappedIndex < mapped.count else { return totalBlocks }
        return mapped[mappedIndex].upperBound
    }

    private func cost(ofAdding block: Int64, word: UInt32?, after last: SparsePiece.Chunk?) -> Int {
        switch (last, word) {
        case (.fill(let first, let blocks, let value), let word?) where value == word && first + blocks == block: 0
        case (.raw(let first, let blocks), nil) where first + blocks == block: blockSize
        case (_, .some): SparseFormat.chunkHeaderSize + 4
        case (_, nil): SparseFormat.chunkHeaderSize + blockSize
        }
    }

    private func extend(_ chunks: inout [SparsePiece.Chunk], block: Int64, word: UInt32?) {
        switch (chunks.last, word) {
        case (.fill(let first, let blocks, let value), let word?) where value == word && first + blocks == block:
            chunks[chunks.count - 1] = .fill(firstBlock: first, blocks: blocks + 1, word: value)
        case (.raw(let first, let blocks), nil) where first + blocks == block:
            chunks[chunks.count - 1] = .raw(firstBlock: first, blocks: blocks + 1)
        case (_, let word?): chunks.append(.fill(firstBlock: block, blocks: 1, word: word))
        case (_, nil): chunks.append(.raw(firstBlock: block, blocks: 1))
        }
    }

    private func append(_ chunk: SparsePiece.Chunk, to chunks: inout [SparsePiece.Chunk], budget: inout Int) {
        if case .dontCare(let more) = chunk, case .dontCare(let blocks) = chunks.last {
            chunks[chunks.count - 1] = .dontCare(blocks: blocks + more)
        } else {
            chunks.append(chunk)
            budget -= SparseFormat.chunkHeaderSize
        }
    }

    /// The 32-bit word a block repeats, or nil when it is not one word repeated.
    static func fillWord(_ buffer: [UInt8], from offset: Int, count: Int) -> UInt32? {
        buffer.withUnsafeBytes { raw in
            let first = raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            guard UInt32(truncatingIfNeeded: first) == UInt32(truncatingIfNeeded: first >> 32) else { return nil }
            var position = offset + 8
            while position < offset + count {
                if raw.loadUnaligned(fromByteOffset: position, as: UInt64.self) != first { return nil }
                position += 8
            }
            return UInt32(littleEndian: UInt32(truncatingIfNeeded: first))
        }
    }
}

/// Why an image cannot be split.
public enum SparseError: Error, Sendable, Hashable, CustomStringConvertible {
    case badBlockSize(Int)
    case pieceTooSmall(maxPieceBytes: Int, blockSize: Int)
    case malformed(String)

    public var description: String {
        switch self {
        case .badBlockSize(let size): "sparse block size \(size) is not a multiple of 512"
        case .pieceTooSmall(let max, let block):
            "max-download-size \(max) bytes cannot hold one \(block)-byte sparse block with its headers"
        case .malformed(let why): "malformed sparse image: \(why)"
        }
    }
}
