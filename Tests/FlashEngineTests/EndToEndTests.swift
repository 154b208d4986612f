import BoardTracking
import FlashEngine
import FlashLayout
import Foundation
import TestSupport
import Testing
import USBModel
import VirtualBoard

@Suite("flash the example layouts on the virtual board")
struct EndToEndTests {
    @Test(
        "every P partition byte-identical at its planned offset; GPT as planned; no protocol violation",
        arguments: ["mp15-sdcard", "mp15-emmc", "mp13-sdcard", "mp25-sdcard"])
    func flash(layout: String) async throws {
        let rig = try SimulatedFlash(layout: layout)
        let summary = try await rig.run()
        #expect(summary.partitions == rig.plan.requestOrder)
        #expect(rig.board.protocolViolations.isEmpty, "\(rig.board.protocolViolations)")

        _ = try rig.checkWrittenAsPlanned()
    }

    @Test("MP15 goes ROM → TF-A in one USB session; MP13 and MP25 re-enumerate; U-Boot enumerates twice")
    func transitions() async throws {
        func stages(_ layout: String) async throws -> [String] {
            let rig = try SimulatedFlash(layout: layout)
            _ = try await rig.run()
            return rig.events.all.compactMap {
                if case .reenumerated(let from, let to, _, _) = $0 { return "\(from.rawValue)>\(to.rawValue)" }
                return nil
            }
        }
        #expect(try await stages("mp15-sdcard") == ["tfa>uboot", "uboot>uboot"])
        #expect(try await stages("mp13-sdcard") == ["rom>tfa", "tfa>uboot", "uboot>uboot"])
        #expect(try await stages("mp25-sdcard") == ["rom>tfa", "tfa>tfa", "tfa>uboot", "uboot>uboot"])
    }

    @Test("phases follow GetPhase: ST TF-A v2.4 takes the layout before the FIP")
    func tfaV24() async throws {
        let rig = try SimulatedFlash(layout: "mp15-sdcard") { $0.tfaVariant = .stV24 }
        let summary = try await rig.run()
        #expect(summary.phases.map(\.phase).prefix(3) == [0x01, 0x00, 0x03])
    }
}

/// `sfdisk --json` of an image, the fields compared with the plan.
enum Sfdisk {
    struct Entry: Decodable {
        var start: UInt64
        var size: UInt64
        var type: String
        var uuid: String
        var name: String?
    }
    struct Table: Decodable { var partitions: [Entry] }
    struct Output: Decodable { var partitiontable: Table }

    static func read(_ image: String) throws -> Table {
        let output = try ExternalTool("sfdisk", package: "fdisk").run(["--json", image])
        return try JSONDecoder().decode(Output.self, from: Data(output.standardOutput.utf8)).partitiontable
    }
}
