import SystemPackage

/// The uncompressed bytes of one compressed file, read forward only, in constant memory (one
/// input buffer, and one output buffer that small reads are served from: the engine reads a DFU
/// block of 4 KiB at a time, and one library call per 128 KiB (ZSTD_DStreamOutSize) instead of
/// per block is most of the decoding cost on images that are mostly zeros; large reads decode
/// straight into the caller's array).
///
/// It is strict where flashing needs it: a truncated stream, corrupt data, a failed integrity
/// check (gzip CRC-32, xz check, zstd content checksum) or trailing garbage is an error, never a
/// short image. Not thread-safe: one owner reads it.
public final class DecompressingReader {
    public let path: String
    public let format: CompressionFormat
    /// Uncompressed bytes handed out (or skipped) so far.
    public private(set) var produced: Int64 = 0
    private let descriptor: FileDescriptor
    private let codec: any Codec
    private var input: [UInt8]
    private var inputStart = 0
    private var inputEnd = 0
    private var endOfFile = false
    /// True between gzip members / zstd frames: input may end here without truncation.
    private var betweenFrames = false
    private var finished = false
    /// Decoded bytes not handed out yet: `ahead[aheadStart..<aheadEnd]`.
    private var ahead: [UInt8]
    private var aheadStart = 0
    private var aheadEnd = 0

    /// Input is read in pieces of this size.
    static let inputBufferSize = 256 * 1024
    /// Reads smaller than this are served from a buffer of this size decoded ahead.
    static let aheadSize = 128 * 1024

    /// - Throws: `Errno` when the file cannot be opened, `DecompressionError` when the library
    ///   refuses to start.
    public init(path: String, format: CompressionFormat) throws {
        self.path = path
        self.format = format
        let codec: any Codec
        do {
            switch format {
            case .gzip: codec = try GzipCodec()
            case .xz: codec = try XZCodec()
            case .zstd: codec = try ZstdCodec()
            }
        } catch {
            throw DecompressionError(path: path, format: format, offset: 0, reason: error.reason)
        }
        self.codec = codec
        descriptor = try FileDescriptor.open(FilePath(path), .readOnly)
        input = [UInt8](repeating: 0, count: Self.inputBufferSize)
        ahead = [UInt8](repeating: 0, count: Self.aheadSize)
    }

    deinit { try? descriptor.close() }

    /// True once the stream has ended cleanly (every member / frame / index complete).
    public var isAtEnd: Bool { finished && aheadStart == aheadEnd }

    /// Up to `count` bytes; fewer only when the stream ended cleanly.
    /// - Throws: `DecompressionError` (corrupt, truncated, trailing garbage), `Errno` from `read`.
    public func read(_ count: Int) throws -> [UInt8] {
        // Not zero-filled first: every byte handed out is written by `fill`.
        try [UInt8](unsafeUninitializedCapacity: max(0, count)) { buffer, initialized in
            initialized = 0
            initialized = try fill(UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// Decodes and drops `count` bytes (to reach a range further on), through the read-ahead
    /// buffer: no memory of its own, and nothing at all for a count of 0 (the engine's reads
    /// usually continue where the last one ended).
    /// - Returns: the bytes skipped (fewer only when the stream ended).
    @discardableResult
    public func skip(_ count: Int64) throws -> Int64 {
        var left = count
        while left > 0 {
            if aheadStart == aheadEnd {
                guard !finished else { break }
                aheadStart = 0
                aheadEnd = 0
                aheadEnd = try ahead.withUnsafeMutableBytes { try decode(into: $0) }
                if aheadEnd == 0 { break }
            }
            let dropped = Int(min(Int64(aheadEnd - aheadStart), left))
            aheadStart += dropped
            left -= Int64(dropped)
        }
        let skipped = max(0, count - left)
        produced += skipped
        return skipped
    }

    /// Reads to the end and returns the total uncompressed size (one streaming pass).
    public func measure() throws -> Int64 {
        while try skip(1 << 30) > 0 {}
        return produced
    }

    private func fail(_ reason: String) -> DecompressionError {
        DecompressionError(path: path, format: format, offset: produced, reason: reason)
    }

    /// Moves unread input to the front and reads more from the file.
    private func refill() throws {
        if inputStart > 0 {
            let pending = inputEnd - inputStart
            if pending > 0 {
                input.withUnsafeMutableBytes {
                    $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[inputStart..<inputEnd]))
                }
            }
            inputStart = 0
            inputEnd = pending
        }
        guard inputEnd < input.count, !endOfFile else { return }
        let got = try input.withUnsafeMutableBytes { buffer in
            try descriptor.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[inputEnd...]))
        }
        if got == 0 { endOfFile = true } else { inputEnd += got }
    }

    /// Fills `output` from the bytes decoded ahead, then by decoding; short only at the end.
    private func fill(_ output: UnsafeMutableRawBufferPointer) throws -> Int {
        var filled = 0
        while filled < output.count {
            if aheadStart < aheadEnd {
                let count = min(aheadEnd - aheadStart, output.count - filled)
                ahead.withUnsafeBytes {
                    UnsafeMutableRawBufferPointer(rebasing: output[filled..<filled + count]).copyMemory(
                        from: UnsafeRawBufferPointer(rebasing: $0[aheadStart..<aheadStart + count]))
                }
                aheadStart += count
                filled += count
                continue
            }
            guard !finished else { break }
            if output.count - filled >= Self.aheadSize {
                filled += try decode(into: UnsafeMutableRawBufferPointer(rebasing: output[filled...]))
            } else {
                aheadStart = 0
                aheadEnd = 0
                aheadEnd = try ahead.withUnsafeMutableBytes { try decode(into: $0) }
            }
        }
        produced += Int64(filled)
        return filled
    }

    /// Decodes into `output` until it is full or the stream ended cleanly.
    private func decode(into output: UnsafeMutableRawBufferPointer) throws -> Int {
        var filled = 0
        while filled < output.count, !finished {
            if inputStart == inputEnd { try refill() }
            let noInput = inputStart == inputEnd
            if noInput, endOfFile, betweenFrames, format != .xz {
                finished = true
                break
            }
            let step: CodecStep
            do {
                step = try input.withUnsafeBytes { buffer in
                    try codec.step(
                        input: UnsafeRawBufferPointer(rebasing: buffer[inputStart..<inputEnd]),
                        output: UnsafeMutableRawBufferPointer(rebasing: output[filled...]), finish: endOfFile)
                }
            } catch let failure as CodecFailure {
                throw fail(failure.reason)
            }
            inputStart += step.consumed
            filled += step.produced
            switch step.status {
            case .streamEnd:
                finished = true
            case .frameEnd:
                betweenFrames = true
                if inputStart == inputEnd { try refill() }
                if inputStart == inputEnd, endOfFile {
                    finished = true
                } else {
                    do { try codec.nextFrame() } catch { throw fail(error.reason) }
                }
            case .progress:
                if step.consumed > 0 { betweenFrames = false }
                if step.consumed == 0, step.produced == 0 {
                    // No progress: the decoder needs more input than is buffered.
                    let buffered = inputEnd - inputStart
                    try refill()
                    if inputEnd - inputStart == buffered {
                        throw fail(
                            endOfFile ? "the stream ends early (truncated file)" : "the decoder made no progress")
                    }
                }
            }
        }
        return filled
    }
}
