import Decompression

/// Why an image cannot be sent as it is. Codes are stable: they are diagnosis codes and appear in
/// JSON (docs/troubleshooting.md has a section for each).
public struct ImageSourceError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, Codable {
        /// A mapped range's bytes do not match the map's checksum (the image is not the one
        /// the map was made for, or it was damaged).
        case bmapChecksum = "bmap-checksum"
        /// A compressed Binary is corrupt, truncated, or not of the format its name says.
        case badCompressedImage = "bad-compressed-image"
        /// The block map itself is malformed, or does not describe this image.
        case badBlockMap = "bad-block-map"
        /// The image cannot be read (missing, permissions, I/O error).
        case unreadable = "image-unreadable"
    }

    public var code: Code
    /// The file at fault (the image, or the map).
    public var path: String
    /// The map line, for map problems and range checksums.
    public var line: Int?
    public var message: String

    public init(_ code: Code, path: String, line: Int? = nil, message: String) {
        self.code = code
        self.path = path
        self.line = line
        self.message = message
    }

    init(_ error: DecompressionError) {
        self.init(
            .badCompressedImage, path: error.path,
            message: "\(error.format.rawValue): \(error.reason) (after \(error.offset) uncompressed bytes)")
    }

    init(_ error: BlockMapError) {
        self.init(
            .badBlockMap, path: error.path, line: error.line,
            message: (error.field.map { "\($0): " } ?? "") + error.message)
    }

    public var description: String { "\(path)\(line.map { ":\($0)" } ?? ""): \(message) [\(code.rawValue)]" }
}
