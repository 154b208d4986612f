public import Decompression
import FileAccess
import Synchronization
import SystemPackage

/// The uncompressed bytes of a Binary, plain or compressed, by offset. A plain file is read with
/// `pread`; a compressed one is decoded forward (skipping forward to a later offset, starting
/// over for an earlier one), so memory stays constant whatever the image size.
public final class ImageReader: Sendable {
    public let path: String
    public let compression: CompressionFormat?
    /// Uncompressed size, as prepared (checked against the stream when it ends).
    public let size: Int64
    private let state: Mutex<State>

    private struct State: ~Copyable {
        var file: FileDescriptor?
        var stream: DecompressingReader?
    }

    /// - Throws: `ImageSourceError` (`image-unreadable`, `bad-compressed-image`).
    public init(path: String, compression: CompressionFormat?, size: Int64) throws(ImageSourceError) {
        self.path = path
        self.compression = compression
        self.size = size
        do {
            if let compression {
                state = Mutex(State(file: nil, stream: try DecompressingReader(path: path, format: compression)))
            } else {
                state = Mutex(State(file: try FileDescriptor.open(FilePath(path), .readOnly), stream: nil))
            }
        } catch let error as DecompressionError {
            throw ImageSourceError(error)
        } catch {
            throw ImageSourceError(.unreadable, path: path, message: "cannot be opened: \(error)")
        }
    }

    deinit { state.withLock { try? $0.file?.close() } }

    /// Up to `length` bytes at `offset` (fewer only at the image end). When a read reaches the
    /// end of a compressed image, the stream must end there too: a longer or shorter stream, or a
    /// failed integrity check, is `bad-compressed-image` before the last bytes are handed out.
    public func read(offset: Int64, length: Int) throws(ImageSourceError) -> [UInt8] {
        let count = Int(max(0, min(Int64(length), size - offset)))
        guard count > 0 else { return [] }
        do {
            return try state.withLock { state throws -> [UInt8] in
                if let file = state.file { return try file.read(count: count, atAbsoluteOffset: offset) }
                guard let format = compression else { return [] }
                if state.stream == nil || state.stream!.produced > offset {
                    state.stream = try DecompressingReader(path: path, format: format)
                }
                let stream = state.stream!
                let skipped = try stream.skip(offset - stream.produced)
                guard stream.produced == offset else {
                    throw DecompressionError(
                        path: path, format: format, offset: stream.produced,
                        reason:
                            "the stream ends after \(stream.produced) bytes, before offset \(offset) (skipped \(skipped))"
                    )
                }
                let bytes = try stream.read(count)
                guard bytes.count == count else {
                    throw DecompressionError(
                        path: path, format: format, offset: stream.produced,
                        reason: "the stream ends after \(stream.produced) bytes; the image is \(size) bytes")
                }
                if offset + Int64(count) == size {
                    let extra = try stream.read(1)
                    guard extra.isEmpty, stream.isAtEnd else {
                        throw DecompressionError(
                            path: path, format: format, offset: stream.produced,
                            reason: "the stream holds more than the \(size) bytes it was prepared with")
                    }
                }
                return bytes
            }
        } catch let error as DecompressionError {
            throw ImageSourceError(error)
        } catch {
            throw ImageSourceError(.unreadable, path: path, message: "cannot be read at offset \(offset): \(error)")
        }
    }
}
