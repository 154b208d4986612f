public import SystemPackage

extension FileDescriptor {
    /// Reads up to `count` bytes at `offset` without moving the file position, retrying short
    /// reads: the result is shorter than `count` only at the end of the file. Callers stream large
    /// files through this in blocks, so no file is ever loaded whole.
    /// - Throws: `Errno` from `pread`.
    ///
    /// The corresponding C function is `pread`.
    public func read(count: Int, atAbsoluteOffset offset: Int64) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max(0, count))
        var filled = 0
        while filled < bytes.count {
            let got = try bytes.withUnsafeMutableBytes { buffer in
                try read(
                    fromAbsoluteOffset: offset + Int64(filled),
                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]))
            }
            if got == 0 { break }
            filled += got
        }
        bytes.removeLast(bytes.count - filled)
        return bytes
    }
}
