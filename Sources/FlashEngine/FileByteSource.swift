public import DFU
import FileAccess
import SystemPackage

/// A file streamed in pieces by `pread`, so flashing a multi-gigabyte image costs one DFU block
/// of memory, not the file. Owns its descriptor and closes it at deinit.
public final class FileByteSource: ByteSource {
    public let path: String
    public let count: Int64
    private let descriptor: FileDescriptor

    public init(path: String) throws {
        self.path = path
        descriptor = try FileDescriptor.open(FilePath(path), .readOnly)
        do {
            count = try descriptor.seek(offset: 0, from: .end)
        } catch {
            try? descriptor.close()
            throw error
        }
    }

    public func read(offset: Int64, length: Int) throws -> [UInt8] {
        try descriptor.read(count: Int(max(0, min(Int64(length), count - offset))), atAbsoluteOffset: offset)
    }

    deinit { try? descriptor.close() }
}
