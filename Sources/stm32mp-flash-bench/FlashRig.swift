import FlashEngine
import FlashLayout
import FoundationEssentials
import Glibc
import SystemPackage
import Timekeeping
import VirtualBoard

/// A folder from `mkdtemp`, deleted with everything in it by `remove()`.
final class ScratchDirectory {
    let path: String
    private var removed = false

    /// `$TMPDIR` or /tmp: disk-backed, for the board's storage images (gigabytes of real data).
    static var diskBase: String { getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp" }

    /// /dev/shm (tmpfs) when writable, for the layout and its sparse images: reading a hole there
    /// copies the shared zero page, while the first read of a hole on ext4 allocates and zeroes a
    /// page-cache page (about 3 s of system CPU per GiB on the bench machine) — a cost of sparse
    /// files, not of the host, which a real image in the page cache does not have.
    static var imageBase: String { access("/dev/shm", W_OK) == 0 ? "/dev/shm" : diskBase }

    init(prefix: String, base: String = diskBase) throws {
        var template = Array("\(base)/\(prefix).XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw Errno(rawValue: errno)
        }
        path = String(cString: made)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func remove() {
        guard !removed else { return }
        removed = true
        try? FileManager.default.removeItem(atPath: path)
    }

    deinit { remove() }
}

/// The benchmark's own layout: FSBL and FIP from `SampleImages`, one big rootfs made sparse with
/// `ftruncate` (so reading it costs no disk I/O), planned for an MP15 SD card.
struct BenchLayout {
    static let storageSize: UInt64 = 4 << 30
    /// The first usable byte after the primary GPT (34 sectors), where U-Boot's SD layouts start.
    static let rootfsOffset = "0x00004400"

    let path: String
    let plan: PartitionPlan
    let rootfsBytes: Int64
    var rootfsPath: String { plan.files[0x10]?.path ?? "" }

    /// - Parameters:
    ///   - directory: best on tmpfs (`ScratchDirectory.imageBase`), see there.
    ///   - filled: real bytes (a pattern) instead of a sparse file, so that a blank medium does
    ///     not already hold them (readback and resume benchmarks).
    init(in directory: ScratchDirectory, rootfsBytes: Int64, filled: Bool = false) throws {
        try Self.write(SampleImages.fsbl(), to: directory.file("fsbl.stm32"))
        try Self.write(SampleImages.fip(), to: directory.file("fip.bin"))
        let rootfs = try FileDescriptor.open(
            FilePath(directory.file("rootfs.ext4")), .writeOnly, options: [.create, .truncate],
            permissions: [.ownerReadWrite])
        try rootfs.closeAfter {
            if filled {
                var written: Int64 = 0
                while written < rootfsBytes {
                    let chunk = SampleImages.pattern(
                        Int(min(1 << 20, rootfsBytes - written)), seed: UInt8(written >> 20 & 0xFF))
                    _ = try chunk.withUnsafeBytes { try rootfs.writeAll(toAbsoluteOffset: written, $0) }
                    written += Int64(chunk.count)
                }
            } else {
                try rootfs.resize(to: rootfsBytes)
            }
        }
        let text = """
            #Opt\tId\tName\tType\tIP\tOffset\tBinary
            -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tfsbl.stm32
            -\t0x03\tfip-boot\tFIP\tnone\t0x0\tfip.bin
            P\t0x10\trootfs\tFileSystem\tmmc0\t\(Self.rootfsOffset)\trootfs.ext4

            """
        path = directory.file("bench.tsv")
        try Self.write(Array(text.utf8), to: path)
        let options = PlanOptions(deviceSizes: ["mmc0": Self.storageSize], layoutDirectory: directory.path)
        let check = LayoutChecker.check(path: path, options: LayoutCheckOptions(plan: options))
        guard !check.hasErrors else { throw BenchError("the bench layout does not check: \(check.diagnostics)") }
        plan = try PartitionPlanner.plan(check.lines, options: options).get()
        self.rootfsBytes = rootfsBytes
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        let file = try FileDescriptor.open(
            FilePath(path), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite])
        try file.closeAfter { _ = try bytes.withUnsafeBytes { try file.writeAll($0) } }
    }
}

/// A benchmark's scratch folders: the layout and its images (tmpfs when possible) and the
/// board's storage images (disk); `remove()` deletes both.
struct BenchWorkspace {
    let storage: ScratchDirectory
    let images: ScratchDirectory
    let layout: BenchLayout

    init(name: String, rootfsBytes: Int64, filled: Bool = false) throws {
        storage = try ScratchDirectory(prefix: "stm32mp-bench-\(name)")
        images = try ScratchDirectory(prefix: "stm32mp-bench-\(name)-images", base: ScratchDirectory.imageBase)
        layout = try BenchLayout(in: images, rootfsBytes: rootfsBytes, filled: filled)
    }

    func flash(timing: BoardTiming, storageFolder: String = "storage") -> BenchFlash {
        BenchFlash(layout: layout, storageDirectory: storage.file(storageFolder), timing: timing)
    }

    func remove() {
        storage.remove()
        images.remove()
    }
}

/// One flash of a `BenchLayout` on an MP15 virtual board on a `SimulatedClock`; the board's
/// storage images live in the scratch folder and go with it.
struct BenchFlash {
    let layout: BenchLayout
    let board: VirtualBoard
    let bus: VirtualUSBBus
    let clock = SimulatedClock()

    init(layout: BenchLayout, storageDirectory: String, timing: BoardTiming) {
        self.layout = layout
        board = VirtualBoard(
            configuration: BoardConfiguration(
                soc: .mp15, storageDirectory: storageDirectory,
                storage: [.sdCard("mmc0", size: BenchLayout.storageSize)], timing: timing))
        bus = VirtualUSBBus(clock: clock, boards: [board])
    }

    /// - Parameters:
    ///   - meter: counts the CPU time spent inside the virtual bus and board.
    ///   - verify: the readback after each partition (none: these benchmarks measure sending).
    func run(
        meter: MeteredBus? = nil, verify: VerifyMode = .none,
        events: @escaping @Sendable (FlashEvent) -> Void = { _ in }
    ) async throws -> FlashSummary {
        let flasher = Flasher(
            bus: meter ?? bus, request: FlashRequest(plan: layout.plan, layoutPath: layout.path, verify: verify),
            events: events)
        do {
            return try await flasher.run()
        } catch {
            throw BenchError("flash failed: \(error.reason)")
        }
    }

    /// Closes and deletes the board's storage images (gigabytes on disk).
    func removeStorage() {
        board.storage.closeAll()
        try? FileManager.default.removeItem(atPath: board.storage.directory)
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
