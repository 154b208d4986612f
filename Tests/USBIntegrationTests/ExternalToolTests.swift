import Foundation
import Testing

/// The emulated board as unmodified programs see it: dfu-util, lsusb and our own CLI, each run as
/// the emulator's command or with only LD_PRELOAD and UMOCKDEV_DIR set.
@Suite struct ExternalToolTests {
    static let romSerial = "002800423232511538303631"
    static let altName = "@fixed-dfu /0x00/1*1Me"

    @Test func dfuUtilListsTheEmulatedDevice() async throws {
        let directory = try ShortTemporaryDirectory()
        let result = try await runUnderEmulator(["dfu-util", "-l"], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        let found = result.lines.filter { $0.hasPrefix("Found DFU:") }
        #expect(
            found == [
                "Found DFU: [0483:df11] ver=0200, devnum=2, cfg=1, intf=0, path=\"1-1\", alt=0, name=\"\(Self.altName)\", serial=\"\(Self.romSerial)\""
            ], "\(result.stdout)")
    }

    @Test(arguments: [("mp15", "0x500"), ("mp13", "0x501"), ("mp25", "0x505")])
    func lsusbShowsIdentityStringsAndFunctionalDescriptor(soc: String, chipID: String) async throws {
        let directory = try ShortTemporaryDirectory()
        let result = try await runUnderEmulator(
            ["lsusb", "-v", "-d", "0483:df11"], options: ["--soc", soc, "--transfer-size", "4096"], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        let fields = result.lines.map {
            $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        }
        #expect(
            fields.contains(
                "Bus 001 Device 002: ID 0483:df11 STMicroelectronics DFU in HS Mode @Device ID /\(chipID), @Revision ID /0x0000"
            ))
        #expect(fields.contains("iManufacturer 1 STMicroelectronics"))
        #expect(fields.contains("iSerial 3 \(Self.romSerial)"))
        #expect(fields.contains("iInterface 4 \(Self.altName)"))
        #expect(fields.contains("bInterfaceClass 254"))
        #expect(fields.contains("wTransferSize 4096 bytes"))
        #expect(fields.contains("bcdDFUVersion 1.10"))
    }

    @Test func listJSONAgreesWithDfuUtil() async throws {
        let directory = try ShortTemporaryDirectory()
        let list = try await runUnderEmulator(
            [try builtExecutable("stm32mp-flash"), "list", "--json"], options: ["--soc", "mp13"], in: directory)
        #expect(list.status == 0, "\(list.stderr)")
        try #require(list.lines.count == 1, "\(list.stdout)")
        let device = try JSONDecoder().decode(ListedDevice.self, from: Data(list.lines[0].utf8))
        #expect(device.port == "1-1")
        #expect(device.bus == 1 && device.device == 2)
        #expect(device.vendorProduct == "0483:df11")
        #expect(device.stage == "rom" && device.stageName == "ROM code")
        #expect(device.chip == "mp13")
        #expect(device.product == "DFU in HS Mode @Device ID /0x501, @Revision ID /0x0000")
        #expect(device.speed == "high")
        // The same facts through dfu-util, a different libusb client.
        let dfuUtil = try await runUnderEmulator(["dfu-util", "-l"], options: ["--soc", "mp13"], in: directory)
        let found = try #require(dfuUtil.lines.first { $0.hasPrefix("Found DFU:") })
        #expect(found.contains("path=\"\(device.port)\""))
        #expect(found.contains("devnum=\(device.device)"))
        #expect(found.contains("serial=\"\(device.serial ?? "none")\""))
        #expect(device.alternates?.map(\.name) == [Self.altName])
        #expect(found.contains("alt=\(device.alternates?.first?.alternate ?? 99), name=\"\(Self.altName)\""))
    }

    /// A board behind a hub: the emulator adds the hubs on the way, so libusb's port numbers
    /// (from the parent chain) give the full path.
    @Test func nestedPortPathComesThroughTheHubs() async throws {
        let directory = try ShortTemporaryDirectory()
        let dfuUtil = try await runUnderEmulator(["dfu-util", "-l"], options: ["--port", "1-2.3"], in: directory)
        let found = try #require(dfuUtil.lines.first { $0.hasPrefix("Found DFU:") }, "\(dfuUtil.stdout)")
        #expect(found.contains("devnum=3, cfg=1, intf=0, path=\"1-2.3\""), "root hub 1, hub 2, board 3")
        let list = try await runUnderEmulator(
            [try builtExecutable("stm32mp-flash"), "list", "--json"], options: ["--port", "1-2.3"], in: directory)
        try #require(list.lines.count == 1, "\(list.stdout)")
        let device = try JSONDecoder().decode(ListedDevice.self, from: Data(list.lines[0].utf8))
        #expect(device.port == "1-2.3" && device.device == 3)
        let lsusb = try await runUnderEmulator(["lsusb"], options: ["--port", "1-2.3"], in: directory)
        #expect(lsusb.lines.contains { $0.hasPrefix("Bus 001 Device 002: ID 05e3:0608") })
        #expect(lsusb.lines.contains { $0.hasPrefix("Bus 001 Device 001: ID 1d6b:0002") })
    }

    @Test func listTextShowsStageChipAndAlternates() async throws {
        let directory = try ShortTemporaryDirectory()
        let list = try await runUnderEmulator([try builtExecutable("stm32mp-flash"), "list"], in: directory)
        #expect(list.status == 0, "\(list.stderr)")
        #expect(
            list.lines == [
                "1-1  bus 1 dev 2  0483:df11  ROM code (mp15)  serial \(Self.romSerial)  high speed",
                "    alt 0: \(Self.altName)",
            ])
    }

    @Test func watchJSONShowsReenumerationAsRemoveThenAdd() async throws {
        let directory = try ShortTemporaryDirectory()
        let emulator = try await ServingEmulator(in: directory)
        // The limits only stop a hang: watch returns at its second event, whatever the load.
        let watch = try start(
            try builtExecutable("stm32mp-flash"), ["watch", "--json", "--count", "2", "--timeout", "300"],
            environment: emulator.environment, in: directory)
        // The monitor is open once watch says so; only then trigger the re-enumeration.
        await waitUntil(timeout: 300) { watch.stderrSoFar.contains("Watching") || !watch.process.isRunning }
        try #require(watch.process.isRunning, "watch ended before watching: \(watch.stderrSoFar)")
        emulator.reenumerate()
        let result = try await watch.wait(timeout: 300)
        let emulatorResult = try await emulator.stop()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(emulatorResult.status == 0, "\(emulatorResult.stderr)")
        let events = try result.lines.map { try JSONDecoder().decode(WatchedEvent.self, from: Data($0.utf8)) }
        try #require(events.count == 2, "\(result.stdout)")
        let (removed, added) = (events[0], events[1])
        #expect(removed.action == "remove" && added.action == "add")
        #expect(removed.device.port == "1-1" && added.device.port == "1-1")
        #expect(removed.device.stage == "rom" && added.device.stage == "uboot")
        #expect(removed.device.serial == Self.romSerial)
        #expect(added.device.serial != nil && added.device.serial != removed.device.serial)
        #expect(added.device.device != removed.device.device, "a new enumeration gets a new device number")
        #expect(removed.time <= added.time)
    }

    @Test func watchWithoutEventsStopsAtTheTimeoutAndFailsTheCount() async throws {
        let directory = try ShortTemporaryDirectory()
        let result = try await runUnderEmulator(
            [try builtExecutable("stm32mp-flash"), "watch", "--json", "--count", "1", "--timeout", "0.5"], in: directory
        )
        #expect(result.status == 1, "exit 1: fewer events than --count; \(result.stderr)")
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.contains("Watching USB devices"))
    }
}

/// `list --json` / `watch --json` device objects, decoded independently of the CLI's own types.
struct ListedDevice: Decodable {
    struct Alternate: Decodable {
        var interface: Int
        var alternate: Int
        var name: String?
    }

    var port: String
    var bus: Int
    var device: Int
    var vendorProduct: String
    var stage: String
    var stageName: String
    var chip: String?
    var manufacturer: String?
    var product: String?
    var serial: String?
    var speed: String
    var alternates: [Alternate]?
}

struct WatchedEvent: Decodable {
    var action: String
    var time: Double
    var device: ListedDevice
}
