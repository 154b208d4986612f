public import DFU
import FileAccess
import Glibc
import Synchronization
import SystemPackage

/// The bytes of one `SendSegment`, checked against the map before the first byte is sent: a
/// range whose data does not match its checksum stops with `bmap-checksum` and nothing of it goes
/// out. A plain image is hashed in one read pass and then sent from the file (hashed again while
/// sending, so a file changed in between is still caught before the range is finished); a
/// compressed one is decoded once into a staging buffer (memory up to `memoryLimit`, else an
/// unlinked temporary file) and sent from there.
public final class SegmentSource: ByteSource {
    public let segment: SendSegment
    private let image: ImageReader
    private let checksumType: ChecksumType?
    private let staged: Mutex<Staged>
    private let rehash: Mutex<Rehash>

    private enum Staged {
        case none
        case memory([UInt8])
        case file(FileDescriptor)
    }

    /// Progress of the second hashing pass while a plain image is sent.
    private struct Rehash {
        var position: Int64
        var index = 0
        var hasher: RangeHasher?
    }

    /// Segments up to this size are staged in memory when decoding.
    public static let memoryLimit: Int64 = 8 << 20

    public init(segment: SendSegment, image: ImageReader, checksumType: ChecksumType?) {
        self.segment = segment
        self.image = image
        self.checksumType = checksumType
        staged = Mutex(.none)
        rehash = Mutex(Rehash(position: segment.offset))
    }

    deinit {
        staged.withLock { staged in
            if case .file(let descriptor) = staged { try? descriptor.close() }
        }
    }

    public var count: Int64 { segment.length }

    private var checked: Bool { checksumType != nil && segment.extents.contains { $0.checksum != nil } }

    /// Reads the segment once and compares every extent's checksum; stages decoded bytes.
    /// - Throws: `ImageSourceError` (`bmap-checksum`, `bad-compressed-image`, `image-unreadable`).
    public func prepare() throws(ImageSourceError) {
        let compressed = image.compression != nil
        guard checked || compressed else { return }
        var memory: [UInt8] = []
        var spool: FileDescriptor?
        let useMemory = segment.length <= Self.memoryLimit
        if compressed {
            if useMemory {
                memory.reserveCapacity(Int(segment.length))
            } else {
                spool = try Self.temporaryFile(for: image.path)
            }
        }
        var verifier = ExtentVerifier(extents: segment.extents, type: checksumType, path: image.path)
        var position = segment.offset
        let piece = 1 << 20
        do {
            while position < segment.end {
                let bytes = try image.read(offset: position, length: Int(min(Int64(piece), segment.end - position)))
                guard !bytes.isEmpty else {
                    throw ImageSourceError(
                        .unreadable, path: image.path, message: "ends at \(position), inside a mapped range")
                }
                try verifier.consume(bytes, at: position)
                if compressed {
                    if let spool {
                        _ = try bytes.withUnsafeBytes {
                            try spool.writeAll(toAbsoluteOffset: position - segment.offset, $0)
                        }
                    } else {
                        memory += bytes
                    }
                }
                position += Int64(bytes.count)
            }
        } catch let error as ImageSourceError {
            try? spool?.close()
            throw error
        } catch {
            try? spool?.close()
            throw ImageSourceError(.unreadable, path: image.path, message: "cannot stage a range: \(error)")
        }
        if compressed {
            if let spool {
                staged.withLock { $0 = .file(spool) }
            } else {
                staged.withLock { $0 = .memory(memory) }
            }
        }
    }

    public func read(offset: Int64, length: Int) throws -> [UInt8] {
        let count = Int(max(0, min(Int64(length), segment.length - offset)))
        let fromStage: [UInt8]? = try staged.withLock { staged throws -> [UInt8]? in
            switch staged {
            case .none: return nil
            case .memory(let bytes): return Array(bytes[Int(offset)..<Int(offset) + count])
            case .file(let descriptor): return try descriptor.read(count: count, atAbsoluteOffset: offset)
            }
        }
        if let fromStage { return fromStage }
        let bytes = try image.read(offset: segment.offset + offset, length: count)
        if checked { try recheck(bytes, at: segment.offset + offset) }
        return bytes
    }

    /// Hashes again what is sent from a plain file, in order; a mismatch means the file changed
    /// after `prepare()`.
    private func recheck(_ bytes: [UInt8], at position: Int64) throws(ImageSourceError) {
        let path = image.path
        let extents = segment.extents
        let type = checksumType
        try rehash.withLock { state throws(ImageSourceError) in
            guard position == state.position, let type else { return }
            var verifier = ExtentVerifier(
                extents: extents, type: type, path: path, index: state.index, hasher: state.hasher)
            do {
                try verifier.consume(bytes, at: position)
            } catch let error as ImageSourceError {
                throw ImageSourceError(
                    .bmapChecksum, path: error.path, line: error.line,
                    message: error.message + " while it was being sent: the file changed after it was checked")
            } catch {
                throw ImageSourceError(.unreadable, path: path, message: "\(error)")
            }
            state.position += Int64(bytes.count)
            state.index = verifier.index
            state.hasher = verifier.hasher
        }
    }

    static func temporaryFile(for path: String) throws(ImageSourceError) -> FileDescriptor {
        let folder = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array("\(folder)/stm32mp-flash-range-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw ImageSourceError(
                .unreadable, path: path,
                message: "cannot create a staging file in \(folder): \(String(cString: strerror(errno)))")
        }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return FileDescriptor(rawValue: fd)
    }
}

/// Feeds bytes in order and checks each extent's checksum when its last byte has passed.
struct ExtentVerifier {
    let extents: [ImageExtent]
    let type: ChecksumType?
    let path: String
    var index = 0
    var hasher: RangeHasher?

    init(extents: [ImageExtent], type: ChecksumType?, path: String, index: Int = 0, hasher: RangeHasher? = nil) {
        self.extents = extents
        self.type = type
        self.path = path
        self.index = index
        self.hasher = hasher
    }

    mutating func consume(_ bytes: [UInt8], at position: Int64) throws(ImageSourceError) {
        guard let type else { return }
        let end = position + Int64(bytes.count)
        while index < extents.count {
            let extent = extents[index]
            let from = max(extent.offset, position)
            let to = min(extent.end, end)
            guard from < to || extent.end <= position else { return }
            if extent.checksum != nil, from < to {
                if hasher == nil { hasher = type.hasher() }
                hasher?.update(bytes[Int(from - position)..<Int(to - position)])
            }
            guard extent.end <= end else { return }
            if let expected = extent.checksum {
                let actual = (hasher ?? type.hasher()).hex()
                guard actual == expected else {
                    throw ImageSourceError(
                        .bmapChecksum, path: path, line: extent.line,
                        message:
                            "bytes \(extent.offset)..<\(extent.end) have \(type.rawValue) \(actual), the map says \(expected): the image is not the one the map was made for, or it is damaged"
                    )
                }
            }
            hasher = nil
            index += 1
        }
    }
}
