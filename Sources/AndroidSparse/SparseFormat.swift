/// The Android sparse image format (AOSP `libsparse/sparse_format.h`), as U-Boot's
/// `write_sparse_image()` reads it: a 28-byte file header, then 12-byte chunk headers, all
/// little-endian.
public enum SparseFormat {
    public static let magic: UInt32 = 0xED26_FF3A
    public static let fileHeaderSize = 28
    public static let chunkHeaderSize = 12

    /// Chunk types.
    public enum ChunkType: UInt16, Sendable, Hashable {
        /// Block data follows.
        case raw = 0xCAC1
        /// A 4-byte word repeated over the blocks.
        case fill = 0xCAC2
        /// Blocks left as they are on the device.
        case dontCare = 0xCAC3
        /// A CRC-32 of the data so far (U-Boot ignores it).
        case crc32 = 0xCAC4
    }

    /// The file header for `totalBlocks` blocks of `blockSize` bytes in `chunks` chunks.
    static func fileHeader(blockSize: Int, totalBlocks: UInt32, chunks: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(magic)
        bytes.appendLittleEndian(UInt16(1))  // major
        bytes.appendLittleEndian(UInt16(0))  // minor
        bytes.appendLittleEndian(UInt16(fileHeaderSize))
        bytes.appendLittleEndian(UInt16(chunkHeaderSize))
        bytes.appendLittleEndian(UInt32(blockSize))
        bytes.appendLittleEndian(totalBlocks)
        bytes.appendLittleEndian(chunks)
        bytes.appendLittleEndian(UInt32(0))  // image checksum: unused
        return bytes
    }

    static func chunkHeader(_ type: ChunkType, blocks: UInt32, totalBytes: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(type.rawValue)
        bytes.appendLittleEndian(UInt16(0))
        bytes.appendLittleEndian(blocks)
        bytes.appendLittleEndian(totalBytes)
        return bytes
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger & UnsignedInteger>(_ value: T) {
        for index in 0..<T.bitWidth / 8 { append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }

    func littleEndian<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, at offset: Int) -> T {
        (0..<T.bitWidth / 8).reduce(T.zero) { value, index in value | T(self[offset + index]) << (8 * index) }
    }
}
