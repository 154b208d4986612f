import CLzma
import CZlib
import CZstd

/// What one decoding step did.
struct CodecStep {
    enum Status {
        /// More input or output space is needed.
        case progress
        /// A gzip member or a zstd frame ended; more may follow.
        case frameEnd
        /// The whole stream ended (xz with concatenation: only at the end of input).
        case streamEnd
    }

    var consumed: Int
    var produced: Int
    var status: Status
}

/// One system decoder. Each owns its C state and frees it at deinit; none is shared across tasks.
protocol Codec: AnyObject {
    /// Decodes from `input` into `output`. `finish` says no input follows what is given.
    /// - Throws: a reason (the library's message) when the data is corrupt.
    func step(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, finish: Bool) throws(CodecFailure)
        -> CodecStep
    /// Prepares for the next gzip member / zstd frame after `.frameEnd`.
    func nextFrame() throws(CodecFailure)
}

struct CodecFailure: Error {
    var reason: String
}

/// zlib's inflate in gzip mode (window bits 15 + 16).
final class GzipCodec: Codec {
    private var stream = z_stream()

    init() throws(CodecFailure) {
        let status = czlib_inflate_init2(&stream, 15 + 16)
        guard status == Z_OK else { throw CodecFailure(reason: "zlib inflateInit2 failed (\(status))") }
    }

    deinit { inflateEnd(&stream) }

    func step(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, finish: Bool) throws(CodecFailure)
        -> CodecStep
    {
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        stream.avail_in = UInt32(input.count)
        stream.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.avail_out = UInt32(output.count)
        let status = inflate(&stream, Z_NO_FLUSH)
        let consumed = input.count - Int(stream.avail_in)
        let produced = output.count - Int(stream.avail_out)
        switch status {
        case Z_OK, Z_BUF_ERROR: return CodecStep(consumed: consumed, produced: produced, status: .progress)
        case Z_STREAM_END: return CodecStep(consumed: consumed, produced: produced, status: .frameEnd)
        default:
            let message = stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
            throw CodecFailure(reason: message)
        }
    }

    func nextFrame() throws(CodecFailure) {
        let status = inflateReset(&stream)
        guard status == Z_OK else { throw CodecFailure(reason: "zlib inflateReset failed (\(status))") }
    }
}

/// liblzma's .xz decoder with concatenated streams, checking every block's integrity check.
final class XZCodec: Codec {
    private var stream = lzma_stream()

    init() throws(CodecFailure) {
        let status = lzma_stream_decoder(&stream, UInt64.max, clzma_concatenated)
        guard status == LZMA_OK else { throw CodecFailure(reason: "lzma_stream_decoder failed (\(status.rawValue))") }
    }

    deinit { lzma_end(&stream) }

    func step(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, finish: Bool) throws(CodecFailure)
        -> CodecStep
    {
        stream.next_in = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.avail_in = input.count
        stream.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.avail_out = output.count
        let status = lzma_code(&stream, finish ? LZMA_FINISH : LZMA_RUN)
        let consumed = input.count - stream.avail_in
        let produced = output.count - stream.avail_out
        switch status {
        case LZMA_OK: return CodecStep(consumed: consumed, produced: produced, status: .progress)
        case LZMA_STREAM_END: return CodecStep(consumed: consumed, produced: produced, status: .streamEnd)
        case LZMA_BUF_ERROR where !finish: return CodecStep(consumed: consumed, produced: produced, status: .progress)
        case LZMA_BUF_ERROR: throw CodecFailure(reason: "the stream ends early (truncated file)")
        case LZMA_FORMAT_ERROR: throw CodecFailure(reason: "not an xz stream (bad header magic)")
        case LZMA_DATA_ERROR: throw CodecFailure(reason: "corrupt data")
        case LZMA_OPTIONS_ERROR: throw CodecFailure(reason: "unsupported options in the stream header")
        case LZMA_MEM_ERROR, LZMA_MEMLIMIT_ERROR: throw CodecFailure(reason: "liblzma ran out of memory")
        default: throw CodecFailure(reason: "liblzma error \(status.rawValue)")
        }
    }

    func nextFrame() throws(CodecFailure) {}
}

/// libzstd's streaming decoder; it moves from one frame to the next by itself and checks the
/// content checksum of frames that carry one.
final class ZstdCodec: Codec {
    private let stream: OpaquePointer

    init() throws(CodecFailure) {
        guard let stream = ZSTD_createDStream() else { throw CodecFailure(reason: "ZSTD_createDStream failed") }
        self.stream = stream
        let status = ZSTD_initDStream(stream)
        if ZSTD_isError(status) != 0 { throw CodecFailure(reason: String(cString: ZSTD_getErrorName(status))) }
    }

    deinit { ZSTD_freeDStream(stream) }

    func step(input: UnsafeRawBufferPointer, output: UnsafeMutableRawBufferPointer, finish: Bool) throws(CodecFailure)
        -> CodecStep
    {
        var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        let status = ZSTD_decompressStream(stream, &outBuffer, &inBuffer)
        if ZSTD_isError(status) != 0 { throw CodecFailure(reason: String(cString: ZSTD_getErrorName(status))) }
        return CodecStep(consumed: inBuffer.pos, produced: outBuffer.pos, status: status == 0 ? .frameEnd : .progress)
    }

    func nextFrame() throws(CodecFailure) {}
}
