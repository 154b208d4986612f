import Glibc
public import SystemPackage

extension FileDescriptor {
    /// `fallocate(2)` as Glibc exports it. The Swift Glibc module imports `<fcntl.h>` without
    /// `_GNU_SOURCE`, so the declaration is hidden; the symbol is looked up once instead.
    private typealias Fallocate = @convention(c) (Int32, Int32, Int, Int) -> Int32
    private static let fallocate: Fallocate? = dlsym(nil, "fallocate").map {
        unsafeBitCast($0, to: Fallocate.self)
    }
    /// `<linux/falloc.h>`: deallocate the range, and do not change the file's size.
    private static let punchHoleKeepSize: Int32 = 0x02 | 0x01

    /// Deallocates `length` bytes at `offset`: they read as zeros afterwards and take no space
    /// (a hole), the file size is unchanged.
    /// - Throws: `Errno` (`EOPNOTSUPP` on file systems without holes); the caller writes zeros then.
    public func punchHole(at offset: Int64, length: Int64) throws {
        guard let fallocate = Self.fallocate else { throw Errno.notSupported }
        guard fallocate(rawValue, Self.punchHoleKeepSize, Int(offset), Int(length)) == 0 else {
            throw Errno(rawValue: errno)
        }
    }
}
