import FlashLayout
import FoundationEssentials
import Glibc
import Timekeeping

/// Benchmarks that print figures (run in release: `scripts/bench`, or
/// `.build/release/stm32mp-flash-bench [check] [flash] [time] [integrity] [storage] [rss] [bigimage]`; none = all
/// but `bigimage`, which runs only when named).
/// Targets are checked here and reported as PASS/MISS; tests never assert on time.
@main
struct Benchmarks {
    static func main() async throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "rss-child", let result = option("--result", in: arguments) {
            let mib = option("--mib", in: arguments).flatMap(Int.init) ?? RSSBenchmark.rootfsMiB
            return try await RSSBenchmark.child(recordsTrace: arguments.contains("--trace"), result: result, mib: mib)
        }
        if arguments.first == "bigimage-child" {
            return try await BigImageBenchmark.child(arguments: Array(arguments.dropFirst()))
        }
        let selected = Set(arguments.filter { !$0.hasPrefix("-") })
        func wanted(_ name: String) -> Bool { selected.isEmpty || selected.contains(name) }
        var report = BenchmarkReport()
        if wanted("check") {
            try CheckBenchmark.run(corpus: option("--corpus", in: arguments) ?? defaultCorpus(), report: &report)
        }
        if wanted("flash") {
            let mib = option("--flash-mib", in: arguments).flatMap(Int.init) ?? 1024
            try await FlashBenchmark.run(rootfsMiB: mib, report: &report)
        }
        if wanted("time") {
            let mib = option("--time-mib", in: arguments).flatMap(Int.init) ?? 256
            try await TimeBenchmark.run(rootfsMiB: mib, report: &report)
        }
        if wanted("integrity") {
            let mib = option("--integrity-mib", in: arguments).flatMap(Int.init) ?? 64
            try await IntegrityBenchmark.run(rootfsMiB: mib, report: &report)
        }
        if wanted("storage") {
            let gib = option("--storage-gib", in: arguments).flatMap(Int.init) ?? 4
            try StorageBenchmark.run(gib: gib, report: &report)
        }
        // Only when named (it makes a real ext4 image and compresses it three times: minutes).
        if selected.contains("bigimage") {
            let mib = option("--bigimage-mib", in: arguments).flatMap(Int.init) ?? 256
            try await BigImageBenchmark.run(rootfsMiB: mib, report: &report)
        }
        // Last, and in a child process: nothing above counts in its peak RSS.
        report.flush()
        if wanted("rss") { try RSSBenchmark.run(report: &report) }
        report.flush()
        if report.misses > 0 { exit(1) }
    }

    static func option(_ name: String, in arguments: [String]) -> String? {
        guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return nil }
        return arguments[index + 1]
    }

    /// `../shared/corpus/flashlayouts/real` next to the working directory's repository.
    static func defaultCorpus() -> String { "../shared/corpus/flashlayouts/real" }
}

/// Collected figures and target verdicts.
struct BenchmarkReport {
    var lines: [String] = []
    var misses = 0

    mutating func figure(_ name: String, _ value: String) { lines.append("  \(name): \(value)") }

    mutating func target(_ name: String, measured: Double, limit: Double, unit: String) {
        let pass = measured <= limit
        if !pass { misses += 1 }
        let digits = unit == "×" ? 4 : 3
        lines.append(
            "  \(pass ? "PASS" : "MISS") \(name): \(format(measured, digits: digits)) \(unit) (target ≤ \(format(limit)) \(unit))"
        )
    }

    mutating func section(_ title: String) { lines.append(title) }

    /// A benchmark whose run was wrong (its figures mean nothing): counted as a miss.
    mutating func fail(_ why: String) {
        misses += 1
        lines.append("  MISS \(why)")
    }

    var rendered: String { lines.joined(separator: "\n") }

    /// Prints the lines so far (before a child process writes to the same stdout).
    mutating func flush() {
        if !lines.isEmpty { print(rendered) }
        lines = []
        fflush(nil)  // every output stream: stdout is not concurrency-safe to name
    }

    func format(_ value: Double, digits: Int = 3) -> String {
        let scale = Double([1, 10, 100, 1000, 10000][min(digits, 4)])
        return String((value * scale).rounded() / scale)
    }
}

/// `check` of every file of the real-world corpus: reading, linting, U-Boot raw parse, planning.
enum CheckBenchmark {
    static func run(corpus: String, report: inout BenchmarkReport) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: corpus).filter {
            !$0.hasSuffix(".md") && !$0.hasPrefix(".")
        }.sorted()
        guard !names.isEmpty else { throw CocoaError(.fileNoSuchFile) }
        let paths = names.map { corpus + "/" + $0 }
        let clock = SystemClock()
        var samples: [Double] = []
        var diagnostics = 0
        for _ in 0..<30 {
            let start = clock.now
            diagnostics = 0
            for path in paths {
                diagnostics +=
                    LayoutChecker.check(path: path, options: LayoutCheckOptions(layoutOnly: true)).diagnostics.count
            }
            samples.append((clock.now - start).inSeconds * 1000)
        }
        samples.sort()
        report.section("check: \(paths.count) corpus files, \(diagnostics) diagnostics, 30 runs")
        report.figure("min", "\(report.format(samples[0])) ms")
        report.figure("median", "\(report.format(samples[samples.count / 2])) ms")
        report.target(
            "check of the whole corpus (median)", measured: samples[samples.count / 2], limit: 200, unit: "ms")
    }
}
