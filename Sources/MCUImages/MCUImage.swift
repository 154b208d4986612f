import DfuSe
import FileAccess
import SystemPackage

/// Bytes to place at an address of the MCU (one contiguous run of a file).
package struct MCUSegment: Sendable, Hashable {
    package var address: UInt64
    package var bytes: [UInt8]
    /// The alternate a DfuSe file names for this run (nil: whichever alternate covers it).
    package var alternate: UInt8?

    package init(address: UInt64, bytes: [UInt8], alternate: UInt8? = nil) {
        self.address = address
        self.bytes = bytes
        self.alternate = alternate
    }

    package var end: UInt64 { address + UInt64(bytes.count) }
}

/// A firmware file read into address-ranged segments.
package struct MCUImage: Sendable, Hashable {
    package enum Format: String, Sendable, Hashable, Codable {
        case binary = "bin", intelHex = "hex", dfuse = "dfu", elf
    }

    package var format: Format
    package var segments: [MCUSegment]

    package init(format: Format, segments: [MCUSegment]) {
        self.format = format
        self.segments = segments
    }

    package var byteCount: Int { segments.reduce(0) { $0 + $1.bytes.count } }

    /// Reads `path`: the format from the content (ELF magic, `DfuSe` prefix, `:` records), else raw
    /// binary, which needs `address`.
    package static func load(path: String, address: UInt64?) throws(MCUImageError) -> MCUImage {
        let bytes: [UInt8]
        do {
            bytes = try FileReading.readAll(path: path)
        } catch {
            throw MCUImageError(path: path, message: "cannot read the file: \(error)")
        }
        return try parse(bytes, path: path, address: address)
    }

    package static func parse(_ bytes: [UInt8], path: String, address: UInt64?) throws(MCUImageError) -> MCUImage {
        var image: MCUImage
        if bytes.starts(with: [0x7F, 0x45, 0x4C, 0x46]) {
            image = try ELFReader.parse(bytes, path: path)
        } else if bytes.starts(with: Array("DfuSe".utf8)) {
            image = try DfuSeFile.parse(bytes, path: path)
        } else if bytes.first == UInt8(ascii: ":") {
            image = try IntelHex.parse(bytes, path: path)
        } else {
            guard let address else {
                throw MCUImageError(
                    path: path,
                    message: "a raw binary has no address: give --address (e.g. --address 0x08000000)")
            }
            image = MCUImage(format: .binary, segments: [MCUSegment(address: address, bytes: bytes)])
        }
        if let address, image.format != .binary {
            // An explicit address moves a file whose lowest address differs (like dfu-util -s for .bin).
            guard let low = image.segments.map(\.address).min(), low != address else { return image }
            throw MCUImageError(
                path: path,
                message:
                    "the \(image.format.rawValue) file places its data at \(DfuSe.address(low)); --address \(DfuSe.address(address)) applies to raw binaries only"
            )
        }
        guard image.byteCount > 0 else { throw MCUImageError(path: path, message: "the file holds no data to write") }
        image.segments = merged(image.segments)
        return image
    }

    /// Segments sorted by address, adjacent ones (same alternate) joined.
    static func merged(_ segments: [MCUSegment]) -> [MCUSegment] {
        var result: [MCUSegment] = []
        for segment in segments.filter({ !$0.bytes.isEmpty }).sorted(by: { $0.address < $1.address }) {
            if let last = result.last, last.end == segment.address, last.alternate == segment.alternate {
                result[result.count - 1].bytes += segment.bytes
            } else {
                result.append(segment)
            }
        }
        return result
    }
}

/// A firmware file that cannot be used, with the file and where in it.
package struct MCUImageError: Error, Sendable, Hashable, CustomStringConvertible {
    package var path: String
    /// 1-based line (Intel HEX) when known.
    package var line: Int?
    /// The field or structure (`checksum`, `record type`, `program header 2`, `suffix CRC`).
    package var field: String?
    package var message: String

    package init(path: String, line: Int? = nil, field: String? = nil, message: String) {
        self.path = path
        self.line = line
        self.field = field
        self.message = message
    }

    package var description: String {
        var text = path
        if let line { text += ":\(line)" }
        text += ": error: "
        if let field { text += "\(field): " }
        return text + message
    }
}

/// Whole-file reads through the project's positioned-read helper.
enum FileReading {
    static func readAll(path: String) throws -> [UInt8] {
        let descriptor = try FileDescriptor.open(FilePath(path), .readOnly)
        defer { try? descriptor.close() }
        let size = try descriptor.seek(offset: 0, from: .end)
        guard size <= 256 << 20 else {
            throw Errno.fileTooLarge
        }
        return try descriptor.read(count: Int(size), atAbsoluteOffset: 0)
    }
}
