import CZlib

/// CRC-32 as U-Boot's `crc32` command computes it (IEEE, reflected 0xEDB88320), through zlib:
/// `--verify` over fastboot compares whole partitions by it, so it must run at memory speed.
public struct ZlibCRC32: Sendable, Hashable {
    public private(set) var value: UInt32 = 0

    public init() {}

    public mutating func update(_ bytes: some Collection<UInt8>) {
        if bytes.withContiguousStorageIfAvailable({ update(UnsafeRawBufferPointer($0)) }) == nil {
            Array(bytes).withUnsafeBytes { update($0) }
        }
    }

    private mutating func update(_ buffer: UnsafeRawBufferPointer) {
        var rest = buffer
        while !rest.isEmpty {
            let count = min(rest.count, Int(UInt32.max >> 1))
            let base = rest.baseAddress?.assumingMemoryBound(to: Bytef.self)
            value = UInt32(truncatingIfNeeded: crc32(uLong(value), base, uInt(count)))
            rest = UnsafeRawBufferPointer(rebasing: rest[count...])
        }
    }

    public static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        var crc = ZlibCRC32()
        crc.update(bytes)
        return crc.value
    }
}
