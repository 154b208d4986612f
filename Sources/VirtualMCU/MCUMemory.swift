import DfuSe
import Glibc
import SystemPackage

/// The MCU's non-volatile memories as files in the simulation folder, so that what one command
/// writes a later command reads back: `mcu-<family>-flash.bin` (erased = 0xFF),
/// `mcu-<family>-option-bytes.bin`, `mcu-<family>-otp.bin`. Each region is held in memory and
/// written through on every change.
final class MCUMemory {
    struct Region {
        var map: DfuSeMemoryMap
        var bytes: [UInt8]
        var file: String?
    }

    private(set) var regions: [Region] = []
    let directory: String
    /// Writes to the simulation folder that failed after start-up (path and OS reason).
    private(set) var hostFailures: [String] = []

    /// - Throws: `MCUMemoryError` when the folder or a memory file cannot be created.
    init(directory: String, family: MCUFamily, defaultOptionBytes: [UInt8]) throws(MCUMemoryError) {
        self.directory = directory
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw MCUMemoryError(path: directory, reason: String(cString: strerror(errno)))
        }
        for string in family.alternates {
            guard let map = DfuSeMemoryMap(string) else { continue }
            let size = Int(map.totalSize)
            let kind: String
            var initial = [UInt8](repeating: 0xFF, count: size)
            if map.name.hasPrefix("Internal Flash") {
                kind = "flash"
            } else if map.name.hasPrefix("Option Bytes") {
                kind = "option-bytes"
                for (i, byte) in defaultOptionBytes.prefix(size).enumerated() { initial[i] = byte }
            } else if map.name.hasPrefix("OTP") {
                kind = "otp"
            } else {
                regions.append(Region(map: map, bytes: [UInt8](repeating: 0, count: size), file: nil))
                continue
            }
            let file = "\(directory)/mcu-\(family.id)-\(kind).bin"
            let stored = Self.readFile(file, size: size)
            regions.append(Region(map: map, bytes: stored ?? initial, file: file))
            if stored == nil {
                persist(regions.count - 1, range: 0..<size)
                if let failure = hostFailures.first { throw MCUMemoryError(path: file, reason: failure) }
            }
        }
    }

    /// The region covering `[address, address + length)`, with the offset of `address` in it.
    func locate(_ address: UInt64, length: Int) -> (index: Int, offset: Int)? {
        for (index, region) in regions.enumerated() {
            let start = UInt64(region.map.start)
            if address >= start, address + UInt64(length) <= region.map.end {
                return (index, Int(address - start))
            }
        }
        return nil
    }

    func read(_ index: Int, _ range: Range<Int>) -> [UInt8] { Array(regions[index].bytes[range]) }

    /// NOR flash programming: bits only go from 1 to 0 until the sector is erased.
    func program(_ index: Int, offset: Int, _ data: [UInt8]) {
        for (i, byte) in data.enumerated() { regions[index].bytes[offset + i] &= byte }
        persist(index, range: offset..<offset + data.count)
    }

    /// Overwrites (option bytes, OTP-less registers).
    func replace(_ index: Int, offset: Int, _ data: [UInt8]) {
        for (i, byte) in data.enumerated() { regions[index].bytes[offset + i] = byte }
        persist(index, range: offset..<offset + data.count)
    }

    func erase(_ index: Int, _ range: Range<Int>) {
        for i in range { regions[index].bytes[i] = 0xFF }
        persist(index, range: range)
    }

    func index(named prefix: String) -> Int? { regions.firstIndex { $0.map.name.hasPrefix(prefix) } }

    private func persist(_ index: Int, range: Range<Int>) {
        guard let file = regions[index].file, !range.isEmpty else { return }
        do {
            let fd = try FileDescriptor.open(
                FilePath(file), .readWrite, options: [.create], permissions: [.ownerReadWrite, .groupRead, .otherRead])
            defer { try? fd.close() }
            _ = try regions[index].bytes[range].withUnsafeBytes {
                try fd.writeAll(toAbsoluteOffset: Int64(range.lowerBound), $0)
            }
        } catch {
            // The simulation folder is the user's: a host failure, reported by the CLI, not a device error.
            hostFailures.append("\(file): \(error)")
        }
    }

    private static func readFile(_ path: String, size: Int) -> [UInt8]? {
        guard let fd = try? FileDescriptor.open(FilePath(path), .readOnly) else { return nil }
        defer { try? fd.close() }
        var bytes = [UInt8](repeating: 0, count: size)
        let got = try? bytes.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 0, into: $0) }
        return got == size ? bytes : nil
    }
}

/// The simulation folder cannot hold the MCU's memory.
package struct MCUMemoryError: Error, Sendable, Hashable, CustomStringConvertible {
    package var path: String
    package var reason: String
    package var description: String { "\(path): cannot keep the virtual MCU's memory there: \(reason)" }
}
