import ArgumentParser
import FlashLayout
import TerminalText

/// `DEV=SIZE` arguments (`mmc0=8GiB`) shared by `check`, `plan` and `flash`.
struct DeviceGeometryOptions: ParsableArguments {
    @Option(
        name: .customLong("device-size"), help: ArgumentHelp("Size of a device, e.g. mmc0=8GiB.", valueName: "dev=size")
    )
    var deviceSizes: [String] = []

    @Option(
        name: .customLong("erase-size"),
        help: ArgumentHelp("Erase unit of a device, e.g. mmc1=512KiB.", valueName: "dev=size"))
    var eraseSizes: [String] = []

    @Option(
        name: .customLong("boot-size"),
        help: ArgumentHelp("eMMC boot partition size, e.g. mmc1=4MiB.", valueName: "dev=size"))
    var bootSizes: [String] = []

    @Option(
        name: .customLong("binaries-from"),
        help: ArgumentHelp(
            "When a relative Binary exists both next to the layout and in the working directory as different files, use this one: layout or cwd.",
            valueName: "layout|cwd"))
    var binariesFrom: String?

    var binaryBase: BinaryBase? { binariesFrom.flatMap(BinaryBase.init(rawValue:)) }

    func validate() throws {
        if let binariesFrom, BinaryBase(rawValue: binariesFrom) == nil {
            throw ValidationError("--binaries-from takes layout or cwd, got '\(binariesFrom)'")
        }
        _ = try Self.parse(deviceSizes, option: "--device-size")
        _ = try Self.parse(eraseSizes, option: "--erase-size")
        _ = try Self.parse(bootSizes, option: "--boot-size")
    }

    func planOptions(layoutDirectory: String) throws -> PlanOptions {
        PlanOptions(
            deviceSizes: try Self.parse(deviceSizes, option: "--device-size"),
            eraseSizes: try Self.parse(eraseSizes, option: "--erase-size"),
            bootPartitionSizes: try Self.parse(bootSizes, option: "--boot-size"),
            layoutDirectory: layoutDirectory, binaryBase: binaryBase)
    }

    /// A size for a device no layout line uses is a typo (`mmc9`), never silently ignored.
    func requireUsedDevices(_ lines: [LayoutLine]) throws {
        let used = Set(lines.filter { $0.target.kind != .none }.map(\.target.description))
        for (option, values) in [
            ("--device-size", deviceSizes), ("--erase-size", eraseSizes), ("--boot-size", bootSizes),
        ] {
            for device in try Self.parse(values, option: option).keys.sorted() where !used.contains(device) {
                let known = used.sorted().joined(separator: ", ")
                throw ValidationError(
                    "\(option) \(device): the layout has no device \(device) (its devices: \(known.isEmpty ? "none" : known))"
                )
            }
        }
    }

    static func parse(_ values: [String], option: String) throws -> [String: UInt64] {
        var result: [String: UInt64] = [:]
        for value in values {
            let parts = value.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw ValidationError("\(option) takes DEV=SIZE (e.g. mmc0=8GiB), got '\(value)'")
            }
            guard let size = ByteSize.parse(parts[1]), size > 0 else {
                throw ValidationError(
                    "\(option) \(value): '\(parts[1])' is not a size (examples: 8GiB, 8GB = 8×10⁹ bytes, 512KiB, 0x80000)"
                )
            }
            result[parts[0]] = size
        }
        return result
    }
}

/// Prints diagnostics the way compilers do, coloured on a terminal.
enum DiagnosticPrinter {
    static func render(_ diagnostic: LayoutDiagnostic, path: String, color: Bool) -> String {
        let text = TerminalText.escaped(diagnostic.formatted(path: path))
        guard color else { return text }
        let label = "\(diagnostic.severity.rawValue):"
        let style: ANSI = diagnostic.severity == .error ? .red : diagnostic.severity == .warning ? .yellow : .cyan
        return text.replacingFirst(label, with: style.wrap(label, enabled: true))
    }

    static func summary(_ result: LayoutCheckResult) -> String {
        let errors = result.errorCount
        let warnings = result.warningCount
        let path = TerminalText.escaped(result.path)
        if errors == 0 && warnings == 0 { return "\(path): ok" }
        return "\(path): \(errors) error\(errors == 1 ? "" : "s"), \(warnings) warning\(warnings == 1 ? "" : "s")"
    }
}

extension String {
    /// This string with the first occurrence of `target` replaced.
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let range = firstRange(of: target) else { return self }
        return String(self[..<range.lowerBound]) + replacement + String(self[range.upperBound...])
    }

    func firstRange(of target: String) -> Range<String.Index>? {
        var index = startIndex
        while index < endIndex {
            if self[index...].hasPrefix(target) { return index..<self.index(index, offsetBy: target.count) }
            index = self.index(after: index)
        }
        return nil
    }
}
