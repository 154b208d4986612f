import FlashEngine
import FlashLayout
import FoundationEssentials
import Timekeeping
import VirtualBoard

let mebibyte = Double(1 << 20)
let gibibyte = Double(1 << 30)

/// `flash`: a 1 GiB sparse rootfs on the zero-latency model. Process CPU (user + sys, every
/// thread) around `Flasher.run`, per GiB sent; wall-clock MB/s; control transfers of the rootfs
/// phase against the DFU minimum. The board runs in-process, so a second, metered run
/// (`MeteredBus`) measures the CPU spent inside the virtual bus and board; the host's share is
/// that run's CPU minus the board's (the meter's own clock reads count as host: conservative).
enum FlashBenchmark {
    static func run(rootfsMiB: Int, report: inout BenchmarkReport) async throws {
        let workspace = try BenchWorkspace(name: "flash", rootfsBytes: Int64(rootfsMiB) << 20)
        defer { workspace.remove() }
        let layout = workspace.layout

        let flash = workspace.flash(timing: .zero)
        let wall = SystemClock()
        let before = ProcessUsage.current()
        let summary = try await flash.run()
        let elapsed = wall.now.inSeconds
        let after = ProcessUsage.current()
        let violations = flash.board.protocolViolations.count
        let traced = flash.board.trace.count
        flash.removeStorage()

        let meteredFlash = workspace.flash(timing: .zero, storageFolder: "metered")
        let metered = MeteredBus(meteredFlash.bus)
        let meteredBefore = ProcessUsage.current()
        _ = try await meteredFlash.run(meter: metered)
        let meteredCPU = ProcessUsage.current().cpuSeconds - meteredBefore.cpuSeconds
        meteredFlash.removeStorage()
        let readCPU = try replayImageReads(layout.rootfsPath)

        let gib = Double(summary.phases.reduce(0) { $0 + $1.bytes }) / gibibyte
        let cpu = after.cpuSeconds - before.cpuSeconds
        let board = metered.meter.seconds
        report.section("flash: \(rootfsMiB) MiB sparse rootfs, MP15 virtual board, BoardTiming.zero, SimulatedClock")
        report.figure(
            "sent",
            "\(report.format(gib)) GiB in \(summary.phases.count) phases, \(traced) board requests, \(violations) protocol violations"
        )
        report.figure("wall", "\(report.format(elapsed)) s, \(report.format(gib * gibibyte / elapsed / 1e6)) MB/s")
        report.figure(
            "CPU, host and in-process board",
            "\(report.format(cpu)) s (user \(report.format(after.userSeconds - before.userSeconds)) s, sys \(report.format(after.systemSeconds - before.systemSeconds)) s) = \(report.format(cpu / gib)) s/GiB"
        )
        report.figure(
            "metered run",
            "\(report.format(meteredCPU)) s CPU, of which \(report.format(board)) s inside the virtual bus and board (\(metered.meter.skippedCalls) calls not metered)"
        )
        report.figure(
            "reading the rootfs alone (FileByteSource, 4 KiB blocks)", "\(report.format(readCPU / gib)) s/GiB")
        report.target(
            "host CPU per GiB flashed (metered run − board)", measured: (meteredCPU - board) / gib, limit: 1.5,
            unit: "s/GiB")
        if violations > 0 || Int64(gib * gibibyte) < layout.rootfsBytes {
            report.fail("the flash itself was not clean")
        }

        try transfers(summary, report: &report)
    }

    /// Reads the image the way `DFUDevice.download` does (one 4096-byte `FileByteSource.read` per
    /// block) and returns the CPU seconds it took.
    static func replayImageReads(_ path: String) throws -> Double {
        let source = try FileByteSource(path: path)
        let before = ProcessUsage.current()
        var offset: Int64 = 0
        while offset < source.count { offset += Int64(try source.read(offset: offset, length: 4096).count) }
        return ProcessUsage.current().cpuSeconds - before.cpuSeconds
    }

    /// The rootfs phase against the least a host can do under the DFU rules of reference §1.2
    /// for U-Boot: SET_INTERFACE (rule 1), one GETSTATUS expecting dfuIDLE (rule 1), per 4096-byte
    /// block one DNLOAD and one GETSTATUS (U-Boot answers dfuDNLOAD-IDLE at once, rule 4), the
    /// zero-length DNLOAD (rule 3), then GETSTATUS twice (dfuMANIFEST, then dfuIDLE, rule 5):
    /// 2·⌈N/4096⌉ + 5.
    static func transfers(_ summary: FlashSummary, report: inout BenchmarkReport) throws {
        guard let rootfs = summary.phases.first(where: { $0.phase == 0x10 }) else {
            throw BenchError("no rootfs phase in the summary")
        }
        let blocks = (Int(rootfs.bytes) + 4095) / 4096
        let minimum = 2 * blocks + 5
        let mib = Double(rootfs.bytes) / mebibyte
        report.section("transfers: rootfs phase, \(rootfs.bytes) bytes = \(blocks) U-Boot blocks of 4096")
        report.figure(
            "control transfers",
            "\(rootfs.controlTransfers) (\(report.format(Double(rootfs.controlTransfers) / mib)) per MiB)")
        report.figure("minimum 2·blocks + 5", "\(minimum) (\(report.format(Double(minimum) / mib)) per MiB)")
        report.figure(
            "whole run", "\(summary.controlTransfers) control transfers (descriptors, GetPhase, DETACH included)")
        report.target(
            "control transfers per MiB / minimum", measured: Double(rootfs.controlTransfers) / Double(minimum),
            limit: 1.02, unit: "×")
    }
}

/// `time`: the default `BoardTiming` on a SimulatedClock; `FlashSummary.duration` against the
/// least time the timing model allows for the same layout (`TimingLowerBound`).
enum TimeBenchmark {
    static func run(rootfsMiB: Int, report: inout BenchmarkReport) async throws {
        let workspace = try BenchWorkspace(name: "time", rootfsBytes: Int64(rootfsMiB) << 20)
        defer { workspace.remove() }
        let layout = workspace.layout
        let flash = workspace.flash(timing: BoardTiming())
        let summary = try await flash.run()
        let bound = try TimingLowerBound(plan: layout.plan, board: flash.board.configuration)
        report.section("time: \(rootfsMiB) MiB rootfs, MP15 virtual board, default BoardTiming, SimulatedClock")
        for phase in summary.phases {
            let least = bound.phases.first { $0.phase == phase.phase }?.least ?? .zero
            report.figure(
                "phase \(hexByte(phase.phase)) \(phase.name)",
                "\(phase.bytes) bytes, \(report.format(phase.duration.inSeconds)) s (bound \(report.format(least.inSeconds)) s)"
            )
        }
        for (name, value) in bound.breakdown { report.figure("bound: \(name)", "\(report.format(value.inSeconds)) s") }
        report.figure(
            "flash duration",
            "\(report.format(summary.duration.inSeconds)) s; lower bound \(report.format(bound.total.inSeconds)) s")
        report.target(
            "duration / timing-model lower bound", measured: summary.duration.inSeconds / bound.total.inSeconds,
            limit: 1.02, unit: "×")
        if !flash.board.protocolViolations.isEmpty {
            report.fail("protocol violations: \(flash.board.protocolViolations)")
        }
    }
}

/// `rss`: peak RSS of a child process (`rss-child`) flashing a 2 GiB sparse rootfs with zero
/// timing: the child's own `VmHWM`, so nothing else this process did counts. The target run
/// turns the board's request trace off (`VirtualBoard.recordsTrace`): it is board memory that
/// grows with every request; a second run with the trace on shows what it costs.
enum RSSBenchmark {
    static let rootfsMiB = 2048

    static func run(report: inout BenchmarkReport) throws {
        report.section("rss: \(rootfsMiB) MiB sparse rootfs flashed in a child process, BoardTiming.zero")
        report.flush()
        let withTrace = try child(trace: true)
        report.figure(
            "peak RSS with the board's request trace on", "\(report.format(Double(withTrace.peakKiB) / 1024)) MiB")
        let measured = try child(trace: false)
        report.figure("child CPU", "\(report.format(measured.usage.cpuSeconds)) s")
        report.target("peak RSS (board trace off)", measured: Double(measured.peakKiB) / 1024, limit: 40, unit: "MiB")
    }

    /// Runs `rss-child`, which writes its peak RSS in KiB to a file we name.
    private static func child(trace: Bool) throws -> (peakKiB: Int, usage: ProcessUsage) {
        let scratch = try ScratchDirectory(prefix: "stm32mp-bench-rss-result")
        defer { scratch.remove() }
        let result = scratch.file("peak")
        let arguments = ["rss-child", "--result", result] + (trace ? ["--trace"] : [])
        let (status, usage) = try ProcessUsage.runSelf(arguments)
        guard status == 0 else { throw BenchError("\(arguments.joined(separator: " ")) exited with \(status)") }
        guard let text = try? String(contentsOfFile: result, encoding: .utf8), let peak = Int(text) else {
            throw BenchError("rss-child wrote no result")
        }
        return (peak, usage)
    }

    /// The child: flashes, prints its own figures, writes its peak RSS (KiB) to `result`.
    static func child(recordsTrace: Bool, result: String, mib: Int = rootfsMiB) async throws {
        let baseline = ProcessUsage.residentKiB()
        let workspace = try BenchWorkspace(name: "rss", rootfsBytes: Int64(mib) << 20)
        defer { workspace.remove() }
        let flash = workspace.flash(timing: .zero)
        flash.board.recordsTrace = recordsTrace
        let summary = try await flash.run()
        let peak = ProcessUsage.peakResidentKiB()
        let sent = summary.phases.reduce(0) { $0 + $1.bytes }
        let trace = flash.board.trace
        let traceMiB = (trace.capacity * MemoryLayout<BoardTraceEntry>.stride) >> 20
        print(
            "  child (trace \(recordsTrace ? "on" : "off")): sent \(sent) bytes; VmRSS \(baseline / 1024) MiB before the flash, \(ProcessUsage.residentKiB() / 1024) MiB after, peak \(peak / 1024) MiB; trace \(trace.count) entries, \(traceMiB) MiB of array"
        )
        flash.removeStorage()
        try BenchLayout.write(Array(String(peak).utf8), to: result)
    }
}

/// The least time the virtual board's timing model (Sources/VirtualBoard) allows for flashing
/// `plan` on an MP15 with upstream TF-A, whatever the host does. How the model charges time:
/// a DFU class request costs `controlOverhead` + its data (or reply) bytes at the stage's
/// throughput (`BoardDevice.control` → `usbTime`); standard requests (descriptors,
/// SET_INTERFACE) cost nothing; U-Boot's buffer drains hold the DNLOAD (or the request after the
/// manifestation GETSTATUS) for bytes / `storageBytesPerSecond`; a bwPollTimeout forbids the next
/// request until that long after the GETSTATUS arrived; re-enumerations happen a fixed delay
/// after the DETACH arrives. With o = overhead, s(x) = o + x/rate, g = s(6) (a GETSTATUS), and
/// B blocks of c bytes per phase (N bytes):
/// - ROM (legacy stack, c = 1024): g + Σ (max(s(cᵢ), romBlockStore) + g) + o + max(g, 1 ms) + g_TF-A
///   (each block is dfuDNBUSY for romBlockStore from its DNLOAD; manifestation polls 1 ms; the
///   last GETSTATUS is TF-A's, same session).
/// - TF-A upstream (c = 1024): g + Σ (s(cᵢ) + max(g, 1 ms)) + o + max(g, 1 ms) + g.
/// - U-Boot (c = 4096): g + Σ (s(cᵢ) + g) + o + 2g + (partition bytes / storage rate).
/// - Plus one GetPhase UPLOAD (≥ o) per phase and per USB session start (the host must read the
///   phase to know what to send, and before each DETACH), o for the END DETACH, and the
///   transitions: `tfaToUBoot` after TF-A's DETACH, then `detachToDisconnect` +
///   `ubootReenumeration` + erase bytes / erase rate + `gptWrite` per GPT after enumeration 1.
/// Host-side choices (waiting bwPollTimeout after the reply rather than after the request, extra
/// polls) are exactly what the ratio measures.
struct TimingLowerBound {
    struct Phase {
        var phase: UInt8
        var least: Duration
    }

    var phases: [Phase] = []
    var breakdown: [(String, Duration)] = []
    var total: Duration { breakdown.reduce(.zero) { $0 + $1.1 } }

    init(plan: PartitionPlan, board: BoardConfiguration) throws {
        guard board.soc == .mp15, board.tfaVariant == .upstream else {
            throw BenchError("bound written for MP15 upstream TF-A")
        }
        let timing = board.timing
        let overhead = timing.controlOverhead
        func transfer(_ bytes: Int64, _ rate: Int64) -> Duration {
            rate > 0 && bytes > 0 ? .nanoseconds(bytes * 1_000_000_000 / rate) : .zero
        }
        func request(_ bytes: Int64, _ rate: Int64) -> Duration { overhead + transfer(bytes, rate) }
        /// Σ over the blocks of `body(block size)`: full blocks, then the short last one.
        func blocks(_ total: Int64, of chunk: Int64, _ body: (Int64) -> Duration) -> Duration {
            let full = total / chunk
            let rest = total % chunk
            return body(chunk) * Int(full) + (rest > 0 ? body(rest) : .zero)
        }
        let poll = Duration.milliseconds(1)
        func status(_ rate: Int64) -> Duration { request(6, rate) }

        guard let fsbl = plan.bytesToSend(phase: 0x01), let fip = plan.bytesToSend(phase: 0x03) else {
            throw BenchError("the plan has no FSBL or FIP")
        }
        let rom = timing.romBytesPerSecond
        let tfa = timing.tfaBytesPerSecond
        let uboot = timing.ubootBytesPerSecond
        let romChunk = Int64(board.romTransferSize) / 64 * 64
        phases.append(
            Phase(
                phase: 0x01,
                least:
                    status(rom)
                    + blocks(fsbl, of: romChunk) { max(request($0, rom), timing.romBlockStore) + status(rom) }
                    + overhead + max(status(rom), poll) + status(tfa)))
        phases.append(
            Phase(
                phase: 0x03,
                least:
                    status(tfa) + blocks(fip, of: 1024) { request($0, tfa) + max(status(tfa), poll) }
                    + overhead + max(status(tfa), poll) + status(tfa)))
        var storage: Duration = .zero
        func ubootPhase(_ id: UInt8, _ bytes: Int64, storing: Bool) -> Phase {
            var least =
                status(uboot) + blocks(bytes, of: 4096) { request($0, uboot) + status(uboot) } + overhead + status(
                    uboot) * 2
            if storing {
                // Drains of `ubootBufferSize`, each charged at the storage rate.
                let drains = blocks(bytes, of: Int64(board.ubootBufferSize)) {
                    transfer($0, timing.storageBytesPerSecond)
                }
                storage += drains
                least += drains
            }
            return Phase(phase: id, least: least)
        }
        phases.append(ubootPhase(0x00, Int64(plan.payload.bytes.count), storing: false))
        for id in plan.requestOrder {
            guard let bytes = plan.bytesToSend(phase: id) else { throw BenchError("no file for phase \(id)") }
            phases.append(ubootPhase(id, bytes, storing: true))
        }

        let sessions = 3  // ROM (TF-A in the same session on MP15), U-Boot enumerations 1 and 2
        let getPhases = overhead * (phases.count + sessions)
        let erased = plan.devices.flatMap(\.partitions).filter(\.line.isDelete).reduce(Int64(0)) {
            $0 + Int64($1.size ?? 0)
        }
        let gpts = plan.devices.filter(\.writesGPT).count
        let transitions =
            timing.tfaToUBoot + timing.detachToDisconnect + timing.ubootReenumeration
            + transfer(erased, timing.eraseBytesPerSecond) + timing.gptWrite * gpts
        let phaseTotal = phases.reduce(Duration.zero) { $0 + $1.least }
        breakdown = [
            ("phases (USB data + DFU requests + busy/poll waits)", phaseTotal - storage),
            ("U-Boot storage writes", storage),
            ("GetPhase reads + END DETACH", getPhases + overhead),
            ("re-enumerations (TF-A → U-Boot, U-Boot 1 → 2 incl. \(gpts) GPT)", transitions),
        ]
    }
}
