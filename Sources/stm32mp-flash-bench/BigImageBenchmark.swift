import Decompression
import FlashEngine
import FlashLayout
import FoundationEssentials
import Glibc
import ImageSources
import Timekeeping
import VirtualBoard

/// `bigimage`: a real ext4 rootfs (made by `mkfs.ext4 -d`, about a quarter of it data) with the
/// block map `bmaptool create` writes, flashed on the MP15 virtual board with its modelled storage
/// speed (BoardTiming: 20 MB/s writes) on a SimulatedClock: bytes sent against mapped bytes, and
/// the modelled time against sending every byte (`--bmap none`). Then the same image compressed by
/// the real zstd, gzip and xz, each decoded in a child process through `ImageReader` in the
/// engine's 4 KiB reads (one `read(offset:length:)` per DFU block, each returning its own array,
/// as `WholeImageSource` reads for the DFU client): CPU seconds per GiB of output. That is the
/// decompression path alone; the engine's SHA-256 of each block and the DFU exchange are not
/// decompression and are in the next figure instead: the CPU and peak RSS (VmHWM) of a child
/// flashing the `.zst` rootfs (BoardTiming.zero). That child hosts the virtual board too, so its
/// peak includes the board's own U-Boot DFU buffer (`ubootBufferSize`, 8 MiB), which a real board
/// keeps in its own RAM: the figure is an upper bound for the tool.
enum BigImageBenchmark {
    /// The engine reads a Binary one U-Boot DFU block at a time.
    static let engineRead = 4096

    static func run(rootfsMiB: Int, report: inout BenchmarkReport) async throws {
        let images = try ScratchDirectory(prefix: "stm32mp-bench-big-images", base: ScratchDirectory.imageBase)
        let storage = try ScratchDirectory(prefix: "stm32mp-bench-big")
        defer {
            images.remove()
            storage.remove()
        }
        let image = try makeRootfs(in: images, mib: rootfsMiB)
        let layout = try writeLayout(in: images, rootfs: image)
        let map = try BlockMap.load(path: image + ".bmap")
        report.section(
            "bigimage: \(rootfsMiB) MiB ext4 rootfs, \(map.mappedBytes) bytes mapped (\(report.format(100 * Double(map.mappedBytes) / Double(map.imageSize), digits: 1)) %), MP15 virtual board, storage \(BoardTiming().storageBytesPerSecond / 1_000_000) MB/s, SimulatedClock"
        )

        let mapped = try await flash(layout, image: try PreparedImage.prepare(path: image), storage: storage.file("a"))
        let full = try await flash(
            layout, image: try PreparedImage.prepare(path: image, options: ImageOptions(map: .none)),
            storage: storage.file("b"))
        report.figure(
            "mapped send", "\(mapped.bytes) bytes, \(report.format(mapped.duration.inSeconds)) s (modelled)")
        report.figure("full send", "\(full.bytes) bytes, \(report.format(full.duration.inSeconds)) s (modelled)")
        report.target(
            "bytes sent / mapped bytes", measured: Double(mapped.bytes) / Double(map.mappedBytes), limit: 1.05,
            unit: "×")
        report.target(
            "rootfs time, mapped / full send", measured: mapped.duration.inSeconds / full.duration.inSeconds,
            limit: 0.35, unit: "×")
        report.flush()

        for (tool, format) in [("zstd", CompressionFormat.zstd), ("gzip", .gzip), ("xz", .xz)] {
            let compressed = try compress(image, with: tool)
            let size = try fileSize(compressed)
            let decode = try child(["bigimage-child", "decode", compressed, format.rawValue, String(map.imageSize)])
            let perGiB = decode.cpu / (Double(map.imageSize) / Double(1 << 30))
            report.figure(
                "\(tool) (\(size >> 20) MiB compressed)",
                "decoding \(map.imageSize >> 20) MiB in 4 KiB reads: \(report.format(decode.cpu)) s CPU, peak RSS \(decode.peakKiB / 1024) MiB"
            )
            if format == .zstd {
                report.target("zstd decompression CPU per GiB of output", measured: perGiB, limit: 0.5, unit: "s")
                let flashed = try child([
                    "bigimage-child", "flash", layout, compressed, storage.file("z"),
                ])
                report.figure(
                    "flashing the .zst rootfs (child process, virtual board included)",
                    "\(report.format(flashed.cpu)) s CPU (decoding, SHA-256 of each block, DFU, the board model)")
                report.target(
                    "peak RSS flashing the .zst rootfs (child process)", measured: Double(flashed.peakKiB) / 1024,
                    limit: 40, unit: "MiB")
            } else {
                report.figure("\(tool) decompression CPU per GiB of output", "\(report.format(perGiB)) s")
            }
            try? FileManager.default.removeItem(atPath: compressed)
            report.flush()
        }
    }

    // MARK: Child process

    /// `bigimage-child decode FILE FORMAT SIZE` or `bigimage-child flash LAYOUT IMAGE STORAGE`:
    /// prints `cpu-seconds peak-KiB` (its own CPU from the start of the work, its own VmHWM).
    static func child(arguments: [String]) async throws {
        guard arguments.count >= 4 else { throw BenchError("bigimage-child: missing arguments") }
        let before = ProcessUsage.current()
        switch arguments[0] {
        case "decode":
            guard let format = CompressionFormat(rawValue: arguments[2]), let size = Int64(arguments[3]) else {
                throw BenchError("bigimage-child decode FILE FORMAT SIZE")
            }
            let reader = try ImageReader(path: arguments[1], compression: format, size: size)
            var offset: Int64 = 0
            while offset < size {
                offset += Int64(try reader.read(offset: offset, length: engineRead).count)
            }
        case "flash":
            let prepared = try PreparedImage.prepare(path: arguments[2], options: ImageOptions(map: .none))
            _ = try await flash(arguments[1], image: prepared, storage: arguments[3], timing: .zero)
        default:
            throw BenchError("bigimage-child: unknown work \(arguments[0])")
        }
        let cpu = ProcessUsage.current().cpuSeconds - before.cpuSeconds
        print("\(cpu) \(ProcessUsage.peakResidentKiB())")
    }

    private static func child(_ arguments: [String]) throws -> (cpu: Double, peakKiB: Int) {
        let scratch = try ScratchDirectory(prefix: "stm32mp-bench-big-result")
        defer { scratch.remove() }
        let result = scratch.file("out")
        let (status, _) = try ProcessUsage.runSelf(arguments, standardOutput: result)
        guard status == 0 else { throw BenchError("\(arguments.joined(separator: " ")) exited with \(status)") }
        let fields = ((try? String(contentsOfFile: result, encoding: .utf8)) ?? "").split(separator: " ")
        guard fields.count == 2, let cpu = Double(fields[0]), let peak = Int(fields[1].filter(\.isNumber)) else {
            throw BenchError("\(arguments[0]) wrote no result")
        }
        return (cpu, peak)
    }

    // MARK: Flashing

    /// Flashes the layout with `image` as the rootfs (Id 0x10); the rootfs phase's bytes and time.
    private static func flash(
        _ layoutPath: String, image: PreparedImage, storage: String, timing: BoardTiming = BoardTiming()
    ) async throws -> (bytes: Int64, duration: Duration) {
        let folder = String(layoutPath[..<(layoutPath.lastIndex(of: "/") ?? layoutPath.startIndex)])
        let options = PlanOptions(deviceSizes: ["mmc0": BenchLayout.storageSize], layoutDirectory: folder)
        let check = LayoutChecker.check(path: layoutPath, options: LayoutCheckOptions(plan: options))
        guard !check.hasErrors else { throw BenchError("the bigimage layout does not check: \(check.diagnostics)") }
        let plan = try PartitionPlanner.plan(check.lines, options: options).get()
        let board = VirtualBoard(
            configuration: BoardConfiguration(
                soc: .mp15, storageDirectory: storage, storage: [.sdCard("mmc0", size: BenchLayout.storageSize)],
                timing: timing))
        board.recordsTrace = false
        let bus = VirtualUSBBus(clock: SimulatedClock(), boards: [board])
        var request = FlashRequest(plan: plan, layoutPath: layoutPath, verify: VerifyMode.none)
        request.images[0x10] = image
        defer {
            board.storage.closeAll()
            try? FileManager.default.removeItem(atPath: storage)
        }
        let summary: FlashSummary
        do { summary = try await Flasher(bus: bus, request: request).run() } catch {
            throw BenchError("flash failed: \(error.reason)")
        }
        guard let phase = summary.phases.first(where: { $0.phase == 0x10 }) else {
            throw BenchError("the rootfs was not sent")
        }
        return (phase.bytes, phase.duration)
    }

    // MARK: The image

    /// `rootfs.ext4` of `mib` MiB holding files worth a quarter of it, half pseudo-random and
    /// half text-like (so compressors have work of both kinds), and its `.bmap`.
    private static func makeRootfs(in directory: ScratchDirectory, mib: Int) throws -> String {
        let content = directory.file("content")
        try FileManager.default.createDirectory(atPath: content, withIntermediateDirectories: true)
        var state: UInt64 = 0x1234_5678
        let words = Array("the quick brown fox jumps over the lazy dog 0123456789 ".utf8)
        for index in 0..<max(1, mib / 4) {
            var bytes = [UInt8](repeating: 0, count: 1 << 20)
            for block in 0..<(bytes.count / 4096) {
                for offset in stride(from: block * 4096, to: (block + 1) * 4096, by: 8) {
                    if block % 2 == 0 {
                        state &+= 0x9E37_79B9_7F4A_7C15
                        var z = (state ^ (state >> 30)) &* 0xBF58_476D_1CE4_E5B9
                        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                        withUnsafeBytes(of: z ^ (z >> 31)) { bytes.replaceSubrange(offset..<offset + 8, with: $0) }
                    } else {
                        for i in 0..<8 { bytes[offset + i] = words[(offset + i + index) % words.count] }
                    }
                }
            }
            try BenchLayout.write(bytes, to: content + "/file\(index).bin")
        }
        let image = directory.file("rootfs.ext4")
        try BenchLayout.write([], to: image)
        guard truncate(image, off_t(mib) << 20) == 0 else { throw BenchError("truncate \(image): errno \(errno)") }
        try tool([
            "mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=1,lazy_journal_init=1", "-d", content, image,
        ])
        try FileManager.default.removeItem(atPath: content)
        try tool(["bmaptool", "create", "-o", image + ".bmap", image])
        return image
    }

    private static func writeLayout(in directory: ScratchDirectory, rootfs: String) throws -> String {
        try BenchLayout.write(SampleImages.fsbl(), to: directory.file("fsbl.stm32"))
        try BenchLayout.write(SampleImages.fip(), to: directory.file("fip.bin"))
        let text = """
            #Opt\tId\tName\tType\tIP\tOffset\tBinary
            -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tfsbl.stm32
            -\t0x03\tfip-boot\tFIP\tnone\t0x0\tfip.bin
            P\t0x10\trootfs\tFileSystem\tmmc0\t\(BenchLayout.rootfsOffset)\t\(rootfs)

            """
        let path = directory.file("big.tsv")
        try BenchLayout.write(Array(text.utf8), to: path)
        return path
    }

    /// A copy of `path` compressed by the real tool at its default level; its path.
    private static func compress(_ path: String, with name: String) throws -> String {
        try tool([name, "-k", "-f", "-q"] + (name == "xz" ? ["-T2"] : []) + [path])
        return path + ["zstd": ".zst", "gzip": ".gz", "xz": ".xz"][name]!
    }

    private static func fileSize(_ path: String) throws -> Int64 {
        var info = stat()
        guard stat(path, &info) == 0 else { throw BenchError("stat \(path): errno \(errno)") }
        return Int64(info.st_size)
    }

    /// Runs a host tool (searched in PATH) to completion; its output goes to ours.
    private static func tool(_ arguments: [String]) throws {
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawnp(&pid, arguments[0], nil, nil, &argv, environ)
        guard spawned == 0 else { throw BenchError("\(arguments[0]): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw BenchError("waitpid: errno \(errno)") }
        }
        guard status == 0 else { throw BenchError("\(arguments.joined(separator: " ")) failed (status \(status))") }
    }
}
