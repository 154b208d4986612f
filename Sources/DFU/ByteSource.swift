/// Random-access bytes to download, read one chunk at a time so that a multi-GiB image is never
/// held in memory.
public protocol ByteSource: Sendable {
    /// Total length in bytes.
    var count: Int64 { get }
    /// Up to `length` bytes from `offset` (fewer only at the end).
    func read(offset: Int64, length: Int) throws -> [UInt8]
}

/// Bytes already in memory (layouts, commands, tests).
public struct MemoryByteSource: ByteSource {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var count: Int64 { Int64(bytes.count) }

    public func read(offset: Int64, length: Int) throws -> [UInt8] {
        let start = Int(min(max(offset, 0), count))
        let end = min(start + max(length, 0), bytes.count)
        return Array(bytes[start..<end])
    }
}
