import FlashLayout
import FoundationEssentials
import Glibc
import Timekeeping

/// Benchmarks that print figures (run in release: `swift run -c release stm32mp-flash-bench`).
/// Targets are checked here and reported as PASS/MISS; tests never assert on time.
@main
struct Benchmarks {
    static func main() async throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        let selected = Set(arguments.filter { !$0.hasPrefix("-") })
        var report = BenchmarkReport()
        if selected.isEmpty || selected.contains("check") {
            try CheckBenchmark.run(corpus: option("--corpus", in: arguments) ?? defaultCorpus(), report: &report)
        }
        print(report.rendered)
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
        lines.append("  \(pass ? "PASS" : "MISS") \(name): \(format(measured)) \(unit) (target ≤ \(format(limit)) \(unit))")
    }

    mutating func section(_ title: String) { lines.append(title) }

    var rendered: String { lines.joined(separator: "\n") }

    func format(_ value: Double) -> String {
        let rounded = (value * 1000).rounded() / 1000
        return String(rounded)
    }
}

/// `check` of every file of the real-world corpus: reading, linting, U-Boot raw parse, planning.
enum CheckBenchmark {
    static func run(corpus: String, report: inout BenchmarkReport) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: corpus).filter { !$0.hasSuffix(".md") && !$0.hasPrefix(".") }.sorted()
        guard !names.isEmpty else { throw CocoaError(.fileNoSuchFile) }
        let paths = names.map { corpus + "/" + $0 }
        let clock = SystemClock()
        var samples: [Double] = []
        var diagnostics = 0
        for _ in 0..<30 {
            let start = clock.now
            diagnostics = 0
            for path in paths {
                diagnostics += LayoutChecker.check(path: path, options: LayoutCheckOptions(layoutOnly: true)).diagnostics.count
            }
            samples.append((clock.now - start).inSeconds * 1000)
        }
        samples.sort()
        report.section("check: \(paths.count) corpus files, \(diagnostics) diagnostics, 30 runs")
        report.figure("min", "\(report.format(samples[0])) ms")
        report.figure("median", "\(report.format(samples[samples.count / 2])) ms")
        report.target("check of the whole corpus (median)", measured: samples[samples.count / 2], limit: 200, unit: "ms")
    }
}
