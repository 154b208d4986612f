public import Decompression
import SystemPackage

/// Which block map a Binary is sent with (`flash --bmap`).
public enum MapChoice: Sendable, Hashable {
    /// `X.bmap` beside the Binary when there is one (bmaptool's discovery).
    case automatic
    /// Send every byte (`--bmap none`).
    case none
    /// This map (`--bmap FILE`).
    case file(String)
}

/// How a Binary is read and which of its bytes are sent (`check`, `plan`, `flash`).
public struct ImageOptions: Sendable, Hashable {
    public var map: MapChoice
    /// Skip the holes of a sparse Binary that has no map (SEEK_DATA/SEEK_HOLE). Opt-in: a hole
    /// means "don't care" only when the image builder made it so.
    public var skipHoles: Bool

    public init(map: MapChoice = .automatic, skipHoles: Bool = false) {
        self.map = map
        self.skipHoles = skipHoles
    }
}

/// Everything known about one Binary before anything is sent: its uncompressed size, the map
/// or holes that select its bytes, and the extents that will go over the wire.
public struct PreparedImage: Sendable, Hashable {
    public enum Selection: String, Sendable, Hashable, Codable {
        /// Every byte.
        case whole
        /// The ranges of a block map.
        case blockMap
        /// The data extents of a sparse file.
        case holes
    }

    public var path: String
    public var compression: CompressionFormat?
    /// Bytes of the uncompressed image.
    public var size: Int64
    /// Where a compressed image's size came from; nil for plain files.
    public var sizeSource: UncompressedSize.Source?
    public var selection: Selection
    /// The map used, when `selection` is `.blockMap`.
    public var map: BlockMap?
    /// The image extents that are sent, in increasing order (one extent for `.whole`).
    public var extents: [ImageExtent]

    /// Bytes that will be sent.
    public var bytesToSend: Int64 { extents.reduce(0) { $0 + $1.length } }

    /// Reads sizes, finds and checks the map (size and block size against the image).
    /// - Throws: `ImageSourceError` naming the file (and the map's line and field).
    public static func prepare(path: String, options: ImageOptions = .init()) throws(ImageSourceError) -> PreparedImage
    {
        let compression = CompressionFormat(path: path)
        let fileSize: Int64
        do {
            let descriptor = try FileDescriptor.open(FilePath(path), .readOnly)
            defer { try? descriptor.close() }
            fileSize = try descriptor.seek(offset: 0, from: .end)
        } catch {
            throw ImageSourceError(.unreadable, path: path, message: "cannot be opened: \(error)")
        }
        var size = fileSize
        var sizeSource: UncompressedSize.Source?
        if let compression {
            do {
                (size, sizeSource) = try UncompressedSize.of(path: path, format: compression)
            } catch let error as DecompressionError {
                throw ImageSourceError(error)
            } catch {
                throw ImageSourceError(.unreadable, path: path, message: "cannot be read: \(error)")
            }
        }
        var image = PreparedImage(
            path: path, compression: compression, size: size, sizeSource: sizeSource, selection: .whole, map: nil,
            extents: size > 0 ? [ImageExtent(offset: 0, length: size)] : [])
        let mapPath: String?
        switch options.map {
        case .none: mapPath = nil
        case .file(let given): mapPath = given
        case .automatic: mapPath = BlockMap.discover(beside: path)
        }
        if let mapPath {
            let map: BlockMap
            do { map = try BlockMap.load(path: mapPath) } catch { throw ImageSourceError(error) }
            guard map.imageSize == size else {
                throw ImageSourceError(
                    .badBlockMap, path: mapPath, line: nil,
                    message:
                        "ImageSize: the map describes a \(map.imageSize)-byte image but \(path) is \(size) bytes\(compression == nil ? "" : " uncompressed"); it was made for another image"
                )
            }
            image.selection = .blockMap
            image.map = map
            image.extents = map.extents
        } else if options.skipHoles, compression == nil {
            image.selection = .holes
            image.extents = try dataExtents(path: path, size: size)
        }
        return image
    }

    /// The data extents of a sparse file by SEEK_DATA/SEEK_HOLE, widened to whole 4 KiB blocks
    /// (U-Boot writes MMC in whole 512-byte blocks; file systems allocate in 4 KiB).
    static func dataExtents(path: String, size: Int64) throws(ImageSourceError) -> [ImageExtent] {
        let descriptor: FileDescriptor
        do { descriptor = try FileDescriptor.open(FilePath(path), .readOnly) } catch {
            throw ImageSourceError(.unreadable, path: path, message: "cannot be opened: \(error)")
        }
        defer { try? descriptor.close() }
        let alignment: Int64 = 4096
        var extents: [ImageExtent] = []
        var position: Int64 = 0
        // SEEK_DATA = 3, SEEK_HOLE = 4 on Linux; ENXIO means no data after the position.
        while position < size {
            let data: Int64
            do {
                data = try descriptor.seek(offset: position, from: FileDescriptor.SeekOrigin(rawValue: 3))
            } catch Errno.noSuchAddressOrDevice {
                break
            } catch {
                // A file system without SEEK_DATA: everything is data.
                return [ImageExtent(offset: 0, length: size)]
            }
            let hole = min(
                (try? descriptor.seek(offset: data, from: FileDescriptor.SeekOrigin(rawValue: 4))) ?? size, size)
            let start = data / alignment * alignment
            let end = min((hole + alignment - 1) / alignment * alignment, size)
            if let last = extents.last, start <= last.end {
                extents[extents.count - 1].length = max(last.end, end) - last.offset
            } else {
                extents.append(ImageExtent(offset: start, length: end - start))
            }
            position = max(hole, data + 1)
        }
        return extents
    }
}

extension PreparedImage {
    /// Reads every mapped range once and checks it against the block map's checksums, before
    /// anything is sent: for a transport that cannot check range by range while sending (fastboot
    /// sends sparse pieces that cut across ranges). Nothing to do without checksums.
    /// - Throws: `ImageSourceError` `bmap-checksum` naming the map's line, or a read error.
    public func checkMapChecksums(reader: ImageReader) throws(ImageSourceError) {
        guard let type = map?.checksumType, extents.contains(where: { $0.checksum != nil }) else { return }
        var verifier = ExtentVerifier(extents: extents, type: type, path: path)
        for extent in extents {
            var offset = extent.offset
            while offset < extent.end {
                let bytes = try reader.read(offset: offset, length: Int(min(1 << 20, extent.end - offset)))
                guard !bytes.isEmpty else {
                    throw ImageSourceError(.unreadable, path: path, message: "ends before offset \(offset)")
                }
                try verifier.consume(bytes, at: offset)
                offset += Int64(bytes.count)
            }
        }
    }
}
