import FileAccess
public import SystemPackage

/// What a boot file turned out to be, and whether it is intact.
public struct BootImageReport: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case stm32(STM32ImageHeader)
        case fip(FIPHeader)
        /// Neither an STM32 header nor a valid FIP ToC header.
        case unknown
    }

    public var path: String
    public var kind: Kind
    public var fileSize: Int64
    /// STM32 images only: whether the payload's byte sum equals the header's checksum. False when
    /// the payload is truncated. Nil for other kinds, which carry no checksum.
    public var checksumMatches: Bool?
    /// STM32 images only: the byte sum of the payload bytes present.
    public var computedChecksum: UInt32?
    /// STM32 images only: payload bytes the header announces but the file lacks.
    public var missingPayloadBytes: Int64
    /// STM32 images only: see `STM32ImageHeader.isSigned`. Nil for FIPs, whose signatures (TBBR
    /// certificates) are inside the package, and for unknown files.
    public var isSigned: Bool?
    /// The families the header fits (see `STM32ImageHeader.candidateFamilies`); empty when the
    /// file says nothing about the chip.
    public var chipHint: [ChipFamily]
}

/// Why a file could not be inspected.
public enum BootImageInspectionError: Error, Sendable, Hashable, CustomStringConvertible {
    case cannotOpen(path: String, Errno)
    case cannotRead(path: String, Errno)
    /// The file starts with the STM32 magic, but its header is not one TF-A or U-Boot accepts.
    case invalidSTM32Header(path: String, STM32HeaderError)

    public var description: String {
        switch self {
        case .cannotOpen(let path, let errno): "Cannot open \(path): \(errno)."
        case .cannotRead(let path, let errno): "Cannot read \(path): \(errno)."
        case .invalidSTM32Header(let path, let error): "\(path): \(error)"
        }
    }
}

/// Identifies boot binaries (STM32 images, FIPs) and checks their integrity by streaming the
/// file in 64 KiB reads, so multi-hundred-megabyte files cost no memory.
public enum BootImageInspector {
    static let chunkSize = 64 * 1024
    /// v2 extension headers are a few hundred bytes; refuse to buffer more than this for a header.
    static let largestHeader = 1024 * 1024

    public static func inspect(path: String) throws(BootImageInspectionError) -> BootImageReport {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(FilePath(path), .readOnly)
        } catch {
            throw .cannotOpen(path: path, error as? Errno ?? .ioError)
        }
        defer { try? descriptor.close() }
        let reader = ChunkReader(descriptor: descriptor, path: path)
        let fileSize = try reader.size()

        var prefix = try reader.read(at: 0, count: chunkSize)
        var report = BootImageReport(
            path: path, kind: .unknown, fileSize: fileSize, checksumMatches: nil, computedChecksum: nil,
            missingPayloadBytes: 0, isSigned: nil, chipHint: [])

        if prefix.starts(with: STM32ImageHeader.magic) {
            let header: STM32ImageHeader
            do {
                header = try decodeGrowingPrefix(&prefix, reader: reader, fileSize: fileSize)
            } catch {
                throw .invalidSTM32Header(path: path, error)
            }
            let payloadEnd = Int64(header.headerLength) + Int64(header.imageLength)
            let presentEnd = min(payloadEnd, fileSize)
            let sum = try reader.checksum(from: Int64(header.headerLength), to: presentEnd)
            report.kind = .stm32(header)
            report.computedChecksum = sum
            report.missingPayloadBytes = payloadEnd - presentEnd
            report.checksumMatches = presentEnd == payloadEnd && sum == header.checksum
            report.isSigned = header.isSigned
            report.chipHint = header.candidateFamilies
        } else if let fip = FIPHeader(decoding: prefix), fip.isValid {
            report.kind = .fip(fip)
        }
        return report
    }

    /// Decodes the STM32 header, reading further when v2 extension headers go past the first chunk.
    private static func decodeGrowingPrefix(
        _ prefix: inout [UInt8], reader: ChunkReader, fileSize: Int64
    ) throws(STM32HeaderError) -> STM32ImageHeader {
        while true {
            do {
                return try STM32ImageHeader(decoding: prefix)
            } catch .tooShort(let available, let needed)
                where needed <= largestHeader && Int64(needed) <= fileSize && needed > available
            {
                guard let more = try? reader.read(at: Int64(available), count: needed - available),
                    more.count == needed - available
                else { throw .tooShort(available: available, needed: needed) }
                prefix += more
            }
        }
    }
}

/// Positioned reads on one open file, mapping errno to the inspection error.
private struct ChunkReader {
    let descriptor: FileDescriptor
    let path: String

    func size() throws(BootImageInspectionError) -> Int64 {
        do {
            return try descriptor.seek(offset: 0, from: .end)
        } catch {
            throw .cannotRead(path: path, error as? Errno ?? .ioError)
        }
    }

    /// Up to `count` bytes from `offset`; fewer only at end of file.
    func read(at offset: Int64, count: Int) throws(BootImageInspectionError) -> [UInt8] {
        do {
            return try descriptor.read(count: count, atAbsoluteOffset: offset)
        } catch {
            throw .cannotRead(path: path, error as? Errno ?? .ioError)
        }
    }

    /// Byte sum of [start, end), read in chunks.
    func checksum(from start: Int64, to end: Int64) throws(BootImageInspectionError) -> UInt32 {
        var sum: UInt32 = 0
        var offset = start
        while offset < end {
            let chunk = try read(at: offset, count: Int(min(Int64(BootImageInspector.chunkSize), end - offset)))
            if chunk.isEmpty { break }
            sum = STM32ImageHeader.checksum(of: chunk, startingAt: sum)
            offset += Int64(chunk.count)
        }
        return sum
    }
}
