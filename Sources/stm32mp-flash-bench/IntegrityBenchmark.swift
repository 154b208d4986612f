import FlashEngine
import Timekeeping
import VirtualBoard

/// `integrity`: a 64 MiB rootfs of real bytes on the default `BoardTiming` (SimulatedClock, so
/// the figures are the timing model's wall time, the same on every machine):
/// - readback overhead: `--verify sampled` and `full` against `none` (targets ≤ 15 % / ≤ 110 %);
/// - resume: a run cancelled at 90 % of the rootfs, then the same command again; bytes the board
///   received in the second run against a full run (target ≤ 15 %).
enum IntegrityBenchmark {
    static func run(rootfsMiB: Int, report: inout BenchmarkReport) async throws {
        let workspace = try BenchWorkspace(name: "integrity", rootfsBytes: Int64(rootfsMiB) << 20, filled: true)
        defer { workspace.remove() }
        report.section(
            "integrity: \(rootfsMiB) MiB rootfs (real bytes), MP15 virtual board, default BoardTiming, SimulatedClock")
        var durations: [VerifyMode: Double] = [:]
        var fullBytes: Int64 = 0
        for mode in [VerifyMode.none, .sampled, .full] {
            let flash = workspace.flash(timing: BoardTiming(), storageFolder: "verify-\(mode.rawValue)")
            flash.board.recordsTrace = false
            let summary = try await flash.run(verify: mode)
            durations[mode] = summary.duration.inSeconds
            if mode == .none { fullBytes = flash.board.dataBytesReceived }
            let read = summary.checks.reduce(Int64(0)) { $0 + $1.bytesRead }
            report.figure(
                "--verify \(mode.rawValue)",
                "\(report.format(summary.duration.inSeconds)) s, \(report.format(Double(read) / mebibyte)) MiB read back"
            )
            flash.removeStorage()
        }
        let none = durations[.none] ?? 1
        report.target(
            "sampled readback overhead", measured: ((durations[.sampled] ?? 0) / none - 1) * 100, limit: 15, unit: "%")
        report.target(
            "full readback overhead", measured: ((durations[.full] ?? 0) / none - 1) * 100, limit: 110, unit: "%")

        // Resume: cancel at 90 % of the rootfs, then run again on the board left in U-Boot.
        let flash = workspace.flash(timing: BoardTiming(), storageFolder: "resume")
        flash.board.recordsTrace = false
        let total = workspace.layout.rootfsBytes
        let cancelled = await Task {
            do {
                _ = try await flash.run(verify: .sampled) { event in
                    if case .progress(0x10, let sent, _) = event, sent >= total * 9 / 10 {
                        withUnsafeCurrentTask { $0?.cancel() }
                    }
                }
                return false
            } catch {
                return true
            }
        }.value
        guard cancelled else { throw BenchError("the run to interrupt was not cancelled") }
        let before = flash.board.dataBytesReceived
        let resumed = try await flash.run(verify: .sampled)
        let sent = flash.board.dataBytesReceived - before
        report.figure(
            "interrupted at 90 %", "\(report.format(Double(before) / mebibyte)) MiB received before the cancel")
        report.figure(
            "rerun",
            "\(report.format(Double(sent) / mebibyte)) MiB received (restart at byte \(resumed.resume?.restartOffset ?? 0)), \(report.format(resumed.duration.inSeconds)) s; full run \(report.format(Double(fullBytes) / mebibyte)) MiB"
        )
        report.target(
            "resume: bytes of a full run", measured: Double(sent) / Double(fullBytes) * 100, limit: 15, unit: "%")
        flash.removeStorage()
    }
}
