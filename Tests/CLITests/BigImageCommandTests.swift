import Foundation
import TestSupport
import Testing

/// `check`, `plan` and `flash --simulate` with a mapped, a compressed and a damaged rootfs.
@Suite("big images on the command line")
struct BigImageCommandTests {
    let tool: ExternalTool
    let examples: String

    init() throws {
        tool = try BuiltProducts.tool("stm32mp-flash")
        examples = try CLIExamples.directory()
    }

    /// The example MP15 SD-card layout with its rootfs (Id 0x11, 8 MiB) replaced by `rootfs`.
    func layout(rootfs: String, in folder: TemporaryDirectory) throws -> String {
        let template = try String(contentsOfFile: examples + "/mp15-sdcard.tsv", encoding: .utf8)
        let text = template.replacingOccurrences(of: "mp15-sdcard/rootfs.ext4", with: rootfs)
            .replacingOccurrences(of: "\tmp15-sdcard/", with: "\t\(examples)/mp15-sdcard/")
        let path = folder.file("layout.tsv")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test("check and plan show the mapped bytes, the map and the estimate; flash --simulate sends only them")
    func mapped() throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 8, dataKiB: 1024)
        let layout = try layout(rootfs: fixture.image, in: folder)
        let mapText = try String(contentsOfFile: fixture.bmap, encoding: .utf8)
        let mappedBlocks = try #require(
            mapText.components(separatedBy: "<MappedBlocksCount>").last?.components(separatedBy: "<").first
                .flatMap { Int($0.trimmingCharacters(in: .whitespaces)) })

        let check = try tool.run(["check", "--json", "--link-speed", "2", layout])
        #expect(check.status == 0, "\(check.standardOutput)")
        let file = try #require((try json(check.standardOutput)["files"] as? [[String: Any]])?.first)
        let notes = try #require(file["diagnostics"] as? [[String: Any]]).filter {
            $0["code"] as? String == "image-info"
        }
        #expect(notes.contains { ($0["message"] as? String)?.contains("map \(fixture.bmap)") == true })
        let images = try #require(file["images"] as? [[String: Any]])
        let rootfs = try #require(images.first { $0["id"] as? String == "0x11" })
        #expect(rootfs["selection"] as? String == "blockMap")
        #expect(rootfs["bytesToSend"] as? Int == mappedBlocks * 4096)
        #expect(rootfs["imageSize"] as? Int == 8 << 20)
        #expect(rootfs["map"] as? String == fixture.bmap)
        let seconds = try #require(rootfs["estimatedSeconds"] as? Double)
        #expect(
            abs(seconds - (Double(mappedBlocks * 4096) / 2e6 + Double(rootfs["ranges"] as? Int ?? 0) * 0.01)) < 0.02)

        let plan = try tool.run(["plan", "--json", layout])
        #expect(plan.status == 0, "\(plan.standardError)")
        let devices = try #require(try json(plan.standardOutput)["devices"] as? [[String: Any]])
        let partitions = try #require(devices.first?["partitions"] as? [[String: Any]])
        let send = try #require(partitions.first { $0["id"] as? String == "0x11" }?["send"] as? [String: Any])
        #expect(send["bytesToSend"] as? Int == mappedBlocks * 4096)
        #expect(partitions.first { $0["id"] as? String == "0x09" }?["send"] is NSNull)
        let table = try tool.run(["plan", layout])
        #expect(table.standardOutput.contains("Sends"))
        #expect(table.standardOutput.contains("rootfs.ext4.bmap"))

        let none = try tool.run(["plan", "--json", "--bmap", "none", layout])
        let noneDevices = try #require(try json(none.standardOutput)["devices"] as? [[String: Any]])
        let noneSend = try #require(
            (noneDevices.first?["partitions"] as? [[String: Any]])?.first { $0["id"] as? String == "0x11" }?["send"]
                as? [String: Any])
        #expect(noneSend["bytesToSend"] as? Int == 8 << 20)

        let board = folder.file("board")
        let flash = try tool.run(["flash", "--simulate", "--sim-dir", board, "--json", layout])
        #expect(flash.status == 0, "\(flash.standardOutput.suffix(2000))")
        let finished = flash.standardOutput.split(separator: "\n").compactMap { line -> [String: Any]? in
            guard let object = try? json(String(line)), object["event"] as? String == "phase-done" else { return nil }
            return object
        }
        let rootfsDone = try #require(finished.first { $0["phase"] as? String == "0x11" })
        #expect(rootfsDone["bytes"] as? Int == mappedBlocks * 4096)
    }

    @Test("a bad map, a truncated stream and a compressed image too big for its partition are check errors")
    func problems() throws {
        let folder = try TemporaryDirectory()
        let fixture = try SparseImageFixture.make(in: folder.path, megabytes: 8, dataKiB: 512)
        let badMap = try String(contentsOfFile: fixture.bmap, encoding: .utf8)
            .replacingOccurrences(of: "<BlocksCount> 2048 </BlocksCount>", with: "<BlocksCount> 2049 </BlocksCount>")
        try badMap.write(toFile: fixture.bmap, atomically: true, encoding: .utf8)
        let layout1 = try layout(rootfs: fixture.image, in: folder)
        let check1 = try tool.run(["check", layout1])
        #expect(check1.status == 1)
        #expect(check1.standardOutput.contains("[bad-block-map]"), "\(check1.standardOutput)")
        #expect(check1.standardOutput.contains("\(fixture.bmap):"))
        #expect(check1.standardOutput.contains("BlocksCount"))
        let flash1 = try tool.run(["flash", "--simulate", "--sim-dir", folder.file("b1"), layout1])
        #expect(flash1.status == 1)

        let other = try TemporaryDirectory()
        let big = try SparseImageFixture.make(in: other.path, megabytes: 12, dataKiB: 256)
        try FileManager.default.removeItem(atPath: big.bmap)
        let zst = try SparseImageFixture.compress(big.image, with: "zstd")
        let layout2 = try layout(rootfs: zst, in: other)
        let check2 = try tool.run(["check", layout2])
        #expect(check2.status == 1)
        #expect(check2.standardOutput.contains("uncompressed but partition 'rootfs' holds"), "\(check2.standardOutput)")

        let xz = try SparseImageFixture.compress(big.image, with: "xz")
        let data = try Data(contentsOf: URL(fileURLWithPath: xz))
        try data.prefix(data.count - 40).write(to: URL(fileURLWithPath: xz))
        let layout3 = try layout(rootfs: xz, in: other)
        let check3 = try tool.run(["check", layout3])
        #expect(check3.status == 1)
        #expect(check3.standardOutput.contains("[bad-compressed-image]"), "\(check3.standardOutput)")
    }
}
