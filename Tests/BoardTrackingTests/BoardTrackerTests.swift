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

    @Test("an add event of the stage that left, still queued after its DETACH, is not taken for its return")
    func staleAddOfTheDepartedStage() async throws {
        let clock = SimulatedClock()
        let folder = try TemporaryDirectory()
        var timing = BoardTiming.zero
        timing.detachToDisconnect = .milliseconds(10)  // The ROM stays a moment after DETACH.
        timing.romToTFA = .milliseconds(100)
        let port = PortPath(bus: 1, ports: [1])
        let board = VirtualBoard(
            configuration: BoardConfiguration(
                soc: .mp13, serial: "000000000000000000000001", port: port, storageDirectory: folder.path,
                storage: [.sdCard("mmc0", size: 8 << 20)], timing: timing))
        let bus = VirtualUSBBus(clock: clock)
        let lease = try await BoardTracker(bus: bus).lease(.port(port))
        // The ROM's add reaches the lease, but the arrival finds the board by scanning first: the
        // add stays queued, as when udev's event comes after libusb's list already has the device.
        bus.plug(board)
        _ = try await lease.arrival(until: clock.now + .seconds(1))
        let rom = try await lease.open(until: clock.now + .seconds(1)).device
        _ = try await rom.download(MemoryByteSource(SampleImages.fsbl(for: .mp13)), phase: 0x01)
        #expect(try await rom.getPhase().needsDetach)
        try await rom.detach()
        await rom.transport.close()
        var stale: [HotplugEvent] = []
        let back = try #require(
            try await lease.reappearance(of: rom.identity, until: clock.now + .seconds(5)) { observation in
                if case .hotplug(let event) = observation, event.device.deviceAddress == rom.identity.deviceAddress,
                    event.action == .add
                {
                    stale.append(event)
                }
            })
        #expect(stale.count == 1, "the ROM's add was not queued: the race was not exercised")
        #expect(back.kind.stage == .tfa)
        #expect(back.device.identity.deviceAddress != rom.identity.deviceAddress)
    }

    @Test("every enumeration gets a new device number on the virtual bus, as the kernel gives")
    func newDeviceNumberPerEnumeration() async throws {
        let rig = try TwoBoards()
        let port = PortPath(bus: 1, ports: [1])
        let events = try await rig.bus.subscribe()
        var addresses = [try await rig.bus.openDFU(port: port).identity.deviceAddress]
        // ROM → TF-A → TF-A's DETACH → U-Boot: every stage is a new device object, the last one
        // freed before the next is made (the virtual bus must not number them by object identity).
        for phase: UInt8 in [0x01, 0x03] {
            var device: DFUDevice? = try await rig.bus.openDFU(port: port)
            let image = phase == 0x01 ? SampleImages.fsbl(for: .mp13) : SampleImages.fip()
            _ = try await device?.download(MemoryByteSource(image), phase: phase)
            _ = try await device?.getPhase()
            try await device?.detach()
            await device?.transport.close()
            device = nil
            while let event = try await events.next(until: rig.clock.now + .seconds(10)) {
                if event.action == .add, event.device.port == port {
                    addresses.append(event.device.deviceAddress)
                    break
                }
            }
        }
        #expect(addresses.count == 3)
        #expect(Set(addresses).count == addresses.count, "device numbers \(addresses)")
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
        var added: Duration?
        let tfa = try #require(
            try await lease.reappearance(of: rom.identity, until: rig.clock.now + .seconds(5)) { observation in
                if case .openFailed(let error, _, _) = observation { failures.append(error) }
                if case .hotplug(let event) = observation, event.action == .add { added = event.time }
            })
        #expect(tfa.kind.stage == .tfa)
        #expect(tfa.attempts > 1)
        #expect(!failures.isEmpty && failures.allSatisfy { $0.kind == .notFound })
        // The device list is polled every few milliseconds, not on a backoff that grows to
        // hundreds: the open (zero-latency board, simulated clock) follows the list's add within
        // one poll interval.
        let listed = try #require(added) + .milliseconds(80)
        #expect(rig.clock.now >= listed)
        #expect(
            rig.clock.now - listed <= LeaseTiming().maxListRetry,
            "opened \(rig.clock.now - listed) after the list had it")
    }
}
