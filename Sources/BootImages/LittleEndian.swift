/// Little-endian field access for on-disk headers: every STM32 and FIP field is little-endian,
/// whatever the host's byte order.
extension Array where Element == UInt8 {
    func littleEndianUInt32(at offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { value, index in value | UInt32(self[offset + index]) << (8 * index) }
    }

    func littleEndianUInt64(at offset: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { value, index in value | UInt64(self[offset + index]) << (8 * index) }
    }

    mutating func storeLittleEndian(_ value: UInt32, at offset: Int) {
        for index in 0..<4 { self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    mutating func storeLittleEndian(_ value: UInt64, at offset: Int) {
        for index in 0..<8 { self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    /// The first offset in `range` whose byte is not zero, if any.
    func firstNonzeroOffset(in range: Range<Int>) -> Int? {
        range.first { self[$0] != 0 }
    }
}
