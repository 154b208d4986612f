import ArgumentParser
import BootImages
import FlashLayout
import FoundationEssentials
import NullEncoding

/// `stm32mp-flash check LAYOUT...`: lint layouts like a compiler.
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check FlashLayout files with U-Boot's rules and report every problem.",
        discussion: """
            Prints file:line:col: severity: message [code]. Exit status: 0 when there are no errors \
            (warnings allowed), 1 when a file has errors, 2 for usage errors. Codes are explained in \
            docs/layout-format.md.
            """)

    @Argument(help: "FlashLayout files (.tsv).", completion: .file(extensions: ["tsv"]))
    var layouts: [String]

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Option(
        help: ArgumentHelp(
            "The board's ST U-Boot release (e.g. v2021.10); types it predates become errors.", valueName: "version"))
    var ubootVersion: String?

    @Flag(help: "Judge the layout alone, without its binary files.")
    var layoutOnly = false

    @Option(
        help: ArgumentHelp(
            "The chip the layout is for: mp15, mp13 or mp25 (any STM32MP2); FSBL headers that do not fit it are errors.",
            valueName: "soc"), completion: .list(["mp15", "mp13", "mp25"]))
    var soc: String?

    @OptionGroup var geometry: DeviceGeometryOptions

    @OptionGroup var images: ImageOptionsGroup

    @Option(help: ArgumentHelp("Link speed the time estimates assume, in MB/s.", valueName: "MB/s"))
    var linkSpeed: Double = ImageSummary.defaultLinkSpeed

    func validate() throws {
        guard linkSpeed > 0 else { throw ValidationError("--link-speed takes a positive number of MB/s") }
        if let soc, Self.family(soc) == nil { throw ValidationError("--soc takes mp15, mp13 or mp25, got '\(soc)'") }
        if let ubootVersion, UBootVersion(ubootVersion) == nil {
            throw ValidationError("--uboot-version takes a release like v2022.10, got '\(ubootVersion)'")
        }
    }

    func run() async throws {
        var results = try layouts.map { layout in
            let options = LayoutCheckOptions(
                ubootVersion: ubootVersion.flatMap(UBootVersion.init), layoutOnly: layoutOnly,
                plan: try geometry.planOptions(layoutDirectory: parentDirectory(of: layout)),
                soc: soc.flatMap(Self.family))
            return LayoutChecker.check(path: layout, options: options)
        }
        try geometry.requireUsedDevices(results.flatMap(\.lines))
        var sends: [String: [ImageSendInfo]] = [:]
        if !layoutOnly {
            for index in results.indices {
                let result = results[index]
                let planOptions = try geometry.planOptions(layoutDirectory: parentDirectory(of: result.path))
                guard case .success(let plan) = PartitionPlanner.plan(result.lines, options: planOptions) else {
                    continue
                }
                let outcome = ImageSummary.build(plan: plan, options: images, linkSpeed: linkSpeed)
                results[index].diagnostics += ImageSummary.diagnostics(
                    outcome, plan: plan, result: result, linkSpeed: linkSpeed)
                results[index].diagnostics.sort { ($0.line, $0.column) < ($1.line, $1.column) }
                sends[result.path] = outcome.infos.values.sorted { $0.id < $1.id }
            }
        }
        if json {
            print(try CheckReport(results: results, images: sends).jsonString())
        } else {
            let color = Terminal.useColor(1)
            for result in results {
                for diagnostic in result.diagnostics {
                    print(DiagnosticPrinter.render(diagnostic, path: result.path, color: color))
                }
                print(DiagnosticPrinter.summary(result))
            }
        }
        if results.contains(where: \.hasErrors) { throw ExitCode.failure }
    }
}

/// The JSON shape of `check --json` (docs/json.md).
extension CheckCommand {
    /// `--soc` values: the virtual board's names (mp25 stands for the whole STM32MP2 family).
    static func family(_ soc: String) -> ChipFamily? {
        switch soc {
        case "mp15": .mp15
        case "mp13": .mp13
        case "mp25": .mp2
        default: nil
        }
    }
}

struct CheckReport: Encodable {
    struct File: Encodable {
        var path: String
        var diagnostics: [LayoutDiagnostic]
        /// What each Binary sends (docs/json.md); empty with --layout-only or when no plan exists.
        var images: [ImageSendInfo]
    }

    var files: [File]

    init(results: [LayoutCheckResult], images: [String: [ImageSendInfo]] = [:]) {
        files = results.map { File(path: $0.path, diagnostics: $0.diagnostics, images: images[$0.path] ?? []) }
    }

    func jsonString() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(KeepingNulls(self)), as: UTF8.self)
    }
}
