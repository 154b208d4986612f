import FileAccess
import GPT
import Glibc
import SystemPackage

/// Why the storage folder or an image cannot be used, said before anything is written.
public struct StorageError: Error, Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "virtual board storage '\(path)': \(reason)" }
}

/// The board's storage devices as sparse image files in one folder: `<ip>.img` for the user area
/// (`mmc0.img`, `nor0.img`), `<ip>-boot1.img` / `<ip>-boot2.img` for eMMC boot partitions.
///
/// Safety (issue 9 item 15): images are opened without following symbolic links (a link would
/// make the board overwrite whatever it points to); an existing image of another size is refused
/// unless `replacesMismatchedImages`; the folder is locked (`flock` on `.lock`) while images are
/// open, so two runs cannot write one board; blocks of zeros are not written into holes and punch
/// holes over earlier data, so a sparse image stays sparse and byte-exact.
public final class BoardStorage {
    public let directory: String
    public let devices: [StorageDeviceConfiguration]
    /// Recreate an image whose size differs from the device's instead of refusing it.
    public var replacesMismatchedImages = false
    private var handles: [String: FileDescriptor] = [:]
    private var lock: FileDescriptor?
    /// The first failure of this computer's file system under the images (no space left, an I/O
    /// error …): the virtual firmware reports it as a write error, as a board would, but the run's
    /// diagnosis must name the host path and the OS reason instead (issue 9 item 10).
    public private(set) var hostFailure: StorageError?

    /// Name of the lock file inside the storage folder.
    public static let lockFileName = ".lock"

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

    /// Opens (creating a sparse file of the device's size when missing), never through a link.
    private func handle(_ device: String, _ hardwarePartition: Int?) throws -> FileDescriptor {
        let file = path(device: device, hardwarePartition: hardwarePartition)
        if let fd = handles[file] { return fd }
        guard let size = size(device: device, hardwarePartition: hardwarePartition) else {
            throw Errno.noSuchFileOrDirectory
        }
        try prepareFolder()
        try lockFolder()
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(
                FilePath(file), .readWrite, options: [.create, .noFollow, .closeOnExec],
                permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch Errno.tooManySymbolicLinkLevels {
            throw StorageError(
                path: file,
                reason:
                    "is a symbolic link; the virtual board never writes through links (it would overwrite the link's target). Remove the link or choose another --sim-dir"
            )
        } catch let error as Errno {
            throw StorageError(path: file, reason: "cannot be opened: \(error)")
        }
        var info = stat()
        guard fstat(fd.rawValue, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            try? fd.close()
            throw StorageError(path: file, reason: "is not a regular file")
        }
        let current = UInt64(info.st_size)
        if current != size {
            if current != 0, !replacesMismatchedImages {
                try? fd.close()
                throw StorageError(
                    path: file,
                    reason:
                        "holds \(current) bytes but \(device)\(hardwarePartition.map { " boot\($0)" } ?? "") is \(size) bytes; it is another board's image. Remove it, choose another --sim-dir, or pass --sim-replace-images to recreate it"
                )
            }
            do {
                try fd.resize(to: 0)
                try fd.resize(to: Int64(size))
            } catch {
                try? fd.close()
                throw StorageError(path: file, reason: "cannot be sized to \(size) bytes: \(error)")
            }
        }
        handles[file] = fd
        return fd
    }

    /// The storage folder exists and this process may create files in it; otherwise a
    /// `StorageError` names the folder and the OS's reason (is a file, parent missing, read-only,
    /// permission denied).
    private func prepareFolder() throws {
        guard lock == nil else { return }
        var info = stat()
        if stat(directory, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFDIR else {
                throw StorageError(path: directory, reason: "is a file, not a folder (\(Errno.notDirectory))")
            }
        } else if mkdir(directory, 0o755) != 0 {
            let error = Errno(rawValue: errno)
            let parent = directory.split(separator: "/", omittingEmptySubsequences: false).dropLast()
                .joined(separator: "/")
            var parentInfo = stat()
            // ENOENT also comes from file systems that refuse new entries (/proc): name the parent
            // only when it really is missing.
            if error == .noSuchFileOrDirectory, stat(parent.isEmpty ? "/" : parent, &parentInfo) != 0 {
                throw StorageError(
                    path: directory,
                    reason:
                        "cannot be created: its parent folder '\(parent.isEmpty ? "/" : parent)' does not exist (\(error))"
                )
            }
            throw StorageError(path: directory, reason: "cannot be created: \(error)")
        }
        // Root passes mode bits but not a read-only mount or an immutable folder.
        if access(directory, W_OK) != 0 {
            throw StorageError(path: directory, reason: "is not writable: \(Errno(rawValue: errno))")
        }
    }

    /// Runs a file-system operation on `file`; an `Errno` is the host's failure: kept (the first
    /// one) and rethrown.
    private func hostIO<T>(_ file: String, _ what: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as Errno {
            if hostFailure == nil { hostFailure = StorageError(path: file, reason: "cannot be \(what): \(error)") }
            throw error
        }
    }

    /// Writes a GPT to `device`'s image with the GPT module's own writer; a file-system error is
    /// the host's failure (kept, the first one, as `write` keeps it) and rethrown.
    func writeGPT(_ disk: GPTDisk, device: String) throws {
        let file = try prepareImage(device: device)
        do {
            try disk.write(to: file)
        } catch {
            if case .io(_, let operation, let errno) = error, hostFailure == nil {
                hostFailure = StorageError(
                    path: file, reason: "cannot be \(operation == "write" ? "written" : operation): \(errno)")
            }
            throw error
        }
    }

    /// Takes the folder's lock for this run (once): a second run on the same folder is told who
    /// holds it instead of interleaving its writes with ours.
    private func lockFolder() throws {
        guard lock == nil else { return }
        let file = directory + "/" + Self.lockFileName
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(
                FilePath(file), .readWrite, options: [.create, .noFollow, .closeOnExec],
                permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            throw StorageError(path: file, reason: "cannot be opened to lock the folder: \(error)")
        }
        guard flock(fd.rawValue, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? fd.read(count: 32, atAbsoluteOffset: 0)).map { String(decoding: $0, as: UTF8.self) }
            try? fd.close()
            let pid = holder?.split(separator: "\n").first.map { " (process \($0))" } ?? ""
            throw StorageError(
                path: directory,
                reason:
                    "another run is using this virtual board\(pid); wait for it to finish or choose another --sim-dir")
        }
        let text = Array("\(getpid())\n".utf8)
        try? fd.resize(to: 0)
        _ = try? text.withUnsafeBytes { try fd.writeAll(toAbsoluteOffset: 0, $0) }
        lock = fd
    }

    /// Opens every image now (lock, links, sizes), so a problem is reported before the first
    /// byte is flashed rather than as a write error in the middle of a run.
    public func prepareAll() throws {
        for device in devices {
            try prepareImage(device: device.name)
            if device.bootPartitionSize != nil {
                try prepareImage(device: device.name, hardwarePartition: 1)
                try prepareImage(device: device.name, hardwarePartition: 2)
            }
        }
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
        let file = path(device: device, hardwarePartition: hardwarePartition)
        try hostIO(file, "written") { try write(fd, offset: offset, bytes: bytes) }
    }

    private func write(_ fd: FileDescriptor, offset: UInt64, bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buffer in
            var start = 0
            for run in Self.zeroRuns(buffer, fileOffset: offset) {
                if run.lowerBound > start {
                    try fd.writeAll(
                        toAbsoluteOffset: Int64(offset) + Int64(start),
                        UnsafeRawBufferPointer(rebasing: buffer[start..<run.lowerBound]))
                }
                try writeZeros(
                    fd, at: Int64(offset) + Int64(run.lowerBound), count: run.count, buffer: buffer, run: run)
                start = run.upperBound
            }
            if start < buffer.count {
                try fd.writeAll(
                    toAbsoluteOffset: Int64(offset) + Int64(start), UnsafeRawBufferPointer(rebasing: buffer[start...]))
            }
        }
    }

    /// Block size for hole detection: the file system's usual block.
    static let block = 4096

    /// Runs of whole, block-aligned (in the file) all-zero blocks in `buffer`, in order.
    static func zeroRuns(_ buffer: UnsafeRawBufferPointer, fileOffset: UInt64) -> [Range<Int>] {
        var runs: [Range<Int>] = []
        let misalignment = Int(fileOffset % UInt64(block))
        var position = misalignment == 0 ? 0 : block - misalignment
        while position + block <= buffer.count {
            if isZero(buffer, from: position) {
                if let last = runs.last, last.upperBound == position {
                    runs[runs.count - 1] = last.lowerBound..<position + block
                } else {
                    runs.append(position..<position + block)
                }
            }
            position += block
        }
        return runs
    }

    /// True when the `block` bytes at `start` are all zero (read 8 bytes at a time).
    static func isZero(_ buffer: UnsafeRawBufferPointer, from start: Int) -> Bool {
        var index = start
        while index < start + block {
            if buffer.loadUnaligned(fromByteOffset: index, as: UInt64.self) != 0 { return false }
            index += 8
        }
        return true
    }

    /// Zeros at `offset`: nothing when the range is a hole already (it reads as zeros); over
    /// earlier data a hole is punched (`fallocate` PUNCH_HOLE | KEEP_SIZE), so the image stays
    /// byte-exact and sparse. Zeros are written only where the file system has no holes.
    private func writeZeros(
        _ fd: FileDescriptor, at offset: Int64, count: Int, buffer: UnsafeRawBufferPointer, run: Range<Int>
    ) throws {
        // SEEK_DATA = 3: the next data at or after `offset`; ENXIO (-1) when there is none.
        let data = Int64(lseek(fd.rawValue, Int(offset), 3))
        if data < 0 || data >= offset + Int64(count) { return }
        do {
            try fd.punchHole(at: offset, length: Int64(count))
        } catch {
            try fd.writeAll(toAbsoluteOffset: offset, UnsafeRawBufferPointer(rebasing: buffer[run]))
        }
    }

    /// Reads up to `length` bytes at `offset` (fewer at the end of the device).
    public func read(device: String, hardwarePartition: Int? = nil, offset: UInt64, length: Int) throws -> [UInt8] {
        guard let size = size(device: device, hardwarePartition: hardwarePartition), offset <= size else { return [] }
        let count = Int(min(UInt64(length), size - offset))
        let fd = try handle(device, hardwarePartition)
        return try hostIO(path(device: device, hardwarePartition: hardwarePartition), "read") {
            try fd.read(count: count, atAbsoluteOffset: Int64(offset))
        }
    }

    /// Erases a range (reads as zeros afterwards). Only the parts holding data are rewritten, so
    /// the image stays sparse.
    public func erase(device: String, hardwarePartition: Int? = nil, offset: UInt64, length: UInt64) throws {
        let fd = try handle(device, hardwarePartition)
        try hostIO(path(device: device, hardwarePartition: hardwarePartition), "erased") {
            try erase(fd, offset: offset, length: length)
        }
    }

    private func erase(_ fd: FileDescriptor, offset: UInt64, length: UInt64) throws {
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

    /// Closes every image file (they stay on disk) and releases the folder's lock.
    public func closeAll() {
        for fd in handles.values { try? fd.close() }
        handles = [:]
        try? lock?.close()
        lock = nil
    }
}
