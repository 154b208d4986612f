import BoardTracking
import DfuSe
import Diagnostics
import MCUEngine
import MCUImages
import TestSupport
import Testing
import Timekeeping
import USBModel
import VirtualBoard
import VirtualMCU

/// The MCU engine against virtual MCUs on the in-memory bus (simulated clock): the same session
/// code `stm32mp-flash mcu` runs, the bootloader state machine of AN3156 on the other side.
@Suite("MCU sessions on virtual MCUs")
struct VirtualMCUTests {
    struct Rig {
        let folder: TemporaryDirectory
        let mcu: VirtualMCU
        let bus: VirtualUSBBus
        let session: MCUSession

        init(_ family: MCUFamily, _ scenario: MCUScenario = .none, folder: TemporaryDirectory? = nil) throws {
            self.folder = try folder ?? TemporaryDirectory()
            mcu = try VirtualMCU(
                configuration: MCUConfiguration(family: family, scenario: scenario, memoryDirectory: self.folder.path))
            bus = VirtualUSBBus(clock: SimulatedClock(), boards: [mcu])
            session = MCUSession(bus: bus, selection: .any)
        }
    }

    static func image(_ bytes: [UInt8], at address: UInt64) -> MCUImage {
        MCUImage(format: .binary, segments: [MCUSegment(address: address, bytes: bytes)])
    }

    static func diagnosis(_ body: () async throws(MCUFailure) -> Void) async -> Diagnosis? {
        do {
            try await body()
            return nil
        } catch { return MCUDiagnoser.diagnose(error) }
    }

    @Test("each family: write, verify, read back; only the touched sectors are erased", arguments: MCUFamily.all)
    func writeReadBack(_ family: MCUFamily) async throws {
        let rig = try Rig(family)
        let flash = family.flash
        // Spans the first two erase units plus a little of the third.
        let length = Int(flash.sectors[0].size + flash.sectors[1].size) + 100
        let data = ImageTests.randomBytes(length, seed: UInt64(family.deviceID))
        let report = try await rig.session.write(Self.image(data, at: UInt64(flash.start)), verify: true)
        #expect(report.erased.map(\.address) == Array(flash.sectors.prefix(3).map(\.address)))
        #expect(report.verified)
        #expect(Array(rig.mcu.flashContent.prefix(length)) == data)
        #expect(rig.mcu.flashContent[length] == 0xFF)
        let back = try await rig.session.read(address: UInt64(flash.start), length: length)
        #expect(back == data)
    }

    @Test("memory persists in the folder: a later MCU (a later command) reads what an earlier one wrote")
    func persistence() async throws {
        let folder = try TemporaryDirectory()
        let data = ImageTests.randomBytes(5000, seed: 4)
        let first = try Rig(.g0, folder: folder)
        _ = try await first.session.write(Self.image(data, at: 0x0800_1000), verify: false)
        let second = try Rig(.g0, folder: folder)
        #expect(try await second.session.read(address: 0x0800_1000, length: 5000) == data)
    }

    @Test("the write costs fewer control transfers than dfu-util's shape (set address + block per chunk)")
    func transferShape() async throws {
        let rig = try Rig(.f746)
        let data = ImageTests.randomBytes(512 << 10, seed: 5)
        let report = try await rig.session.write(Self.image(data, at: 0x0800_0000), verify: false)
        let blocks = data.count / 2048
        // dfu-util 0.11: per chunk Set Address (DNLOAD + 2 GETSTATUS) and the data (DNLOAD + 2
        // GETSTATUS), plus 3 per erased sector.
        let dfuUtil = blocks * 6 + report.erased.count * 3
        #expect(report.controlTransfers < dfuUtil)
        #expect(rig.mcu.dataBlocksReceived == blocks)
    }

    @Test("app-dfu (F105 seed): writes accepted, nothing stored, readback differs → mcu-app-dfu")
    func appDFU() async throws {
        let rig = try Rig(.f105, .appDFU)
        let data = ImageTests.randomBytes(4096, seed: 6)
        let diagnosis = await Self.diagnosis { () async throws(MCUFailure) in
            _ = try await rig.session.write(Self.image(data, at: 0x0800_8000), verify: true)
        }
        #expect(diagnosis?.code == .mcuAppDFU)
        #expect(diagnosis?.evidence.contains { $0.contains("STM32 DownLoad Firmware Update") } == true)
        #expect(diagnosis?.evidence.contains { $0.contains("readback differs first at 0x08008000") } == true)
        #expect(rig.mcu.dataBlocksReceived == 2)
        #expect(rig.mcu.flashContent[0x8000] == 0xFF)
    }

    @Test("rdp1: a read is refused with errVENDOR → mcu-read-protected; unprotect erases, resets and is followed")
    func readProtection() async throws {
        let rig = try Rig(.f105, .rdp1)
        let diagnosis = await Self.diagnosis { () async throws(MCUFailure) in
            _ = try await rig.session.read(address: 0x0800_0000, length: 16)
        }
        #expect(diagnosis?.code == .mcuReadProtected)
        #expect(diagnosis?.nextSteps.first?.contains("erases all 256 KiB of flash") == true)
        let facts = try await rig.session.unprotect()
        #expect(facts.reenumerations == 1)
        #expect(facts.readProtected == false)
        #expect(rig.mcu.enumerationCount == 2)
        #expect(rig.mcu.flashContent.allSatisfy { $0 == 0xFF })
        let data = ImageTests.randomBytes(3000, seed: 8)
        _ = try await rig.session.write(Self.image(data, at: 0x0800_0000), verify: true)
    }

    @Test("H5: no Read Unprotect in Get; unprotect refuses before sending anything")
    func h5HasNoReadUnprotect() async throws {
        let rig = try Rig(.h562)
        await #expect(throws: MCUFailure.self) { _ = try await rig.session.unprotect() }
        #expect(rig.mcu.enumerationCount == 1)
    }

    @Test("write-protected: sectors 2–3 keep their content without an error → mcu-write-protected")
    func writeProtection() async throws {
        let rig = try Rig(.f746, .writeProtected)
        let data = ImageTests.randomBytes(160 << 10, seed: 10)
        let diagnosis = await Self.diagnosis { () async throws(MCUFailure) in
            _ = try await rig.session.write(Self.image(data, at: 0x0800_0000), verify: true)
        }
        #expect(diagnosis?.code == .mcuWriteProtected)
        #expect(diagnosis?.cause.contains("Writes to 0x08010000 did not take: sector 2") == true)
    }

    @Test("hse-misdetect (F746 seed): option-byte upload fails, the serial breaks the UID rule → mcu-usb-clock")
    func usbClock() async throws {
        let rig = try Rig(.f746, .hseMisdetect)
        let diagnosis = await Self.diagnosis { () async throws(MCUFailure) in
            _ = try await rig.session.readOptionBytes()
        }
        #expect(diagnosis?.code == .mcuUSBClock)
        #expect(diagnosis?.evidence.contains { $0.contains("does not follow the UID rule") } == true)
        #expect(diagnosis?.evidence.contains { $0.contains("uploading the option bytes failed") } == true)
    }

    @Test("overlapping data in one file programs a byte twice: readback differs → mcu-verify-mismatch")
    func verifyMismatch() async throws {
        let rig = try Rig(.g0)
        let image = MCUImage(
            format: .intelHex,
            segments: [
                MCUSegment(address: 0x0800_0000, bytes: [UInt8](repeating: 0x0F, count: 64)),
                MCUSegment(address: 0x0800_0020, bytes: [UInt8](repeating: 0xF0, count: 64)),
            ])
        let diagnosis = await Self.diagnosis { () async throws(MCUFailure) in
            _ = try await rig.session.write(image, verify: true)
        }
        #expect(diagnosis?.code == .mcuVerifyMismatch)
        #expect(diagnosis?.cause.contains("first at 0x08000020") == true)
    }

    @Test("option bytes: --set RDP writes the block, the chip resets, the session follows it by port")
    func optionByteWrite() async throws {
        let rig = try Rig(.f105)
        let data = ImageTests.randomBytes(2048, seed: 12)
        _ = try await rig.session.write(Self.image(data, at: 0x0800_0000), verify: true)
        let (before, after) = try await rig.session.writeOptionBytes(block: nil, changes: [("RDP", 0x00)])
        #expect(before[0] == 0xA5 && before[1] == 0x5A)
        #expect(after.reenumerations == 1)
        // Level 1 now: the bootloader refuses to upload even the option bytes.
        #expect(after.optionBytes == nil && after.optionBytesFailure?.isVendorError == true)
        #expect(rig.mcu.optionBytes[0] == 0x00 && rig.mcu.optionBytes[1] == 0xFF)
        await #expect(throws: MCUFailure.self) {
            _ = try await rig.session.writeOptionBytes(block: nil, changes: [("RDP", 0xA5)])
        }
        // A whole block is refused too (AN3156: writes refused under RDP level 1): only Read
        // Unprotect goes back, erasing the flash.
        let diagnosis = await Self.diagnosis { () async throws(MCUFailure) in
            _ = try await rig.session.writeOptionBytes(block: before, changes: [])
        }
        #expect(diagnosis?.code == .mcuReadProtected)
        let cleared = try await rig.session.unprotect()
        #expect(cleared.readProtected == false)
        #expect(Array(rig.mcu.flashContent.prefix(2048)) == [UInt8](repeating: 0xFF, count: 2048))
    }

    @Test("same-serial: the constant serial is reported, selection by serial cannot tell boards apart")
    func sameSerial() async throws {
        let folder = try TemporaryDirectory()
        let one = try VirtualMCU(
            configuration: MCUConfiguration(family: .f746, scenario: .sameSerial, memoryDirectory: folder.file("a")))
        let two = try VirtualMCU(
            configuration: MCUConfiguration(
                family: .f746, scenario: .sameSerial, port: PortPath(bus: 1, ports: [2]),
                memoryDirectory: folder.file("b")))
        let bus = VirtualUSBBus(clock: SimulatedClock(), boards: [one, two])
        var session = MCUSession(bus: bus, selection: .serial("STM32FxSTM32"))
        session.arrivalTimeout = .milliseconds(10)
        let diagnosis = await Self.diagnosis { () async throws(MCUFailure) in _ = try await session.info() }
        #expect(diagnosis?.code == .severalBoards)
        let byPort = MCUSession(bus: bus, selection: .port(PortPath(bus: 1, ports: [2])))
        #expect(try await byPort.info().identity?.port == PortPath(bus: 1, ports: [2]))
    }

    @Test("leases: a port another job holds is never opened; without --port the free MCU is taken")
    func leases() async throws {
        let folder = try TemporaryDirectory()
        let one = try VirtualMCU(
            configuration: MCUConfiguration(family: .f746, memoryDirectory: folder.file("a")))
        let two = try VirtualMCU(
            configuration: MCUConfiguration(
                family: .g0, port: PortPath(bus: 1, ports: [2]), memoryDirectory: folder.file("b")))
        let bus = VirtualUSBBus(clock: SimulatedClock(), boards: [one, two])
        let tracker = BoardTracker(bus: bus)
        // Another job of this process (a station, a second command) holds the F746.
        let other = try await tracker.lease(.port(one.port))
        _ = try await other.arrival(until: bus.clock.now + .seconds(1))
        let requestsBefore = one.requestCount

        var byPort = MCUSession(tracker: tracker, selection: .port(one.port))
        byPort.arrivalTimeout = .milliseconds(50)
        let diagnosis = await Self.diagnosis { () async throws(MCUFailure) in _ = try await byPort.info() }
        #expect(diagnosis?.code == .boardBusy)
        // Two MCUs are present, one held: "the only MCU" is the free one.
        let any = MCUSession(tracker: tracker, selection: .any)
        #expect(try await any.info().family == .g0)
        #expect(one.requestCount == requestsBefore, "the held MCU was spoken to")
        await other.release()
        #expect(try await byPort.info().family == .f746)
        // The session's lease was released after the command: the port is free for others.
        let again = try await tracker.lease(.port(one.port))
        _ = try await again.arrival(until: bus.clock.now + .seconds(1))
        await again.release()
    }

    @Test("erase: a range erases only the sectors it touches; a mass erase clears the whole flash")
    func eraseRangeAndMass() async throws {
        let rig = try Rig(.f746)
        let flash = MCUFamily.f746.flash
        let data = ImageTests.randomBytes(Int(flash.sectors[0].size * 3), seed: 16)
        _ = try await rig.session.write(Self.image(data, at: UInt64(flash.start)), verify: false)
        // 100 bytes across the end of sector 0 into sector 1: both go, sector 2 stays.
        let erased = try await rig.session.erase(
            range: (address: UInt64(flash.sectors[1].address) - 50, length: 100))
        #expect(erased.map(\.address) == [flash.sectors[0].address, flash.sectors[1].address])
        let size = Int(flash.sectors[0].size)
        #expect(rig.mcu.flashContent.prefix(2 * size).allSatisfy { $0 == 0xFF })
        #expect(Array(rig.mcu.flashContent[(2 * size)..<(3 * size)]) == Array(data[(2 * size)...]))
        let all = try await rig.session.erase(range: nil)
        #expect(all.count == flash.sectors.count)
        #expect(rig.mcu.flashContent.allSatisfy { $0 == 0xFF })
    }

    @Test("cancellation stops the erase loop between sectors: ends cancelled, later sectors untouched")
    func eraseCancellation() async throws {
        let rig = try Rig(.g0)
        let data = ImageTests.randomBytes(8 << 10, seed: 14)
        _ = try await rig.session.write(Self.image(data, at: 0x0800_0000), verify: false)
        let session = MCUSession(tracker: BoardTracker(bus: rig.bus), selection: .any) { event in
            // Stop as the second page's erase is announced (a Ctrl-C during it).
            // The callback runs on the command's task: cancel that task, as the SIGINT watcher does.
            if case .erasing(_, let index, _) = event, index == 1 { withUnsafeCurrentTask { $0?.cancel() } }
        }
        let task = Task { () async throws -> [DfuSeSector] in
            try await session.erase(range: (address: 0x0800_0000, length: 8 << 10))
        }
        let outcome = await task.result
        guard case .failure(let error) = outcome, let failure = error as? MCUFailure, case .cancelled = failure.kind
        else {
            Issue.record("the erase did not end cancelled: \(outcome)")
            return
        }
        #expect(MCUDiagnoser.diagnose(failure).code == .cancelled)
        // The first 2 KiB page was erased; the last two were never reached.
        #expect(rig.mcu.flashContent.prefix(2048).allSatisfy { $0 == 0xFF })
        #expect(Array(rig.mcu.flashContent[4096..<(8 << 10)]) == Array(data[4096...]))
    }

    @Test("leave: zero-length DNLOAD after Set Address; the bootloader jumps and leaves the bus")
    func leave() async throws {
        let rig = try Rig(.f746)
        try await rig.session.leave(address: 0x0800_0000)
        #expect(rig.mcu.jumpedTo == 0x0800_0000)
        _ = try await rig.bus.subscribeNow().next(until: rig.bus.clock.now + .milliseconds(10))
        #expect(try await rig.bus.dfuDevices().isEmpty)
    }

    @Test("classification: bootloader, application DFU, and an STM32MP ROM is no MCU")
    func classification() {
        let f746 = MCUFamily.f746
        let boot = MCUKind.classify(
            vendorID: 0x0483, productID: 0xDF11, bcdDevice: 0x2200, product: "STM32  BOOTLOADER",
            alternates: f746.alternates)
        #expect(boot == .systemBootloader(family: f746, version: 0x2200))
        let h7 = MCUKind.classify(
            vendorID: 0x0483, productID: 0xDF11, bcdDevice: 0x3000, product: "DFU in FS Mode",
            alternates: MCUFamily.h562.alternates)
        #expect(h7?.isApplication == false)
        let app = MCUKind.classify(
            vendorID: 0x0483, productID: 0xDF11, bcdDevice: 0x0200, product: "STM32 DownLoad Firmware Update",
            alternates: ["@Internal Flash   /0x08000000/08*002Ka,120*002Kg"])
        #expect(app?.isApplication == true)
        let rom = MCUKind.classify(
            vendorID: 0x0483, productID: 0xDF11, bcdDevice: 0x0200,
            product: "DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000",
            alternates: ["@Partition0 /0x00/1*256Ke", "@FSBL /0x01/1*1Me"])
        #expect(rom == nil)
    }
}
