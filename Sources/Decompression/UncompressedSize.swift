import CLzma
import CZstd
import FileAccess
import SystemPackage

/// The uncompressed size of a compressed file, from what the format records where it can, so
/// that `check`, `plan` and `flash` know a partition's size without decoding it.
public enum UncompressedSize {
    /// How the size was found.
    public enum Source: String, Sendable, Hashable, Codable {
        /// From the format's own records (xz index, zstd frame headers).
        case recorded
        /// Counted by decoding the whole file once.
        case counted
    }

    /// The size and where it came from. gzip's ISIZE holds the size modulo 2^32 and only for the
    /// last member, so gzip is always counted; xz reads the index; zstd sums the frame content
    /// sizes and counts when a frame does not record its size.
    /// - Throws: `DecompressionError` when the file is not of its format or is truncated, `Errno`.
    public static func of(path: String, format: CompressionFormat) throws -> (size: Int64, source: Source) {
        switch format {
        case .gzip: break
        case .xz: if let size = try xzIndexSize(path: path) { return (size, .recorded) }
        case .zstd: if let size = try zstdFramesSize(path: path) { return (size, .recorded) }
        }
        return (try DecompressingReader(path: path, format: format).measure(), .counted)
    }

    /// liblzma's file-info decoder reads the stream footers and indexes (seeking as it asks).
    static func xzIndexSize(path: String) throws -> Int64? {
        let descriptor = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? descriptor.close() }
        let fileSize = try descriptor.seek(offset: 0, from: .end)
        func fail(_ reason: String) -> DecompressionError {
            DecompressionError(path: path, format: .xz, offset: 0, reason: reason)
        }
        var stream = lzma_stream()
        var index: OpaquePointer?
        guard lzma_file_info_decoder(&stream, &index, UInt64.max, UInt64(fileSize)) == LZMA_OK else {
            throw fail("liblzma cannot start its file-info decoder")
        }
        defer {
            lzma_end(&stream)
            if let index { lzma_index_end(index, nil) }
        }
        // liblzma keeps pointing into the input between calls: give it memory that stays put.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        var position: Int64 = 0
        var atEnd = false
        while true {
            if stream.avail_in == 0 {
                let got = try descriptor.read(
                    fromAbsoluteOffset: position, into: UnsafeMutableRawBufferPointer(rebasing: buffer[...]))
                position += Int64(got)
                atEnd = got == 0
                stream.next_in = UnsafePointer(buffer.baseAddress?.assumingMemoryBound(to: UInt8.self))
                stream.avail_in = got
            }
            let status = lzma_code(&stream, atEnd ? LZMA_FINISH : LZMA_RUN)
            switch status {
            case LZMA_OK: continue
            case LZMA_SEEK_NEEDED:
                position = Int64(stream.seek_pos)
                stream.avail_in = 0
            case LZMA_STREAM_END:
                guard let index else { return nil }
                return Int64(lzma_index_uncompressed_size(index))
            case LZMA_FORMAT_ERROR: throw fail("not an xz file (bad header magic)")
            case LZMA_DATA_ERROR: throw fail("corrupt stream header, footer or index")
            case LZMA_BUF_ERROR: throw fail("the file ends early (truncated file)")
            default: throw fail("liblzma error \(status.rawValue) while reading the index")
            }
        }
    }

    /// Walks the zstd frames by their headers and block headers (no decoding) and sums the
    /// content sizes; nil when a frame does not record its size. Skippable frames count zero.
    static func zstdFramesSize(path: String) throws -> Int64? {
        let descriptor = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? descriptor.close() }
        let fileSize = try descriptor.seek(offset: 0, from: .end)
        func fail(_ reason: String) -> DecompressionError {
            DecompressionError(path: path, format: .zstd, offset: 0, reason: reason)
        }
        var position: Int64 = 0
        var total: Int64 = 0
        var frames = 0
        while position < fileSize {
            let header = try descriptor.read(count: 18, atAbsoluteOffset: position)
            guard header.count >= 8 else { throw fail("the file ends inside a frame header (truncated file)") }
            let magic = UInt32(header[0]) | UInt32(header[1]) << 8 | UInt32(header[2]) << 16 | UInt32(header[3]) << 24
            if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
                let length =
                    UInt32(header[4]) | UInt32(header[5]) << 8 | UInt32(header[6]) << 16 | UInt32(header[7]) << 24
                position += 8 + Int64(length)
                continue
            }
            guard magic == 0xFD2F_B528 else { throw fail("not a zstd frame at byte \(position) (bad magic)") }
            let content = header.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
            if content == ZSTD_CONTENTSIZE_ERROR { throw fail("bad frame header at byte \(position)") }
            if content == ZSTD_CONTENTSIZE_UNKNOWN { return nil }
            total += Int64(content)
            frames += 1
            // Frame header size (RFC 8878 §3.1.1.1): magic, descriptor, window, dictionary id, size.
            let descriptorByte = header[4]
            let singleSegment = descriptorByte & 0x20 != 0
            let dictionaryBytes = [0, 1, 2, 4][Int(descriptorByte & 0x03)]
            let sizeBytes = [singleSegment ? 1 : 0, 2, 4, 8][Int(descriptorByte >> 6)]
            position += 5 + (singleSegment ? 0 : 1) + Int64(dictionaryBytes) + Int64(sizeBytes)
            while true {
                let block = try descriptor.read(count: 3, atAbsoluteOffset: position)
                guard block.count == 3 else { throw fail("the file ends inside a block header (truncated file)") }
                let word = UInt32(block[0]) | UInt32(block[1]) << 8 | UInt32(block[2]) << 16
                let type = (word >> 1) & 0x3
                let size = Int64(word >> 3)
                guard type != 3 else { throw fail("reserved block type at byte \(position)") }
                position += 3 + (type == 1 ? 1 : size)
                if word & 1 != 0 { break }
            }
            if descriptorByte & 0x04 != 0 { position += 4 }
        }
        guard position == fileSize, frames > 0 else { throw fail("the file ends inside a frame (truncated file)") }
        return total
    }
}
