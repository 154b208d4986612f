/// A compression a Binary may carry, named by its file extension the way image builders name
/// them (`rootfs.ext4.zst`). Decoding always goes through the system library of the format.
public enum CompressionFormat: String, Sendable, Hashable, CaseIterable, Codable {
    /// gzip (RFC 1952) through zlib; concatenated members are one stream, as `gzip -d` reads them.
    case gzip
    /// xz through liblzma; concatenated streams are one stream, as `xz -d` reads them.
    case xz
    /// Zstandard through libzstd; several frames are one stream.
    case zstd

    /// The format named by `path`'s extension (`.gz`, `.xz`, `.zst`), nil for anything else.
    public init?(path: String) {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        guard let dot = name.lastIndex(of: ".") else { return nil }
        switch name[name.index(after: dot)...].lowercased() {
        case "gz": self = .gzip
        case "xz": self = .xz
        case "zst": self = .zstd
        default: return nil
        }
    }

    /// The extension image builders use, with its dot.
    public var fileExtension: String {
        switch self {
        case .gzip: ".gz"
        case .xz: ".xz"
        case .zstd: ".zst"
        }
    }

    /// What the format records about the uncompressed size, for docs and `plan`.
    public var sizeSource: String {
        switch self {
        case .gzip: "counted in one streaming pass (gzip records the size only modulo 4 GiB, per member)"
        case .xz: "read from the xz index"
        case .zstd: "read from the zstd frame headers (one streaming pass when a frame does not record it)"
        }
    }
}

/// A compressed file that cannot be decoded: corrupt, truncated, or not of its format. `offset`
/// is how many uncompressed bytes were produced before the problem, so the user knows how far a
/// stream got.
public struct DecompressionError: Error, Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var format: CompressionFormat
    /// Uncompressed bytes produced before the failure.
    public var offset: Int64
    public var reason: String

    public init(path: String, format: CompressionFormat, offset: Int64, reason: String) {
        self.path = path
        self.format = format
        self.offset = offset
        self.reason = reason
    }

    public var description: String {
        "\(path): \(format.rawValue) stream unusable after \(offset) uncompressed bytes: \(reason)"
    }
}
