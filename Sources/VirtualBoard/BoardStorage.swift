import FileAccess
import Glibc
import SystemPackage

/// The board's storage devices as sparse image files in one folder: `<ip>.img` for the user area
/// (`mmc0.img`, `nor0.img`), `<ip>-boot1.img` / `<ip>-boot2.img` for eMMC boot partitions.
public final class BoardStorage {
    public let directory: String
    public let devices: [StorageDeviceConfiguration]
    private var handles: [String: FileDescriptor] = [:]

    public init(directory: String, devices: [StorageDeviceConfiguration]) {
        self.directory = directory
        self.devices = devices
    }

    deinit { closeAll() }

    public func device(named name: String) -> StorageDeviceConfiguration? { devices.first { $0.name == name } }

    /// The image file of `device` (hardware partition 1/2 = eMMC boot1/boot2).
    public func path(device: String, hardwarePartition: Int? = nil) -> String {
        if let hardwarePartition { return "\(directory)/\(device)-boot\(hardwarePartition).img" }
        return "\(directory)/\(device).img"
    }

    /// Capacity of `device` or of its boot partition.
    public func size(device: String, hardwarePartition: Int? = nil) -> UInt64? {
        guard let config = self.device(named: device) else { return nil }
        return hardwarePartition == nil ? config.size : config.bootPartitionSize
    }

    /// Opens (creating a sparse file of the device's size when missing).
    private func handle(_ device: String, _ hardwarePartition: Int?) throws -> FileDescriptor {
        let file = path(device: device, hardwarePartition: hardwarePartition)
        if let fd = handles[file] { return fd }
        guard let size = size(device: device, hardwarePartition: hardwarePartition) else {
            throw Errno.noSuchFileOrDirectory
        }
        _ = mkdir(directory, 0o755)
        let fd = try FileDescriptor.open(
            FilePath(file), .readWrite, options: [.create], permissions: [.ownerReadWrite, .groupRead, .otherRead])
        let current = try fd.seek(offset: 0, from: .end)
        if UInt64(current) != size { try fd.resize(to: Int64(size)) }
        handles[file] = fd
        return fd
    }

    /// Creates the image file (sparse, full size) if it does not exist yet; returns its path.
    @discardableResult
    public func prepareImage(device: String, hardwarePartition: Int? = nil) throws -> String {
        _ = try handle(device, hardwarePartition)
        return path(device: device, hardwarePartition: hardwarePartition)
    }

    /// Writes `bytes` at `offset`.
    /// - Throws: `Errno` when the file cannot be written or the range is outside the device.
    public func write(device: String, hardwarePartition: Int? = nil, offset: UInt64, bytes: [UInt8]) throws {
        guard let size = size(device: device, hardwarePartition: hardwarePartition),
            offset + UInt64(bytes.count) <= size
        else {
            throw Errno.noSpace
        }
        let fd = try handle(device, hardwarePartition)
        _ = try bytes.withUnsafeBytes { try fd.writeAll(toAbsoluteOffset: Int64(offset), $0) }
    }

    /// Reads up to `length` bytes at `offset` (fewer at the end of the device).
    public func read(device: String, hardwarePartition: Int? = nil, offset: UInt64, length: Int) throws -> [UInt8] {
        guard let size = size(device: device, hardwarePartition: hardwarePartition), offset <= size else { return [] }
        let count = Int(min(UInt64(length), size - offset))
        return try handle(device, hardwarePartition).read(count: count, atAbsoluteOffset: Int64(offset))
    }

    /// Erases a range (reads as zeros afterwards). Only the parts holding data are rewritten, so
    /// the image stays sparse.
    public func erase(device: String, hardwarePartition: Int? = nil, offset: UInt64, length: UInt64) throws {
        let fd = try handle(device, hardwarePartition)
        let end = Int64(offset + length)
        var position = Int64(offset)
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        while position < end {
            // SEEK_DATA = 3, SEEK_HOLE = 4 on Linux; ENXIO means no data after `position`.
            guard let dataStart = try? fd.seek(offset: position, from: FileDescriptor.SeekOrigin(rawValue: 3)),
                dataStart < end
            else { return }
            let holeStart = min(
                (try? fd.seek(offset: dataStart, from: FileDescriptor.SeekOrigin(rawValue: 4))) ?? end, end)
            var cursor = dataStart
            while cursor < holeStart {
                let count = Int(min(Int64(zeros.count), holeStart - cursor))
                _ = try zeros.withUnsafeBytes {
                    try fd.writeAll(toAbsoluteOffset: cursor, UnsafeRawBufferPointer(rebasing: $0[0..<count]))
                }
                cursor += Int64(count)
            }
            position = holeStart
        }
    }

    /// Closes every image file (they stay on disk).
    public func closeAll() {
        for fd in handles.values { try? fd.close() }
        handles = [:]
    }
}
