/// Little-endian field access: every GPT and MBR field is little-endian on disk.
extension Array where Element == UInt8 {
    func littleEndian<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, at offset: Int) -> T {
        (0..<T.bitWidth / 8).reduce(T.zero) { value, index in value | T(self[offset + index]) << (8 * index) }
    }

    mutating func store<T: FixedWidthInteger & UnsignedInteger>(littleEndian value: T, at offset: Int) {
        for index in 0..<T.bitWidth / 8 { self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }
}
