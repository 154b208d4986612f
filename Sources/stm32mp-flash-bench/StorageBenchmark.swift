import FoundationEssentials
import Glibc
import VirtualBoard

/// Issue 9 item 15: a mostly empty rootfs written into the virtual board's storage. The baseline
/// writes every byte (what the storage did before: the image fills up with zeros); the board's
/// `BoardStorage.write` skips zero blocks over holes. Prints on-disk size and CPU for each.
enum StorageBenchmark {
    static func run(gib: Int, report: inout BenchmarkReport) throws {
        let directory = FileManager.default.temporaryDirectory.path + "/stm32mp-bench-storage-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let size = UInt64(gib) << 30
        report.lines.append(
            "storage: a \(gib) GiB rootfs of zeros with 4 KiB of data every 64 MiB, written in 1 MiB chunks")

        // Baseline: every byte written, as before.
        let plain = directory + "/baseline.img"
        let fd = open(plain, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BenchError("cannot create \(plain)") }
        _ = ftruncate(fd, off_t(size))
        let before = ProcessUsage.current()
        try forEachChunk(size: size) { offset, chunk in
            let written = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard written == chunk.count else { throw BenchError("short write") }
        }
        _ = fsync(fd)
        let baseline = ProcessUsage.current()
        close(fd)
        report.figure("baseline (all bytes written)", describe(plain, baseline, before))
        unlink(plain)

        // The board's storage.
        let storage = BoardStorage(directory: directory, devices: [.sdCard("mmc0", size: size)])
        try storage.prepareAll()
        let start = ProcessUsage.current()
        try forEachChunk(size: size) { offset, chunk in try storage.write(device: "mmc0", offset: offset, bytes: chunk)
        }
        storage.closeAll()
        let end = ProcessUsage.current()
        report.figure("virtual board storage (holes kept)", describe(storage.path(device: "mmc0"), end, start))
    }

    static func forEachChunk(size: UInt64, _ body: (UInt64, [UInt8]) throws -> Void) throws {
        let chunkSize = 1 << 20
        var zeros = [UInt8](repeating: 0, count: chunkSize)
        var offset: UInt64 = 0
        while offset < size {
            let withData = offset % (64 << 20) == 0
            if withData { for index in 0..<4096 { zeros[index] = UInt8(truncatingIfNeeded: index | 1) } }
            try body(offset, zeros)
            if withData { for index in 0..<4096 { zeros[index] = 0 } }
            offset += UInt64(chunkSize)
        }
    }

    static func describe(_ path: String, _ end: ProcessUsage, _ start: ProcessUsage) -> String {
        var info = stat()
        _ = stat(path, &info)
        let onDisk = Double(info.st_blocks) * 512 / Double(1 << 20)
        let system = end.systemSeconds - start.systemSeconds
        let user = end.userSeconds - start.userSeconds
        return "on disk \(format(onDisk)) MiB, system CPU \(format(system)) s, user CPU \(format(user)) s"
    }

    static func format(_ value: Double) -> String { String((value * 100).rounded() / 100) }
}
