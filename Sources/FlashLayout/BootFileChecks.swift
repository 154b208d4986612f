import BootImages
import FileAccess
import SystemPackage

/// Checks of the files the boot chain executes: the FSBL the ROM starts (and its copies on the
/// device), and the FIPs TF-A loads. Files are streamed, never loaded whole.
struct BootFileChecks {
    /// The family the layout itself implies: a DDR-firmware line (0x02) exists only on MP2.
    let family: ChipFamily?
    /// The family `check --soc` names; FSBL headers must fit it.
    let soc: ChipFamily?

    init(lines: [LayoutLine], soc: ChipFamily? = nil) {
        family = lines.contains { $0.isBootStage && $0.id == 2 } ? .mp2 : nil
        self.soc = soc
    }

    /// True for the lines whose file must be an FSBL (STM32 image).
    static func isFSBL(_ line: LayoutLine) -> Bool {
        if line.isBootStage { return line.id == 1 }
        guard case .binary = line.type, line.id < 0x10 else { return false }
        return line.name.hasPrefix("fsbl")
    }

    /// True for the lines whose file must be a FIP.
    static func isFIP(_ line: LayoutLine) -> Bool {
        line.type == .fip || (line.isBootStage && line.id == 2)
    }

    /// Findings for one line's file: (severity, code, message).
    func findings(for line: LayoutLine, path: String) -> [(Severity, DiagnosticCode, String)] {
        let report: BootImageReport
        do {
            report = try BootImageInspector.inspect(path: path)
        } catch {
            let expected: DiagnosticCode = Self.isFIP(line) ? .badFIP : .badBootImage
            return [(.error, expected, "\(error)")]
        }
        var out: [(Severity, DiagnosticCode, String)] = []
        let name = path.split(separator: "/").last.map(String.init) ?? path
        if Self.isFSBL(line) {
            guard case .stm32(let header) = report.kind else {
                return [
                    (
                        .error, .badBootImage,
                        "'\(name)' has no STM32 header; the ROM code only starts an STM32 image (a TF-A .stm32 file)"
                    )
                ]
            }
            if report.checksumMatches == false {
                let detail =
                    report.missingPayloadBytes > 0
                    ? "the file is \(report.missingPayloadBytes) bytes short of its header's length"
                    : "the payload's checksum does not match the header"
                out.append((.error, .badBootImage, "'\(name)': \(detail); the ROM code will refuse it"))
            }
            if let soc, !report.chipHint.contains(soc) {
                out.append(
                    (
                        .error, .fsblWrongChip,
                        "'\(name)' has an STM32 header \(header.version == .v1 ? "v1" : "v2") for \(report.chipHint.map(\.description).joined(separator: "/")), not \(soc) (--soc); the ROM refuses it"
                    ))
            } else if let family, !report.chipHint.contains(family) {
                out.append(
                    (
                        .error, .badBootImage,
                        "'\(name)' has an STM32 header \(header.version == .v1 ? "v1 (STM32MP15)" : "v2") but this layout is for \(family)"
                    ))
            }
            let signed = header.isSigned ? "signed (authenticated by the ROM on closed chips)" : "not signed"
            out.append(
                (
                    .note, .bootImageInfo,
                    "'\(name)': STM32 header \(header.version == .v1 ? "v1" : "v2"), \(report.chipHint.map(\.description).joined(separator: "/")), \(signed), \(report.fileSize) bytes"
                ))
            if line.isBootStage, Self.looksLikeStorageBuild(name) {
                out.append(
                    (
                        .warning, .badBootImage,
                        "'\(name)' looks like a TF-A built for a storage device; over USB the ROM needs a USB programmer build (else TF-A stops with 'Boot interface 6 not supported')"
                    ))
            }
        } else if Self.isFIP(line) {
            guard case .fip(let fip) = report.kind else {
                if case .stm32 = report.kind, line.isBootStage {
                    return [
                        (
                            .warning, .badFIP,
                            "'\(name)' is an STM32 image, not a FIP: only old ST TF-A (STM32MP_USE_STM32IMAGE) accepts it for phase 0x03; upstream TF-A answers 'FIP Header check failed for phase 3'"
                        )
                    ]
                }
                if let header = FIPHeader(decoding: Self.prefix(of: path, count: FIPHeader.length)),
                    header.name == FIPHeader.tocName
                {
                    return [
                        (
                            .error, .badFIP,
                            "'\(name)' has a FIP ToC header with serial 0; TF-A rejects it: 'FIP Header check failed'"
                        )
                    ]
                }
                return [
                    (
                        .error, .badFIP,
                        "'\(name)' is not a FIP (no ToC header 0xAA640001); TF-A rejects it: 'FIP Header check failed'"
                    )
                ]
            }
            if !fip.isValid {
                out.append(
                    (
                        .error, .badFIP,
                        "'\(name)' has a FIP ToC header with serial 0; TF-A rejects it: 'FIP Header check failed'"
                    ))
            }
        }
        return out
    }

    /// The first `count` bytes of a file (fewer if it is shorter).
    static func prefix(of path: String, count: Int) -> [UInt8] {
        guard let descriptor = try? FileDescriptor.open(FilePath(path), .readOnly) else { return [] }
        defer { try? descriptor.close() }
        return (try? descriptor.read(count: count, atAbsoluteOffset: 0)) ?? []
    }

    /// `tf-a-…-sdcard.stm32` and friends: builds for a storage boot device, not for USB.
    static func looksLikeStorageBuild(_ name: String) -> Bool {
        let lower = name.lowercased()
        let storage = ["sdcard", "emmc", "nor", "nand", "spinand"].contains {
            lower.contains("-\($0)") || lower.contains("_\($0)")
        }
        let usb = lower.contains("usb") || lower.contains("programmer") || lower.contains("serialboot")
        return storage && !usb
    }
}
