import Diagnostics
import FlashEngine
import FlashLayout
import Foundation
import ImageSources
import TestSupport
import Testing
import VirtualBoard
import VirtualBoardTestSupport

/// A layout whose rootfs (Id 0x11) is a real sparse ext4 image (with its bmaptool map, or
/// compressed), flashed on the virtual U-Boot with its storage pre-filled with a marker byte, so
/// that bytes the host must not send are seen to keep what the medium held.
final class BigImageRig: @unchecked Sendable {
    static let marker: UInt8 = 0xEE
    let folder: TemporaryDirectory
    let fixture: SparseImageFixture
    let layoutPath: String
    let rootfs: String
    let plan: PartitionPlan
    let bench: VirtualBoardBench
    let events = EventLog()

    /// - Parameter rootfs: makes the Binary for rootfs from the fixture (plain, compressed …).
    init(
        configureImage: (SparseImageFixture, String) throws -> String = { fixture, _ in fixture.image }
    ) throws {
        folder = try TemporaryDirectory()
        fixture = try SparseImageFixture.make(in: folder.path, megabytes: 8, dataKiB: 1536)
        rootfs = try configureImage(fixture, folder.path)
        let examples = try SimulatedFlash.exampleSet.get().path
        let template = try String(contentsOfFile: examples + "/mp15-sdcard.tsv", encoding: .utf8)
        var text = template.replacingOccurrences(of: "mp15-sdcard/rootfs.ext4", with: rootfs)
        text = text.replacingOccurrences(of: "\tmp15-sdcard/", with: "\t\(examples)/mp15-sdcard/")
        layoutPath = folder.file("layout.tsv")
        try text.write(toFile: layoutPath, atomically: true, encoding: .utf8)
        let check = LayoutChecker.check(path: layoutPath)
        precondition(!check.hasErrors, "\(check.diagnostics)")
        plan = try PartitionPlanner.plan(check.lines, options: PlanOptions(layoutDirectory: folder.path)).get()
        bench = try VirtualBoardBench { configuration in
            configuration.soc = .mp15
            configuration.storage = [.sdCard("mmc0", size: 64 << 20)]
            configuration.timing = .zero
            // The fast path (`run(transport: .fastboot)`): U-Boot's fastboot writes the SD card,
            // with a 256 KiB buffer, so the 8 MiB rootfs goes in several sparse pieces.
            configuration.fastboot.mmcDevice = 0
            configuration.fastboot.maxDownloadSize = 256 << 10
        }
        // The medium held something before: rootfs's area is all marker bytes.
        let image = bench.board.storage.path(device: "mmc0")
        _ = FileManager.default.createFile(atPath: image, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: image))
        try handle.truncate(atOffset: 64 << 20)
        try handle.seek(toOffset: try rootfsOffset())
        try handle.write(contentsOf: Data(repeating: Self.marker, count: 8 << 20))
        try handle.close()
    }

    /// A rig whose rootfs is the fixture copied into a folder of its own (so no map is found
    /// beside it) and compressed by `tool` (`gzip`, `xz`, `zstd`); the copy itself is removed.
    static func compressed(with tool: String) throws -> BigImageRig {
        try BigImageRig { (fixture: SparseImageFixture, folder: String) throws -> String in
            let copy = try Self.copy(fixture, into: folder + "/alone", sparse: false)
            let compressed = try SparseImageFixture.compress(copy, with: tool)
            try FileManager.default.removeItem(atPath: copy)
            return compressed
        }
    }

    /// A rig whose rootfs is a sparse copy of the fixture (`cp --sparse=always`, holes where the
    /// image has zero blocks) in a folder of its own, without a map.
    static func sparseCopy() throws -> BigImageRig {
        try BigImageRig { (fixture: SparseImageFixture, folder: String) throws -> String in
            try Self.copy(fixture, into: folder + "/holes", sparse: true)
        }
    }

    /// The fixture's image copied to `folder`/rootfs.ext4; its path.
    private static func copy(_ fixture: SparseImageFixture, into folder: String, sparse: Bool) throws -> String {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let copy = folder + "/rootfs.ext4"
        if sparse {
            _ = try ExternalTool("cp", package: "coreutils").run(["--sparse=always", fixture.image, copy])
        } else {
            try FileManager.default.copyItem(atPath: fixture.image, toPath: copy)
        }
        return copy
    }

    /// Where partition `id` lives on the board's mmc0 (the board's own geometry decides).
    func offset(of id: UInt8) throws -> UInt64 {
        let device = try #require(plan.devices.first { $0.target.description == "mmc0" })
        let boardPlan = try DevicePlanner.plan(
            LayoutDevice(target: device.target, lines: device.partitions.map(\.line)),
            geometry: DeviceGeometry(size: 64 << 20, eraseSize: 512, bootPartitionSize: nil)
        ).get()
        return try #require(boardPlan.partitions.first { $0.line.id == id }).offset
    }

    func rootfsOffset() throws -> UInt64 { try offset(of: 0x11) }

    /// Changes two bytes inside the map's largest range past offset 0, so its checksum no longer
    /// matches; returns that range.
    func corruptLargestMappedRange() throws -> ImageExtent {
        let map = try BlockMap.load(path: fixture.bmap)
        let target = try #require(map.extents.filter { $0.offset > 0 }.max { $0.length < $1.length })
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: fixture.image))
        try handle.seek(toOffset: UInt64(target.offset + 100))
        try handle.write(contentsOf: Data([0x42, 0x43]))
        try handle.close()
        return target
    }

    func run(options: ImageOptions = .init(), verify: VerifyMode = .sampled, transport: FlashTransport = .dfu)
        async throws(FlashFailure) -> FlashSummary
    {
        var request = FlashRequest(plan: plan, layoutPath: layoutPath, verify: verify, transport: transport)
        do {
            if let file = plan.files[0x11] {
                request.images[0x11] = try PreparedImage.prepare(path: file.path, options: options)
            }
        } catch {
            throw FlashFailure(.badImage(error))
        }
        let events = self.events
        return try await Flasher(bus: bench.bus, request: request, events: { events.append($0) }).run()
    }

    func storage(offset: UInt64, length: Int) throws -> [UInt8] {
        bench.board.storage.closeAll()
        return try readBytes(bench.board.storage.path(device: "mmc0"), offset: offset, length: length)
    }
}

@Suite("big images on the virtual board: maps, holes, compressed Binaries")
struct BigImageFlashTests {
    @Test(
        "a rootfs with a .bmap sends only its mapped blocks; mapped ranges match the image, the rest keeps the medium's bytes"
    )
    func mappedRootfs() async throws {
        let rig = try BigImageRig()
        let map = try BlockMap.load(path: rig.fixture.bmap)
        let summary = try await rig.run()
        #expect(summary.partitions == rig.plan.requestOrder)
        #expect(rig.bench.board.protocolViolations.isEmpty, "\(rig.bench.board.protocolViolations)")
        let sent = try #require(summary.phases.first { $0.phase == 0x11 })
        #expect(sent.bytes == map.mappedBytes)
        #expect(map.mappedBytes < map.imageSize / 3)

        let image = Array(try Data(contentsOf: URL(fileURLWithPath: rig.fixture.image)))
        let written = try rig.storage(offset: try rig.rootfsOffset(), length: image.count)
        var mapped = [Bool](repeating: false, count: image.count)
        for extent in map.extents {
            #expect(
                written[Int(extent.offset)..<Int(extent.end)] == image[Int(extent.offset)..<Int(extent.end)],
                "range at \(extent.offset) differs")
            for index in Int(extent.offset)..<Int(extent.end) { mapped[index] = true }
        }
        let untouched = zip(written, mapped).filter { !$0.1 }
        #expect(!untouched.isEmpty)
        #expect(untouched.allSatisfy { $0.0 == BigImageRig.marker }, "an unmapped byte was written")

        // The partition after it starts at offset 0 again (U-Boot keeps the stored offset).
        let userfs = try #require(rig.plan.files[0x12]).path
        let expected = Array(try Data(contentsOf: URL(fileURLWithPath: userfs)))
        #expect(try rig.storage(offset: try rig.offset(of: 0x12), length: expected.count) == expected)
    }

    @Test("--verify full reads back exactly the mapped ranges of a mapped rootfs, and a compressed one whole")
    func verifyCoversWhatWasSent() async throws {
        let mapped = try BigImageRig()
        let map = try BlockMap.load(path: mapped.fixture.bmap)
        let summary = try await mapped.run(verify: .full)
        let check = try #require(summary.checks.first { $0.phase == 0x11 })
        #expect(check.method == .full)
        #expect(check.bytesRead == map.mappedBytes)

        let compressed = try BigImageRig.compressed(with: "xz")
        let whole = try await compressed.run(verify: .full)
        let wholeCheck = try #require(whole.checks.first { $0.phase == 0x11 })
        #expect(wholeCheck.bytesRead == 8 << 20)
        #expect(wholeCheck.sha256 != nil)
    }

    @Test("gzip, xz and zstd rootfs images flash byte-exact", arguments: ["gzip", "xz", "zstd"])
    func compressedRootfs(tool: String) async throws {
        // A folder of its own, so no map is found beside it: the whole image is sent.
        let rig = try BigImageRig.compressed(with: tool)
        let summary = try await rig.run()
        #expect(summary.partitions == rig.plan.requestOrder)
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: rig.fixture.image)))
        #expect(try #require(summary.phases.first { $0.phase == 0x11 }).bytes == Int64(image.count))
        #expect(try rig.storage(offset: try rig.rootfsOffset(), length: image.count) == image)
    }

    @Test("a zstd rootfs with its map: the map applies to the uncompressed image")
    func compressedMapped() async throws {
        let rig = try BigImageRig { fixture, _ in try SparseImageFixture.compress(fixture.image, with: "zstd") }
        let map = try BlockMap.load(path: rig.fixture.bmap)
        let summary = try await rig.run()
        #expect(try #require(summary.phases.first { $0.phase == 0x11 }).bytes == map.mappedBytes)
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: rig.fixture.image)))
        let written = try rig.storage(offset: try rig.rootfsOffset(), length: image.count)
        for extent in map.extents {
            #expect(written[Int(extent.offset)..<Int(extent.end)] == image[Int(extent.offset)..<Int(extent.end)])
        }
    }

    @Test(
        "a truncated stream fails with bad-compressed-image and the partition is never finished",
        arguments: ["gzip", "xz", "zstd"])
    func truncatedStream(tool: String) async throws {
        let rig = try BigImageRig.compressed(with: tool)
        let path = try #require(rig.plan.files[0x11]).path
        var request = FlashRequest(plan: rig.plan, layoutPath: rig.layoutPath)
        request.images[0x11] = try PreparedImage.prepare(path: path)
        // Damaged after planning: the stream ends early.
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
        let failure = try await #require(throws: FlashFailure.self) {
            try await Flasher(bus: rig.bench.bus, request: request).run()
        }
        guard case .badImage(let error) = failure.reason else {
            Issue.record("expected badImage, got \(failure.reason)")
            return
        }
        #expect(error.code == .badCompressedImage)
        #expect(failure.phase == 0x11)
        let finished = failure.timeline.contains {
            if case .sendDone(let phase, _, _, _) = $0.event { return phase == 0x11 }
            return false
        }
        #expect(!finished)
        let diagnosis = Diagnoser.diagnose(Evidence(failure: failure))
        #expect(diagnosis.code == .badCompressedImage)
    }

    @Test("a mapped range whose data does not match its checksum stops with bmap-checksum before it is sent")
    func checksumStopsBeforeSending() async throws {
        let rig = try BigImageRig()
        let target = try rig.corruptLargestMappedRange()
        let failure = try await #require(throws: FlashFailure.self) { try await rig.run() }
        guard case .badImage(let error) = failure.reason else {
            Issue.record("expected badImage, got \(failure.reason)")
            return
        }
        #expect(error.code == .bmapChecksum)
        #expect(error.line == target.line)
        #expect(Diagnoser.diagnose(Evidence(failure: failure)).code == .bmapChecksum)
        // Nothing of the bad range reached the medium.
        let written = try rig.storage(
            offset: try rig.rootfsOffset() + UInt64(target.offset), length: Int(target.length))
        #expect(written.allSatisfy { $0 == BigImageRig.marker })
    }

    @Test("--skip-holes sends the data extents of a sparse rootfs without a map")
    func skipHoles() async throws {
        let rig = try BigImageRig.sparseCopy()
        let path = try #require(rig.plan.files[0x11]).path
        let prepared = try PreparedImage.prepare(path: path, options: ImageOptions(skipHoles: true))
        #expect(prepared.selection == .holes)
        let summary = try await rig.run(options: ImageOptions(skipHoles: true))
        #expect(try #require(summary.phases.first { $0.phase == 0x11 }).bytes == prepared.bytesToSend)
        #expect(prepared.bytesToSend < prepared.size / 2)
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let written = try rig.storage(offset: try rig.rootfsOffset(), length: image.count)
        for extent in prepared.extents {
            #expect(written[Int(extent.offset)..<Int(extent.end)] == image[Int(extent.offset)..<Int(extent.end)])
        }
    }
}

/// The same images over `--transport fastboot`: maps and holes become DONT_CARE chunks of the
/// sparse pieces (nothing on the wire, the medium keeps its bytes), compressed Binaries stream
/// through the sparse path, a map checksum stops the run before any piece of that Binary is sent.
@Suite("big images over fastboot on the virtual board")
struct BigImageFastbootTests {
    /// The rootfs's `download:` sizes and the bytes U-Boot's fastboot received for it.
    static func rootfsDownloads(_ rig: BigImageRig) -> [Int] {
        let commands = rig.bench.board.fastbootCommands
        var sizes: [Int] = []
        for (index, command) in commands.enumerated() where command.hasPrefix("download:") {
            guard index + 1 < commands.count, commands[index + 1] == "flash:rootfs" else { continue }
            sizes.append(Int(command.dropFirst("download:".count), radix: 16) ?? 0)
        }
        return sizes
    }

    @Test("a .bmap rootfs: only mapped blocks go on the wire, the rest keeps the medium's bytes")
    func mappedRootfsOverFastboot() async throws {
        let rig = try BigImageRig()
        let map = try BlockMap.load(path: rig.fixture.bmap)
        let summary = try await rig.run(transport: .fastboot)
        #expect(summary.partitions == rig.plan.requestOrder)
        let downloads = Self.rootfsDownloads(rig)
        #expect(downloads.count > 1, "several sparse pieces: \(downloads)")
        let wire = downloads.reduce(0, +)
        // At most the mapped bytes (FILL chunks shrink zero-filled mapped blocks) plus headers:
        // far less than the 8 MiB image.
        #expect(wire > 0 && Int64(wire) < map.mappedBytes + 64 << 10, "\(wire) for \(map.mappedBytes) mapped")

        let image = Array(try Data(contentsOf: URL(fileURLWithPath: rig.fixture.image)))
        let written = try rig.storage(offset: try rig.rootfsOffset(), length: image.count)
        var mapped = [Bool](repeating: false, count: image.count)
        for extent in map.extents {
            #expect(written[Int(extent.offset)..<Int(extent.end)] == image[Int(extent.offset)..<Int(extent.end)])
            for index in Int(extent.offset)..<Int(extent.end) { mapped[index] = true }
        }
        let untouched = zip(written, mapped).filter { !$0.1 }
        #expect(!untouched.isEmpty)
        #expect(untouched.allSatisfy { $0.0 == BigImageRig.marker }, "an unmapped byte was written")
    }

    @Test(
        "gzip, xz and zstd rootfs images stream through the sparse path byte-exact", arguments: ["gzip", "xz", "zstd"])
    func compressedRootfsOverFastboot(tool: String) async throws {
        let rig = try BigImageRig.compressed(with: tool)
        let summary = try await rig.run(transport: .fastboot)
        #expect(summary.partitions == rig.plan.requestOrder)
        #expect(Self.rootfsDownloads(rig).count > 1)
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: rig.fixture.image)))
        #expect(try #require(summary.phases.first { $0.phase == 0x11 }).bytes == Int64(image.count))
        #expect(try rig.storage(offset: try rig.rootfsOffset(), length: image.count) == image)
    }

    @Test("--skip-holes: the holes of a sparse rootfs are DONT_CARE")
    func holesOverFastboot() async throws {
        let rig = try BigImageRig.sparseCopy()
        let path = try #require(rig.plan.files[0x11]).path
        let prepared = try PreparedImage.prepare(path: path, options: ImageOptions(skipHoles: true))
        _ = try await rig.run(options: ImageOptions(skipHoles: true), transport: .fastboot)
        let wire = Self.rootfsDownloads(rig).reduce(0, +)
        #expect(Int64(wire) < prepared.bytesToSend + 64 << 10 && Int64(wire) < prepared.size / 2, "\(wire)")
        let image = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let written = try rig.storage(offset: try rig.rootfsOffset(), length: image.count)
        for extent in prepared.extents {
            #expect(written[Int(extent.offset)..<Int(extent.end)] == image[Int(extent.offset)..<Int(extent.end)])
        }
    }

    @Test("a map checksum mismatch stops with bmap-checksum before any rootfs piece is sent")
    func checksumStopsBeforeAnyPiece() async throws {
        let rig = try BigImageRig()
        _ = try rig.corruptLargestMappedRange()
        let failure = try await #require(throws: FlashFailure.self) { try await rig.run(transport: .fastboot) }
        #expect(Diagnoser.diagnose(Evidence(failure: failure)).code == .bmapChecksum)
        #expect(failure.phase == 0x11)
        #expect(Self.rootfsDownloads(rig).isEmpty)
        let written = try rig.storage(offset: try rig.rootfsOffset(), length: 8 << 20)
        #expect(written.allSatisfy { $0 == BigImageRig.marker })
    }
}
