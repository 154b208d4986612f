import Crypto
import FileAccess
import Glibc
import SystemPackage

/// Hash functions block maps use for their ranges.
public enum ChecksumType: String, Sendable, Hashable, Codable {
    case sha1, sha256

    /// Hex digits of one digest.
    var hexLength: Int { self == .sha1 ? 40 : 64 }

    func hasher() -> RangeHasher { RangeHasher(self) }
}

/// SHA-1 or SHA-256 fed piece by piece (swift-crypto).
struct RangeHasher {
    private var sha1: Insecure.SHA1?
    private var sha256: SHA256?

    init(_ type: ChecksumType) {
        if type == .sha1 { sha1 = Insecure.SHA1() } else { sha256 = SHA256() }
    }

    mutating func update(_ bytes: ArraySlice<UInt8>) {
        bytes.withUnsafeBytes { buffer in
            if sha1 != nil { sha1?.update(bufferPointer: buffer) } else { sha256?.update(bufferPointer: buffer) }
        }
    }

    func hex() -> String {
        let digest: [UInt8] = sha1.map { Array($0.finalize()) } ?? sha256.map { Array($0.finalize()) } ?? []
        return digest.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}

/// A bmaptool block map (`.bmap`, format 1.x and 2.x): which blocks of an image hold data, with a
/// checksum per range (from 1.3 on). Everything else in the image is "don't care" by the image
/// builder's word, which is what lets the host skip it.
public struct BlockMap: Sendable, Hashable {
    /// One run of mapped blocks, inclusive.
    public struct BlockRange: Sendable, Hashable {
        public var first: Int64
        public var last: Int64
        /// Lower-case hex digest of the range's bytes (the last block only up to the image end);
        /// nil in formats before 1.3.
        public var checksum: String?
        /// Line of the `<Range>` element, for errors.
        public var line: Int
    }

    public var path: String
    /// `major.minor` as written.
    public var version: String
    public var imageSize: Int64
    public var blockSize: Int64
    public var blocksCount: Int64
    public var mappedBlocksCount: Int64
    /// nil before format 1.3 (no checksums).
    public var checksumType: ChecksumType?
    public var ranges: [BlockRange]

    /// Bytes the ranges cover inside the image (the last block may be partial).
    public var mappedBytes: Int64 {
        ranges.reduce(0) { $0 + min(($1.last + 1) * blockSize, imageSize) - $1.first * blockSize }
    }

    /// The ranges as byte extents of the image.
    public var extents: [ImageExtent] {
        ranges.map {
            let start = $0.first * blockSize
            return ImageExtent(
                offset: start, length: min(($0.last + 1) * blockSize, imageSize) - start, checksum: $0.checksum,
                line: $0.line)
        }
    }

    /// Reads and checks a map file.
    /// - Throws: `BlockMapError` naming the file, the line and the field.
    public static func load(path: String) throws(BlockMapError) -> BlockMap {
        let bytes: [UInt8]
        do {
            let descriptor = try FileDescriptor.open(FilePath(path), .readOnly)
            defer { try? descriptor.close() }
            let size = try descriptor.seek(offset: 0, from: .end)
            guard size <= 64 << 20 else {
                throw BlockMapError(
                    path: path, line: nil, field: nil,
                    message: "is \(size) bytes; a block map is text of a few MiB at most")
            }
            bytes = try descriptor.read(count: Int(size), atAbsoluteOffset: 0)
        } catch let error as BlockMapError {
            throw error
        } catch {
            throw BlockMapError(path: path, line: nil, field: nil, message: "cannot be read: \(error)")
        }
        return try parse(bytes, path: path)
    }

    /// Parses map text; `path` only names the file in errors.
    public static func parse(_ bytes: [UInt8], path: String) throws(BlockMapError) -> BlockMap {
        func fail(_ line: Int?, _ field: String?, _ message: String) -> BlockMapError {
            BlockMapError(path: path, line: line, field: field, message: message)
        }
        let root: XMLElement
        do { root = try MiniXML.parse(bytes) } catch { throw fail(error.line, nil, error.message) }
        guard root.name == "bmap" else { throw fail(root.line, nil, "the root element is <\(root.name)>, not <bmap>") }
        guard let version = root.attributes["version"] else {
            throw fail(root.line, "version", "<bmap> has no version attribute")
        }
        let parts = version.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let major = Int(parts[0]), let minor = Int(parts[1]) else {
            throw fail(root.line, "version", "'\(version)' is not major.minor")
        }
        guard major == 1 || major == 2 else {
            throw fail(root.line, "version", "format \(version) is not supported (1.x and 2.x are)")
        }

        func number(_ field: String) throws(BlockMapError) -> Int64 {
            guard let element = root.child(field) else { throw fail(root.line, field, "<\(field)> is missing") }
            let text = element.text.trimmed
            guard let value = Int64(text), value >= 0 else {
                throw fail(element.line, field, "'\(text)' is not a non-negative whole number")
            }
            return value
        }
        let imageSize = try number("ImageSize")
        let blockSize = try number("BlockSize")
        let blocksCount = try number("BlocksCount")
        let mappedBlocksCount = try number("MappedBlocksCount")
        guard blockSize > 0, blockSize % 512 == 0 else {
            throw fail(root.child("BlockSize")?.line, "BlockSize", "\(blockSize) is not a positive multiple of 512")
        }
        guard blocksCount == (imageSize + blockSize - 1) / blockSize else {
            throw fail(
                root.child("BlocksCount")?.line, "BlocksCount",
                "\(blocksCount) blocks do not match ImageSize \(imageSize) with BlockSize \(blockSize) (expected \((imageSize + blockSize - 1) / blockSize))"
            )
        }

        // 1.0–1.2: no checksums; 1.3: SHA-1 in `sha1`; 1.4 (a misnamed 2.0) and 2.x: ChecksumType + `chksum`.
        let checksumType: ChecksumType?
        let attribute: String?
        let fileChecksumField: String?
        if major == 2 || (major == 1 && minor >= 4) {
            guard let element = root.child("ChecksumType") else {
                throw fail(root.line, "ChecksumType", "<ChecksumType> is missing (required from format 1.4 on)")
            }
            guard let type = ChecksumType(rawValue: element.text.trimmed.lowercased()) else {
                throw fail(element.line, "ChecksumType", "'\(element.text.trimmed)' is not sha1 or sha256")
            }
            (checksumType, attribute, fileChecksumField) = (type, "chksum", "BmapFileChecksum")
        } else if minor == 3 {
            (checksumType, attribute, fileChecksumField) = (.sha1, "sha1", "BmapFileSHA1")
        } else {
            (checksumType, attribute, fileChecksumField) = (nil, nil, nil)
        }

        guard let blockMap = root.child("BlockMap") else { throw fail(root.line, "BlockMap", "<BlockMap> is missing") }
        var ranges: [BlockRange] = []
        var counted: Int64 = 0
        for element in blockMap.children {
            guard element.name == "Range" else {
                throw fail(element.line, element.name, "<BlockMap> holds only <Range> elements")
            }
            let text = element.text.trimmed
            let bounds = text.split(separator: "-", maxSplits: 1).map { $0.trimmingSpaces }
            guard let first = Int64(bounds[0]), let last = bounds.count == 2 ? Int64(bounds[1]) : first, first >= 0
            else { throw fail(element.line, "Range", "'\(text)' is not FIRST-LAST or a block number") }
            guard first <= last else {
                throw fail(element.line, "Range", "'\(text)': the first block is after the last")
            }
            guard last < blocksCount else {
                throw fail(element.line, "Range", "'\(text)' reaches past the image's \(blocksCount) blocks")
            }
            if let previous = ranges.last, first <= previous.last {
                throw fail(element.line, "Range", "'\(text)' overlaps or precedes the range on line \(previous.line)")
            }
            var checksum: String?
            // bmaptool writes ranges without a checksum under `create --no-checksum`.
            if let attribute, let type = checksumType, let value = element.attributes[attribute] {
                let digest = value.trimmed.lowercased()
                guard digest.count == type.hexLength, digest.allSatisfy(\.isHexDigit) else {
                    throw fail(element.line, attribute, "'\(value)' is not a \(type.rawValue) digest")
                }
                checksum = digest
            }
            counted += last - first + 1
            ranges.append(BlockRange(first: first, last: last, checksum: checksum, line: element.line))
        }
        guard counted == mappedBlocksCount else {
            throw fail(
                root.child("MappedBlocksCount")?.line, "MappedBlocksCount",
                "says \(mappedBlocksCount) blocks but the ranges hold \(counted)")
        }
        if let fileChecksumField, let type = checksumType, let element = root.child(fileChecksumField) {
            let recorded = element.text.trimmed.lowercased()
            guard recorded.count == type.hexLength else {
                throw fail(element.line, fileChecksumField, "'\(recorded)' is not a \(type.rawValue) digest")
            }
            // bmaptool hashes the file with its own checksum replaced by zeros.
            let zeros = [UInt8](repeating: UInt8(ascii: "0"), count: recorded.count)
            var copy = bytes
            if let at = copy.firstRange(of: Array(element.text.trimmed.utf8)) {
                copy.replaceSubrange(at, with: zeros)
            }
            var hasher = type.hasher()
            hasher.update(copy[...])
            guard hasher.hex() == recorded else {
                throw fail(
                    element.line, fileChecksumField,
                    "the map's own checksum does not match its content: the file was edited or damaged")
            }
        }
        return BlockMap(
            path: path, version: version, imageSize: imageSize, blockSize: blockSize, blocksCount: blocksCount,
            mappedBlocksCount: mappedBlocksCount, checksumType: checksumType, ranges: ranges)
    }

    /// The map bmaptool would find for `image`: `image.bmap`, then the name with one extension
    /// less at a time (`rootfs.ext4.zst` → `rootfs.ext4.zst.bmap`, `rootfs.ext4.bmap`, `rootfs.bmap`).
    public static func discover(beside image: String) -> String? {
        var candidate = image
        while true {
            if isRegularFile(candidate + ".bmap") { return candidate + ".bmap" }
            let slash = candidate.lastIndex(of: "/")
            guard let dot = candidate.lastIndex(of: "."), slash.map({ dot > $0 }) ?? true else { return nil }
            candidate = String(candidate[..<dot])
        }
    }
}

/// A bad block map: the file, the line and the field, and what is wrong.
public struct BlockMapError: Error, Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var line: Int?
    public var field: String?
    public var message: String

    public var description: String {
        "\(path)\(line.map { ":\($0)" } ?? ""): \(field.map { "\($0): " } ?? "")\(message)"
    }
}

/// Bytes `offset ..< offset + length` of an uncompressed image, with the checksum the map gives.
public struct ImageExtent: Sendable, Hashable, Codable {
    public var offset: Int64
    public var length: Int64
    public var checksum: String?
    /// Line of the map's `<Range>`, nil for extents that do not come from a map.
    public var line: Int?

    public init(offset: Int64, length: Int64, checksum: String? = nil, line: Int? = nil) {
        self.offset = offset
        self.length = length
        self.checksum = checksum
        self.line = line
    }

    public var end: Int64 { offset + length }
}

func isRegularFile(_ path: String) -> Bool {
    guard let descriptor = try? FileDescriptor.open(FilePath(path), .readOnly) else { return false }
    defer { try? descriptor.close() }
    var info = stat()
    return fstat(descriptor.rawValue, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
}

extension String {
    var trimmed: String { String(trimmingSpaces) }
}

extension StringProtocol {
    var trimmingSpaces: Substring {
        let scalars = unicodeScalars
        let start = scalars.firstIndex { !$0.properties.isWhitespace } ?? scalars.endIndex
        let end = scalars.lastIndex { !$0.properties.isWhitespace }.map { scalars.index(after: $0) } ?? start
        return Substring(self)[start..<Swift.max(start, end)]
    }
}

extension Array where Element == UInt8 {
    func firstRange(of needle: [UInt8]) -> Range<Int>? {
        guard !needle.isEmpty, needle.count <= count else { return nil }
        for start in 0...(count - needle.count) where self[start] == needle[0] {
            if self[start..<start + needle.count].elementsEqual(needle) { return start..<start + needle.count }
        }
        return nil
    }
}
