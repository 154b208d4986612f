import Foundation
import Testing

/// `stm32mp-flash flash`, the built binary unmodified, against the emulated board of each SoC:
/// libusb, libudev and the usbfs ioctls all go through umockdev, nothing else is changed.
@Suite struct RealUSBFlashTests {
    /// ROM → TF-A (→ TF-A again on MP25) → U-Boot (two enumerations) → END; the SD card image
    /// then holds the GPT the plan describes and every `P` partition's file at its offset.
    @Test(arguments: ["mp15", "mp13", "mp25"])
    func flashOverRealUSBProgramsTheSDCardAsPlanned(soc: String) async throws {
        let directory = try ShortTemporaryDirectory()
        let flash = try builtExecutable("stm32mp-flash")
        let examples = try await makeExamples(in: directory)
        let layout = examples + "/\(soc)-sdcard.tsv"
        let storage = directory.file("storage")
        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            ["--soc", soc, "--storage", storage, "--stats", "--", flash, "flash"] + hangGuards + [layout],
            in: directory, timeout: 240)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        // Human progress is on stderr (stdout is for machine output).
        #expect(result.stderr.contains("board reports END"), "\(result.stderr)")
        for line in result.stderr.split(separator: "\n") where line.hasPrefix("[emulator]") {
            print("[figure] flash \(soc): \(line)")
        }

        // The board's storage: a 4 GiB SD card as mmc0 (BoardConfiguration's default).
        try await expectStorageMatchesPlan(layout, storage: storage, device: "mmc0", in: directory)
    }

    /// Issue 9 item 6: ST's legacy TF-A on MP13 enumerates with the ROM's own product string. The
    /// tool asks GetPhase instead of taking it for a ROM that restarted (`fsbl-not-started`), and
    /// the flash completes.
    @Test func tfaWithTheROMsProductStringIsAskedGetPhase() async throws {
        let directory = try ShortTemporaryDirectory()
        let flash = try builtExecutable("stm32mp-flash")
        let examples = try await makeExamples(in: directory)
        let storage = directory.file("storage")
        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
        let layout = examples + "/mp13-sdcard.tsv"
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            ["--soc", "mp13", "--tfa", "stLegacy", "--storage", storage, "--", flash, "flash", "--json"] + hangGuards
                + [layout],
            in: directory, timeout: 240)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let events = try result.lines.map { try JSONDecoder().decode(IdentityEvent.self, from: Data($0.utf8)) }
        #expect(events.last?.event == "done", "\(result.stdout)")
        let rom = try #require(events.first { $0.event == "board" })
        // The first re-enumeration is TF-A, with the ROM's string: the case this test is about.
        let tfa = try #require(events.first { $0.event == "reenumeration" })
        #expect(tfa.product == rom.product, "\(result.stdout)")
        try await expectStorageMatchesPlan(layout, storage: storage, device: "mmc0", in: directory)
    }

    /// `serial-changes`: the ROM says 000000000000 and the later stages the chip UID, each time
    /// on the same port. The run follows the board by its port and the JSON events show the new
    /// identity.
    @Test func boardComingBackOnTheSamePortWithANewSerialIsFollowed() async throws {
        let directory = try ShortTemporaryDirectory()
        let flash = try builtExecutable("stm32mp-flash")
        let examples = try await makeExamples(in: directory)
        let result = try await run(
            try builtExecutable("stm32mp-board-emulator"),
            ["--soc", "mp15", "--scenario", "serial-changes", "--", flash, "flash", "--json"] + hangGuards + [
                examples + "/mp15-sdcard.tsv"
            ], in: directory, timeout: 240)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let events = try result.lines.map { try JSONDecoder().decode(IdentityEvent.self, from: Data($0.utf8)) }
        #expect(events.last?.event == "done", "\(result.stdout)")
        let first = try #require(events.first { $0.event == "board" })
        #expect(first.serial == "000000000000")
        #expect(first.product?.hasPrefix("DFU in HS Mode") == true, "\(first)")
        let reenumerations = events.filter { $0.event == "reenumeration" }
        // MP15: TF-A → U-Boot, then U-Boot's second enumeration.
        #expect(reenumerations.count == 2, "\(result.stdout)")
        for event in reenumerations {
            #expect(event.port == first.port)
            #expect(event.serial != first.serial && event.serial?.count == 24, "\(event)")
            #expect(event.product != first.product && event.product?.hasPrefix("USB download gadget@") == true)
        }
    }
}

/// The emulator runs in real time and CI machines are loaded: every wait of a run that must succeed
/// gets a long limit that only stops a hung run (the defaults, 5 s for TF-A, are for real boards).
let hangGuards = [
    "--wait-timeout", "120", "--tfa-timeout", "120", "--uboot-timeout", "120", "--reenumeration-timeout", "120",
]

/// `make-examples` into `directory/examples`; returns that folder.
func makeExamples(in directory: ShortTemporaryDirectory) async throws -> String {
    let examples = directory.file("examples")
    let made = try await run(try builtExecutable("stm32mp-flash"), ["make-examples", "--out", examples], in: directory)
    try #require(made.status == 0, "\(made.stderr)")
    return examples
}

/// `plan --json` with the emulated board's geometry (`device`: mmc0 is a 4 GiB SD card, mmc1 a
/// 4 GiB eMMC).
func boardPlan(_ layout: String, device: String = "mmc0", in directory: ShortTemporaryDirectory) async throws
    -> FlashPlan
{
    let result = try await run(
        try builtExecutable("stm32mp-flash"), ["plan", "--json", "--device-size", "\(device)=4GiB", layout],
        in: directory)
    try #require(result.status == 0, "\(result.stderr)")
    return try JSONDecoder().decode(FlashPlan.self, from: Data(result.stdout.utf8))
}

/// The emulated board's `device` (in `storage`, the emulator's `--storage` folder) holds what
/// the plan of `layout` says: `sfdisk` reads the GPT stm32prog would write (names, starts, sizes,
/// types), and every `P` partition's file is at its offset, eMMC boot partitions in their own
/// images (`mmc1-boot1.img`). `lastToUsableEnd`: the fast path's script, which does not know the
/// card's size, gives the last partition `size=-`, so U-Boot's `gpt write` ends it at the last
/// usable block (lba − 34) instead of where stm32prog's own size computation ends it.
func expectStorageMatchesPlan(
    _ layout: String, storage: String, device name: String, lastToUsableEnd: Bool = false,
    in directory: ShortTemporaryDirectory
) async throws {
    let plan = try await boardPlan(layout, device: name, in: directory)
    let device = try #require(plan.devices.first { $0.ip == name })
    let imagePath = storage + "/\(name).img"
    let table = try await run("sfdisk", ["--json", imagePath], in: directory)
    try #require(table.status == 0, "\(table.stderr)")
    let written = try JSONDecoder().decode(SfdiskTable.self, from: Data(table.stdout.utf8)).partitiontable
    #expect(written.label == "gpt")
    let planned = device.partitions.filter { $0.gptNumber != nil }.sorted { $0.gptNumber! < $1.gptNumber! }
    try #require(!planned.isEmpty)
    #expect(written.partitions.map(\.name) == planned.map(\.name))
    #expect(written.partitions.map(\.start) == planned.map { $0.offset / 512 })
    var sizes = planned.map { $0.size.map { $0 / 512 } }
    if lastToUsableEnd, let last = planned.last {
        sizes[sizes.count - 1] = (4 << 30) / 512 - 34 - last.offset / 512 + 1
    }
    #expect(written.partitions.map { Optional($0.size) } == sizes)
    #expect(written.partitions.map { $0.type.uppercased() } == planned.map { $0.gptType?.uppercased() })

    let programmed = device.partitions.filter { $0.option == "P" }
    try #require(programmed.count >= 8, "the example layouts program at least 8 partitions")
    for partition in programmed {
        let file = try #require(partition.file, "\(partition.name) has a file")
        let expected = try Data(contentsOf: URL(fileURLWithPath: file))
        let path = partition.hardwarePartition.map { storage + "/\(name)-\($0).img" } ?? imagePath
        let image = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? image.close() }
        try image.seek(toOffset: UInt64(partition.offset))
        #expect(
            try image.read(upToCount: expected.count) == expected,
            "\(partition.name) holds \(file) at \(partition.offset) of \(path)")
    }
}

/// The parts of `plan --json` these tests compare with the board.
struct FlashPlan: Decodable {
    struct Device: Decodable {
        var ip: String
        var partitions: [Partition]
    }
    struct Partition: Decodable {
        var id: String
        var name: String
        var option: String
        var offset: Int
        var size: Int?
        var file: String?
        var gptType: String?
        var gptNumber: Int?
        /// `boot1`/`boot2` for eMMC boot partitions.
        var hardwarePartition: String?
        var alternate: String
    }
    var devices: [Device]
}

/// `sfdisk --json` of a disk image.
private struct SfdiskTable: Decodable {
    struct Table: Decodable {
        var label: String
        var partitions: [Partition]
    }
    struct Partition: Decodable {
        var start: Int
        var size: Int
        var type: String
        var name: String?
    }
    var partitiontable: Table
}

/// The identity fields of `board` and `reenumeration` events (others decode with them nil).
private struct IdentityEvent: Decodable {
    var event: String
    var port: String?
    var product: String?
    var serial: String?
}
