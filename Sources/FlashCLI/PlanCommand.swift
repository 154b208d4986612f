import ArgumentParser
import FlashLayout
import FoundationEssentials
import NullEncoding
import TerminalText

/// `stm32mp-flash plan LAYOUT`: what U-Boot will do with a layout, before touching a board.
struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show the partition plan: offsets, sizes, the GPT U-Boot writes, files and the order of requests.",
        discussion: """
            Device-level checks (alignment, overlaps, sizes) use the documented default geometry \
            unless --device-size / --erase-size / --boot-size say otherwise. Exit status: 0 ok, 1 the \
            layout or the plan has errors, 2 usage errors.
            """)

    @Argument(help: "The FlashLayout file (.tsv).", completion: .file(extensions: ["tsv"]))
    var layout: String

    @OptionGroup var geometry: DeviceGeometryOptions

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Flag(help: "Plan the layout alone, without its binary files.")
    var layoutOnly = false

    @OptionGroup var images: ImageOptionsGroup

    @Option(help: ArgumentHelp("Link speed the time estimates assume, in MB/s.", valueName: "MB/s"))
    var linkSpeed: Double = ImageSummary.defaultLinkSpeed

    func validate() throws {
        guard linkSpeed > 0 else { throw ValidationError("--link-speed takes a positive number of MB/s") }
    }

    func run() async throws {
        let planOptions = try geometry.planOptions(layoutDirectory: parentDirectory(of: layout))
        let check = LayoutChecker.check(
            path: layout, options: LayoutCheckOptions(layoutOnly: layoutOnly, plan: planOptions))
        try geometry.requireUsedDevices(check.lines)
        var diagnostics = check.diagnostics
        var plan: PartitionPlan?
        if !check.hasErrors {
            switch PartitionPlanner.plan(check.lines, options: planOptions) {
            case .success(let value): plan = value
            case .failure(let error):
                diagnostics.append(
                    LayoutDiagnostic(
                        line: error.line ?? 0, column: 0, severity: .error, code: .deviceCheck,
                        message: "U-Boot would reject this device: \(error.message)"))
            }
        }
        // What each Binary sends; an unusable map or compressed file is an error like any other.
        var sends = ImageSummary.Outcome()
        if let planned = plan, !layoutOnly {
            sends = ImageSummary.build(plan: planned, options: images, linkSpeed: linkSpeed)
            let found = ImageSummary.diagnostics(sends, plan: planned, result: check, linkSpeed: linkSpeed)
            diagnostics += found
            if found.contains(where: { $0.severity == .error }) { plan = nil }
        }
        // --json prints the same object whatever happened: the diagnostics, and the plan or
        // nulls (docs/json.md).
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let report = PlanReport(plan, diagnostics: diagnostics, sends: sends.infos, linkSpeed: linkSpeed)
            print(String(decoding: try encoder.encode(KeepingNulls(report)), as: UTF8.self))
            if plan == nil { throw ExitCode.failure }
            return
        }
        if check.hasErrors {
            let color = Terminal.useColor(2)
            for diagnostic in check.diagnostics where diagnostic.severity == .error {
                Terminal.error(DiagnosticPrinter.render(diagnostic, path: layout, color: color))
            }
            let shown = TerminalText.escaped(layout)
            Terminal.error("\(shown): fix the errors above first (stm32mp-flash check \(shown))")
            throw ExitCode.failure
        }
        guard let plan else {
            for diagnostic in diagnostics where diagnostic.severity == .error {
                Terminal.error(DiagnosticPrinter.render(diagnostic, path: layout, color: Terminal.useColor(2)))
            }
            throw ExitCode.failure
        }
        print(
            PlanTable.render(
                plan, layout: layout, color: Terminal.useColor(1), sends: sends.infos, linkSpeed: linkSpeed))
    }
}

/// The JSON shape of `plan --json` (docs/json.md): numbers are JSON numbers in bytes, and a size
/// is null when it is unknown.
struct PlanReport: Encodable {
    struct Stage: Encodable {
        var id: String
        var name: String
        var file: String?
        var fileSize: Int64?

        enum CodingKeys: String, CodingKey { case id, name, file, fileSize }
    }

    struct Partition: Encodable {
        var id: String
        var name: String
        var type: String
        var option: String
        var offset: UInt64
        var hardwarePartition: String?
        var size: UInt64?
        var file: String?
        var fileSize: Int64?
        var gptType: String?
        var gptNumber: Int?
        var gptUniqueGUID: String?
        var alternate: String
        /// What goes over the wire for this partition's Binary; null without one.
        var send: ImageSendInfo?

        enum CodingKeys: String, CodingKey {
            case id, name, type, option, offset, hardwarePartition, size, file, fileSize, gptType, gptNumber,
                gptUniqueGUID, alternate, send
        }
    }

    struct Device: Encodable {
        var ip: String
        var gpt: Bool
        var fullUpdate: Bool
        var size: UInt64?
        var eraseSize: UInt64
        var partitions: [Partition]

        enum CodingKeys: String, CodingKey { case ip, gpt, fullUpdate, size, eraseSize, partitions }
    }

    /// Every `check` finding, and the device check's verdict when U-Boot would reject a device.
    var diagnostics: [LayoutDiagnostic]
    /// Null (with the rest of the plan) when the layout has errors.
    var bootStages: [Stage]?
    var devices: [Device]?
    /// Partition Ids as the layout writes them (`"0x10"`), as in every other output.
    var requestOrder: [String]?
    var layoutPayloadBytes: Int?
    var notes: [String]
    /// Bytes the partitions send (mapped, holes skipped, decompressed) and the estimate at
    /// `linkSpeed` (bytes per second); null without a plan.
    var partitionBytesToSend: Int64?
    var estimatedSeconds: Double?
    var linkSpeed: Double

    enum CodingKeys: String, CodingKey {
        case diagnostics, bootStages, devices, requestOrder, layoutPayloadBytes, notes, partitionBytesToSend,
            estimatedSeconds, linkSpeed
    }

    init(
        _ plan: PartitionPlan?, diagnostics: [LayoutDiagnostic], sends: [UInt8: ImageSendInfo] = [:],
        linkSpeed: Double = ImageSummary.defaultLinkSpeed
    ) {
        self.diagnostics = diagnostics
        self.linkSpeed = linkSpeed * 1e6
        guard let plan else {
            notes = []
            return
        }
        bootStages = plan.bootStages.map {
            Stage(id: hexByte($0.line.id), name: $0.line.name, file: $0.file ?? $0.line.binary, fileSize: $0.fileSize)
        }
        devices = plan.devices.map { device in
            Device(
                ip: device.target.description, gpt: device.writesGPT, fullUpdate: device.fullUpdate,
                size: device.geometry.size, eraseSize: device.geometry.eraseSize,
                partitions: device.partitions.map { partition in
                    let file = plan.files[partition.line.id]
                    return Partition(
                        id: hexByte(partition.line.id), name: partition.line.name,
                        type: partition.line.type.description,
                        option: partition.line.optionText, offset: partition.offset,
                        hardwarePartition: partition.hardwarePartition.map { "boot\($0)" }, size: partition.size,
                        file: file?.path ?? partition.line.binary, fileSize: file?.size,
                        gptType: partition.gptTypeGUID, gptNumber: partition.gptNumber,
                        gptUniqueGUID: partition.gptUniqueGUID, alternate: partition.altName,
                        send: sends[partition.line.id])
                })
        }
        requestOrder = plan.requestOrder.map(hexByte)
        layoutPayloadBytes = plan.payload.bytes.count
        notes = plan.notes
        let requested = plan.requestOrder.compactMap { sends[$0] }
        partitionBytesToSend = requested.reduce(0) { $0 + $1.bytesToSend }
        estimatedSeconds = (requested.reduce(0) { $0 + $1.estimatedSeconds } * 100).rounded() / 100
    }
}

/// The human-readable plan.
enum PlanTable {
    static func render(
        _ plan: PartitionPlan, layout: String, color: Bool, sends: [UInt8: ImageSendInfo] = [:],
        linkSpeed: Double = ImageSummary.defaultLinkSpeed
    ) -> String {
        var out: [String] = ["Plan for \(TerminalText.field(layout))", ""]
        if !plan.bootStages.isEmpty {
            out.append(ANSI.bold.wrap("Boot stages sent to RAM over USB (phase: file)", enabled: color))
            out += table(
                ["Id", "Name", "File", "Size"],
                plan.bootStages.map {
                    [
                        hexByte($0.line.id), TerminalText.escaped($0.line.name),
                        shortPath($0.file ?? $0.line.binary ?? "none"),
                        $0.fileSize.map { ByteSize.format(UInt64($0)) } ?? "-",
                    ]
                })
            out.append("")
        }
        for device in plan.devices {
            let gpt =
                device.writesGPT
                ? "GPT written (full update)"
                : device.target.kind == .mmc
                    ? "no GPT written (partial update)" : "no GPT (\(device.target.kind.rawValue))"
            let size = device.geometry.size.map(ByteSize.format) ?? "size unknown"
            out.append(
                ANSI.bold.wrap(
                    "\(device.target): \(gpt); \(size), erase unit \(ByteSize.format(device.geometry.eraseSize))",
                    enabled: color))
            out += table(
                ["#", "Id", "Opt", "Name", "Type", "Offset", "Size", "File", "File size", "Sends", "How", "GPT type"],
                device.partitions.map { p in
                    let file = plan.files[p.line.id]
                    let send = sends[p.line.id]
                    return [
                        p.gptNumber.map(String.init) ?? p.hardwarePartition.map { "boot\($0)" } ?? "-",
                        hexByte(p.line.id),
                        p.line.optionText, TerminalText.escaped(p.line.name), p.line.type.description,
                        p.hardwarePartition == nil ? "0x" + String(p.offset, radix: 16, uppercase: true) : "0x0",
                        p.size.map(ByteSize.format) ?? "to end",
                        shortPath(file?.path ?? p.line.binary ?? "none"),
                        file.map { ByteSize.format(UInt64($0.size)) } ?? "-", send?.sendsText ?? "-",
                        send?.howText ?? "-", p.gptTypeGUID.map(gptTypeName) ?? "-",
                    ]
                })
            out.append("")
        }
        let total = plan.requestOrder.compactMap { plan.files[$0]?.size }.reduce(0, +)
        out.append(
            "U-Boot will ask for \(plan.requestOrder.count) partition(s) in this order: "
                + plan.requestOrder.map(hexByte).joined(separator: " "))
        out.append(
            "Bytes to send: layout \(plan.payload.bytes.count) B, boot stages \(ByteSize.format(UInt64(plan.bootStages.compactMap(\.fileSize).reduce(0, +)))), partitions \(ByteSize.format(UInt64(total)))"
        )
        let requested = plan.requestOrder.compactMap { sends[$0] }
        if !requested.isEmpty {
            let bytes = requested.reduce(0) { $0 + $1.bytesToSend }
            let image = requested.reduce(0) { $0 + $1.imageSize }
            let seconds = requested.reduce(0) { $0 + $1.estimatedSeconds }
            out.append(
                "Partitions send \(ByteSize.format(UInt64(bytes))) of \(ByteSize.format(UInt64(image))) (maps, holes and compression applied): about \(ImageSummary.formatSeconds(seconds)) at \(ImageSummary.speedText(linkSpeed)) (--link-speed)"
            )
            for send in requested where send.beyondAddressLimit > 0 {
                out.append(
                    "note: \(PlanTable.shortPath(send.file)): \(send.beyondAddressLimit) ranges lie past 4 GiB; they go as one contiguous run (the command offset is 32 bits)"
                )
            }
        }
        for note in plan.notes { out.append("note: \(TerminalText.escaped(note))") }
        return out.joined(separator: "\n")
    }

    static func gptTypeName(_ guid: String) -> String {
        switch guid {
        case GPTTypes.linuxReserved: "Linux reserved"
        case GPTTypes.fip: "FIP"
        case GPTTypes.fwuMetadata: "FWU metadata"
        case GPTTypes.ubootEnv: "U-Boot env"
        case GPTTypes.efiSystem: "EFI system"
        case GPTTypes.linuxData: "Linux data"
        default: guid
        }
    }

    /// The resolved path (which copy of a Binary is read matters, see `shadowed-binary`),
    /// escaped and shortened in the middle so the file name stays visible.
    static func shortPath(_ path: String) -> String { TerminalText.field(path, limit: 60) }

    /// Left-aligned columns separated by two spaces.
    static func table(_ header: [String], _ rows: [[String]]) -> [String] {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            "  "
                + row.enumerated().map { index, cell in
                    index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
                }.joined(separator: "  ")
        }
    }
}
