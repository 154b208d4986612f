import Foundation

/// Real images for the big-image tests: a sparse ext4 file system made by `mkfs.ext4 -d` from a
/// folder of files with pseudo-random content, its block map made by the real `bmaptool`, and
/// copies compressed by the real `gzip`, `xz` and `zstd`.
public struct SparseImageFixture: Sendable {
    /// The plain image.
    public let image: String
    /// `image.bmap`, written by `bmaptool create`.
    public let bmap: String

    /// Makes `name` (e.g. `rootfs.ext4`) of `megabytes` MiB in `folder`, filled with files totalling
    /// about `dataKiB` KiB.
    public static func make(
        in folder: String, name: String = "rootfs.ext4", megabytes: Int = 16, dataKiB: Int = 1024, seed: UInt64 = 1
    ) throws -> SparseImageFixture {
        let content = folder + "/" + name + ".content"
        try FileManager.default.createDirectory(atPath: content, withIntermediateDirectories: true)
        var generator = SeededBytes(seed: seed)
        var left = dataKiB * 1024
        var index = 0
        while left > 0 {
            let size = min(left, 64 * 1024 + (index * 7919) % (256 * 1024))
            try Data(generator.bytes(size)).write(to: URL(fileURLWithPath: "\(content)/file\(index).bin"))
            left -= size
            index += 1
        }
        let image = folder + "/" + name
        _ = FileManager.default.createFile(atPath: image, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: image))
        try handle.truncate(atOffset: UInt64(megabytes) << 20)
        try handle.close()
        try check(
            ExternalTool("mkfs.ext4", package: "e2fsprogs").run([
                "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=1,lazy_journal_init=1", "-d", content, image,
            ]), "mkfs.ext4")
        let bmap = image + ".bmap"
        try check(ExternalTool("bmaptool", package: "bmap-tools").run(["create", "-o", bmap, image]), "bmaptool")
        return SparseImageFixture(image: image, bmap: bmap)
    }

    /// Compresses a copy of `path` with the real tool; returns the compressed file's path.
    public static func compress(_ path: String, with tool: String, extraArguments: [String] = []) throws -> String {
        let (name, package, suffix): (String, String, String) =
            switch tool {
            case "gzip": ("gzip", "gzip", ".gz")
            case "xz": ("xz", "xz-utils", ".xz")
            default: ("zstd", "zstd", ".zst")
            }
        try check(
            ExternalTool(name, package: package).run(extraArguments + ["-k", "-f", "-q", path]), name)
        return path + suffix
    }

    static func check(_ result: ExternalTool.Result, _ tool: String) throws {
        guard result.status == 0 else {
            throw FixtureError(message: "\(tool) failed (\(result.status)): \(result.standardError)")
        }
    }
}

public struct FixtureError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Deterministic pseudo-random bytes (splitmix64), so images are the same on every machine.
public struct SeededBytes {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count + 8)
        while out.count < count { withUnsafeBytes(of: next()) { out += $0 } }
        return Array(out.prefix(count))
    }
}
