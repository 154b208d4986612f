import BoardTracking
import DFU
import TestSupport
import Testing
import Timekeeping
import USBModel
import VirtualBoard
import VirtualBoardTestSupport

/// What a device is, from identities and alternate names seen on real hardware (protocol
/// reference §2.3, §3; STM32 MCU DfuSe reference).
@Suite("Board families")
struct BoardFamilyTests {
    func identity(_ product: String?, vendor: UInt16 = 0x0483, id: UInt16 = 0xDF11) -> USBDeviceIdentity {
        USBDeviceIdentity(
            port: PortPath(bus: 1, ports: [1]), busNumber: 1, deviceAddress: 3, vendorID: vendor, productID: id,
            bcdDevice: 0x0200, product: product)
    }

    @Test(arguments: [
        ("DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000", "rom"),
        ("DFU in FS Mode @Device ID /0x501, @Revision ID /0x1003", "rom"),
        ("DFU @Device ID /0x505, @Revision ID /0x0011, /STM32MP257FAI Rev.Y,", "tfa"),
        ("USB download gadget@Device ID /0x500, @Revision ID /0x2000, @Name /STM32MP157CAA Rev.B,", "uboot"),
        ("USB download gadget", "uboot-dfu"),
    ])
    func stm32mpStages(product: String, code: String) {
        let kind = BoardFamilies.standard.classify(identity(product), alternates: ["@FSBL /0x01/1*1Me"])
        #expect(kind.family == .stm32mp)
        #expect(kind.code == code)
        #expect(kind.stage?.rawValue == code)
    }

    @Test func fastbootIsAnSTM32MPStageWithoutDFU() {
        let kind = BoardFamilies.standard.classify(identity("Android Fastboot", id: 0x0AFB))
        #expect(kind.stage == .fastboot)
    }

    @Test("an MCU bootloader that says DFU in FS Mode is told apart by its memory-map alternates")
    func mcuInFSMode() {
        let mcu = BoardFamilies.standard.classify(
            identity("DFU in FS Mode"),
            alternates: [
                "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg", "@Option Bytes  /0x1FFFC000/01*016 e",
            ])
        #expect(mcu.family == .stm32MCU)
        #expect(mcu.code == "mcu-bootloader")
        #expect(mcu.stage == nil)
        #expect(mcu.refusal?.contains("not an STM32MP board") == true)
        // The MP ROM on a full-speed link has the same product string and phase alternates.
        let rom = BoardFamilies.standard.classify(
            identity("DFU in FS Mode @Device ID /0x501, @Revision ID /0x1003"),
            alternates: ["@FSBL /0x01/1*1Me", "@virtual /0xF1/1*512Ba"])
        #expect(rom.stage == .rom)
    }

    @Test func namedMCUBootloaderWithoutAlternates() {
        #expect(BoardFamilies.standard.classify(identity("STM32  BOOTLOADER")).family == .stm32MCU)
    }

    @Test func anythingElseIsUnknown() {
        #expect(BoardFamilies.standard.classify(identity("Some DFU gadget", vendor: 0x1D50, id: 0x6017)) == .unknown)
        #expect(BoardFamilies.standard.classify(identity(nil)) == .unknown)
    }

    /// A family from outside the target plugs in without touching the tracker.
    struct ApplicationDFU: BoardFamily {
        var name: BoardFamilyName { BoardFamilyName(rawValue: "app-dfu") }
        func classify(_ identity: USBDeviceIdentity, alternates: [String]) -> BoardClass? {
            identity.vendorID == 0x1209 ? BoardClass(family: name, code: "app", displayName: "application DFU") : nil
        }
    }

    @Test func familiesAreOpen() {
        let families = BoardFamilies([ApplicationDFU()] + BoardFamilies.standard.members)
        #expect(families.classify(identity("x", vendor: 0x1209, id: 1)).code == "app")
        #expect(families.classify(identity("USB download gadget@Device ID /0x500")).stage == .uboot)
    }
}

@Suite("Board tracker and leases on the virtual bus")
struct BoardTrackerTests {
    /// Boards on ports 1-1 and 1-2 of one simulated bus.
    struct TwoBoards {
        let clock = SimulatedClock()
        let folder: TemporaryDirectory
        let boards: [VirtualBoard]
        let bus: VirtualUSBBus
        let tracker: BoardTracker

        init(listLag: Duration = .zero) throws {
            let folder = try TemporaryDirectory()
            self.folder = folder
            boards = [1, 2].map { port in
                VirtualBoard(
                    configuration: BoardConfiguration(
                        soc: .mp13, serial: "00000000000000000000000\(port)", port: PortPath(bus: 1, ports: [port]),
                        storageDirectory: folder.path + "/board\(port)", storage: [.sdCard("mmc0", size: 8 << 20)],
                        timing: .zero))
            }
            bus = VirtualUSBBus(clock: clock, boards: boards, listLag: listLag)
            tracker = BoardTracker(bus: bus)
        }
    }

    @Test("every subscriber sees every event: nobody takes another's")
    func eventsAreMulticast() async throws {
        let rig = try TwoBoards()
        let first = try await rig.bus.subscribe()
        let second = try await rig.bus.subscribe()
        let rom = try await rig.bus.openDFU(port: PortPath(bus: 1, ports: [1]))
        _ = try await rom.download(MemoryByteSource(SampleImages.fsbl(for: .mp13)), phase: 0x01)
        _ = try await rom.getPhase()
        try await rom.detach()
        let deadline = rig.clock.now + .seconds(10)
        var seen: [[HotplugEvent.Action]] = [[], []]
        for (index, subscription) in [first, second].enumerated() {
            while seen[index].count < 2, let event = try await subscription.next(until: deadline) {
                seen[index].append(event.action)
            }
        }
        #expect(seen[0] == [.remove, .add])
        #expect(seen[1] == seen[0])
    }

    @Test("a leased port is never handed to another lease; .only skips held boards")
    func leasesAreExclusive() async throws {
        let rig = try TwoBoards()
        let one = PortPath(bus: 1, ports: [1])
        let a = try await rig.tracker.lease(.port(one))
        #expect(try await a.arrival(until: rig.clock.now + .seconds(1)).identity.port == one)
        let b = try await rig.tracker.lease(.port(one))
        await #expect(throws: TrackingError.leasedElsewhere(one)) {
            _ = try await b.arrival(until: rig.clock.now + .seconds(1))
        }
        let c = try await rig.tracker.lease(.only(.stm32mp))
        #expect(try await c.arrival(until: rig.clock.now + .seconds(1)).identity.port == PortPath(bus: 1, ports: [2]))
        let d = try await rig.tracker.lease(.only(.stm32mp))
        await #expect(throws: TrackingError.noBoard(waited: .seconds(2))) {
            _ = try await d.arrival(until: rig.clock.now + .seconds(2))
        }
        let held = try await rig.tracker.devices().filter(\.leased).map(\.identity.port)
        #expect(held == [one, PortPath(bus: 1, ports: [2])])
        await a.release()
        #expect(try await b.arrival(until: rig.clock.now + .seconds(1)).identity.port == one)
    }

    @Test("two free boards and no choice: several boards")
    func onlyWithTwoBoards() async throws {
        let rig = try TwoBoards()
        let lease = try await rig.tracker.lease(.only(.stm32mp))
        await #expect(throws: TrackingError.self) { _ = try await lease.arrival(until: rig.clock.now + .seconds(1)) }
    }

    @Test("udev reports the board before the device list has it: the open is retried, not lost")
    func openRacesTheDeviceList() async throws {
        let rig = try TwoBoards(listLag: .milliseconds(80))
        let port = PortPath(bus: 1, ports: [1])
        let lease = try await rig.tracker.lease(.port(port))
        _ = try await lease.arrival(until: rig.clock.now + .seconds(1))
        let rom = try await lease.open(until: rig.clock.now + .seconds(1)).device
        _ = try await rom.download(MemoryByteSource(SampleImages.fsbl(for: .mp13)), phase: 0x01)
        #expect(try await rom.getPhase().needsDetach)
        try await rom.detach()
        var failures: [USBTransferError] = []
        let tfa = try #require(
            try await lease.reappearance(of: rom.identity, until: rig.clock.now + .seconds(5)) { observation in
                if case .openFailed(let error, _, _) = observation { failures.append(error) }
            })
        #expect(tfa.kind.stage == .tfa)
        #expect(tfa.attempts > 1)
        #expect(!failures.isEmpty && failures.allSatisfy { $0.kind == .notFound })
    }
}
