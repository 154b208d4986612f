import Decompression
import FlashLayout
import FoundationEssentials
import ImageSources

/// What `check` and `plan` say about one Binary: which bytes go over the wire and how long that
/// takes at the stated link speed.
struct ImageSendInfo: Encodable, Equatable {
    /// The partition Id as the layout writes it (`"0x11"`).
    var id: String
    var file: String
    /// `gzip`, `xz`, `zstd` or null.
    var compression: String?
    /// Bytes of the uncompressed image.
    var imageSize: Int64
    /// `recorded` (xz index, zstd frames), `counted` (one decoding pass) or null (plain file).
    var sizeSource: String?
    /// `whole`, `blockMap` or `holes`.
    var selection: String
    var map: String?
    /// Map ranges (or data extents); null when sent whole.
    var ranges: Int?
    /// Map ranges past 4 GiB, sent as one contiguous run.
    var beyondAddressLimit: Int
    var bytesToSend: Int64
    var estimatedSeconds: Double

    enum CodingKeys: String, CodingKey {
        case id, file, compression, imageSize, sizeSource, selection, map, ranges, beyondAddressLimit, bytesToSend,
            estimatedSeconds
    }

    /// `64.0 MiB of 256 MiB (25.0 %)`-style text for tables and notes.
    var sendsText: String {
        guard bytesToSend != imageSize else { return ByteSize.format(UInt64(max(0, imageSize))) }
        let percent = imageSize > 0 ? Double(bytesToSend) * 100 / Double(imageSize) : 0
        return
            "\(ByteSize.format(UInt64(bytesToSend))) of \(ByteSize.format(UInt64(imageSize))) (\(ImageSummary.oneDecimal(percent)) %)"
    }

    /// `zstd, map rootfs.ext4.bmap` / `holes` / `-`.
    var howText: String {
        var parts: [String] = []
        if let compression { parts.append(compression) }
        switch selection {
        case "blockMap": parts.append("map \(PlanTable.shortPath(map ?? "?"))")
        case "holes": parts.append("holes skipped")
        default: break
        }
        return parts.isEmpty ? "-" : parts.joined(separator: ", ")
    }
}

/// Builds `ImageSendInfo` for every partition of a plan and turns image problems into layout
/// diagnostics (so `check` reports them like any other finding).
enum ImageSummary {
    /// The link speed estimates assume: `--link-speed`, in MB/s (10⁶ bytes per second).
    static let defaultLinkSpeed = 5.0
    /// Host-side cost of one range: command write, zero-length DNLOAD, status polls.
    static let perRangeSeconds = 0.01

    struct Outcome {
        var infos: [UInt8: ImageSendInfo] = [:]
        var problems: [(id: UInt8, error: ImageSourceError)] = []
    }

    static func build(plan: PartitionPlan, options: ImageOptionsGroup, linkSpeed: Double) -> Outcome {
        var outcome = Outcome()
        let choices: [UInt8: MapChoice]
        do {
            choices = try options.choices(plan: plan)
        } catch {
            outcome.problems.append((plan.files.keys.min() ?? 0, error))
            return outcome
        }
        for (id, file) in plan.files.sorted(by: { $0.key < $1.key }) {
            let image: PreparedImage
            do {
                image = try PreparedImage.prepare(
                    path: file.path,
                    options: ImageOptions(map: choices[id] ?? .automatic, skipHoles: options.skipHoles))
            } catch {
                outcome.problems.append((id, error))
                continue
            }
            let target = plan.partition(id: id)?.device.target
            let ranged = image.selection != .whole && target?.kind == .mmc && !image.extents.isEmpty
            let schedule = RangeSchedule.segments(image.extents, blockSize: image.map?.blockSize ?? 4096)
            let bytes = ranged ? schedule.segments.reduce(0) { $0 + $1.length } : image.size
            let seconds =
                Double(bytes) / (linkSpeed * 1e6) + (ranged ? Double(schedule.segments.count) * perRangeSeconds : 0)
            outcome.infos[id] = ImageSendInfo(
                id: hexByte(id), file: file.path, compression: image.compression?.rawValue, imageSize: image.size,
                sizeSource: image.sizeSource?.rawValue, selection: ranged ? image.selection.rawValue : "whole",
                map: ranged ? image.map?.path : nil, ranges: ranged ? image.extents.count : nil,
                beyondAddressLimit: ranged ? schedule.beyondLimit : 0, bytesToSend: bytes,
                estimatedSeconds: (seconds * 100).rounded() / 100)
        }
        return outcome
    }

    /// Image findings for `check`: problems (errors), the uncompressed size against the partition,
    /// and a note per compressed / mapped / sparse Binary plus one for the whole layout.
    static func diagnostics(
        _ outcome: Outcome, plan: PartitionPlan, result: LayoutCheckResult, linkSpeed: Double
    ) -> [LayoutDiagnostic] {
        var found: [LayoutDiagnostic] = []
        func place(_ id: UInt8) -> (line: Int, column: Int) {
            guard let line = result.lines.first(where: { $0.id == id }) else { return (0, 0) }
            return (line.line, result.fieldColumns[line.line]?.last ?? 0)
        }
        for (id, error) in outcome.problems {
            let at = place(id)
            let code: DiagnosticCode = error.code == .badCompressedImage ? .badCompressedImage : .badBlockMap
            found.append(
                LayoutDiagnostic(line: at.line, column: at.column, severity: .error, code: code, message: "\(error)"))
        }
        for (id, info) in outcome.infos.sorted(by: { $0.key < $1.key }) {
            let at = place(id)
            if let partition = plan.partition(id: id)?.partition, let size = partition.size, info.compression != nil,
                info.imageSize > Int64(size), let file = plan.files[id], file.size <= Int64(size)
            {
                found.append(
                    LayoutDiagnostic(
                        line: at.line, column: at.column, severity: .error, code: .fileLargerThanPartition,
                        message:
                            "'\(partition.line.binary ?? "")' is \(info.imageSize) bytes uncompressed but partition '\(partition.line.name)' holds \(size) bytes"
                    ))
            }
            guard info.compression != nil || info.selection != "whole" else { continue }
            var message = "'\(info.file.split(separator: "/").last.map(String.init) ?? info.file)': "
            if let compression = info.compression {
                message += "\(compression), \(info.imageSize) bytes uncompressed (\(info.sizeSource ?? "recorded")); "
            }
            switch info.selection {
            case "blockMap": message += "map \(info.map ?? "?") with \(info.ranges ?? 0) ranges; "
            case "holes": message += "\(info.ranges ?? 0) data extents (--skip-holes); "
            default: message += "sent whole; "
            }
            message +=
                "sends \(info.sendsText), about \(formatSeconds(info.estimatedSeconds)) at \(speedText(linkSpeed))"
            if info.beyondAddressLimit > 0 {
                message +=
                    "; \(info.beyondAddressLimit) ranges lie past 4 GiB and go as one contiguous run (the command offset is 32 bits)"
            }
            found.append(
                LayoutDiagnostic(line: at.line, column: at.column, severity: .note, code: .imageInfo, message: message))
        }
        let requested = plan.requestOrder.compactMap { outcome.infos[$0] }
        if requested.contains(where: { $0.compression != nil || $0.selection != "whole" }) {
            let bytes = requested.reduce(0) { $0 + $1.bytesToSend }
            let total = requested.reduce(0) { $0 + $1.imageSize }
            let seconds = requested.reduce(0) { $0 + $1.estimatedSeconds }
            found.append(
                LayoutDiagnostic(
                    line: 0, column: 0, severity: .note, code: .imageInfo,
                    message:
                        "partitions send \(ByteSize.format(UInt64(bytes))) of \(ByteSize.format(UInt64(total))), about \(formatSeconds(seconds)) at \(speedText(linkSpeed)) (plus boot stages and U-Boot's own writes)"
                ))
        }
        return found
    }

    static func speedText(_ speed: Double) -> String { "\(oneDecimal(speed)) MB/s" }

    static func formatSeconds(_ seconds: Double) -> String {
        guard seconds >= 60 else { return oneDecimal(seconds) + " s" }
        let whole = Int(seconds.rounded())
        return "\(whole / 60) min \(whole % 60 < 10 ? "0" : "")\(whole % 60) s"
    }

    /// One digit after the point (no Foundation formatting in sources).
    static func oneDecimal(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(abs(tenths % 10))"
    }
}
