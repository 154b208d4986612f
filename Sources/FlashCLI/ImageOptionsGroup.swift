import ArgumentParser
import Decompression
import FlashLayout
import ImageSources

/// `--bmap` and `--skip-holes`, shared by `check`, `plan` and `flash`: which bytes of each Binary
/// are sent.
struct ImageOptionsGroup: ParsableArguments {
    @Option(
        name: .customLong("bmap"),
        help: ArgumentHelp(
            "Block maps: 'auto' (X.bmap beside each Binary X, as bmaptool finds it), 'none' (send every byte), FILE (the map for the one Binary of its ImageSize) or PART=FILE (by partition name or Id). Repeatable.",
            valueName: "auto|none|FILE|PART=FILE"))
    var maps: [String] = []

    @Flag(
        name: .customLong("skip-holes"),
        help:
            "Skip the holes of sparse Binaries that have no map (SEEK_DATA/SEEK_HOLE). Risky: the medium keeps its old bytes where the file has holes."
    )
    var skipHoles = false

    func validate() throws {
        if maps.contains("none"), maps.count > 1 { throw ValidationError("--bmap none cannot be combined with maps") }
        if maps.contains("auto"), maps.count > 1 { throw ValidationError("--bmap auto cannot be combined with maps") }
    }

    /// The map choice for each Binary: `none`, named maps, or bmaptool's discovery.
    func choices(plan: PartitionPlan) throws(ImageSourceError) -> [UInt8: MapChoice] {
        var result: [UInt8: MapChoice] = [:]
        let ids = plan.files.keys.sorted()
        if maps.contains("none") {
            for id in ids { result[id] = MapChoice.none }
            return result
        }
        for id in ids { result[id] = .automatic }
        for value in maps where value != "auto" {
            if let equals = value.firstIndex(of: "="), !value[..<equals].contains("/") {
                let part = String(value[..<equals])
                let file = String(value[value.index(after: equals)...])
                guard let id = Self.partition(part, in: plan) else {
                    throw ImageSourceError(
                        .badBlockMap, path: file,
                        message: "--bmap \(value): no partition named or numbered '\(part)' has a Binary")
                }
                result[id] = .file(file)
                continue
            }
            let map: BlockMap
            do { map = try BlockMap.load(path: value) } catch {
                throw ImageSourceError(
                    .badBlockMap, path: error.path, line: error.line,
                    message: (error.field.map { "\($0): " } ?? "") + error.message)
            }
            let matching = ids.filter { id in
                guard let file = plan.files[id] else { return false }
                if CompressionFormat(path: file.path) == nil { return file.size == map.imageSize }
                return (try? PreparedImage.prepare(path: file.path, options: ImageOptions(map: .none)).size)
                    == map.imageSize
            }
            guard matching.count == 1 else {
                throw ImageSourceError(
                    .badBlockMap, path: value,
                    message:
                        "\(matching.isEmpty ? "no" : "\(matching.count)") Binaries of the layout are \(map.imageSize) bytes (the map's ImageSize); name the partition with --bmap PART=\(value)"
                )
            }
            result[matching[0]] = .file(value)
        }
        return result
    }

    /// A partition by name or Id (`rootfs`, `0x21`, `33`).
    static func partition(_ text: String, in plan: PartitionPlan) -> UInt8? {
        let ids = plan.files.keys
        if let id = ids.first(where: { plan.partition(id: $0)?.partition.line.name == text }) { return id }
        let number =
            text.lowercased().hasPrefix("0x") ? UInt8(text.dropFirst(2), radix: 16) : UInt8(text, radix: 10)
        return number.flatMap { ids.contains($0) ? $0 : nil }
    }

    /// Prepares every Binary that is compressed, has a map, or (with --skip-holes) has holes.
    /// Plain Binaries sent whole are left to the engine's file reader.
    /// - Throws: `ImageSourceError` for the first Binary or map that cannot be used.
    func prepare(plan: PartitionPlan) throws(ImageSourceError) -> [UInt8: PreparedImage] {
        let choices = try choices(plan: plan)
        var images: [UInt8: PreparedImage] = [:]
        for (id, file) in plan.files {
            let image = try PreparedImage.prepare(
                path: file.path, options: ImageOptions(map: choices[id] ?? .automatic, skipHoles: skipHoles))
            if image.compression != nil || image.selection != .whole { images[id] = image }
        }
        return images
    }
}
