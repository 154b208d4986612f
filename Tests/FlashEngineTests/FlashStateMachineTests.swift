import BoardTracking
import DFU
import FlashEngine
import FlashLayout
import Testing

/// Table-driven tests of the pure state machine: no clock, no USB.
@Suite("flash state machine")
struct FlashStateMachineTests {
    static let layout = """
        -\t0x01\tfsbl-boot\tBinary\tnone\t0x0\tf
        -\t0x02\tfip-ddr\tFIP\tnone\t0x0\tf
        -\t0x03\tfip-boot\tFIP\tnone\t0x0\tf
        P\t0x04\tfsbl1\tBinary\tmmc0\t0x4400\tf
        PE\t0x05\tempty\tBinary\tmmc0\t0x44400\tnone
        P\t0x10\trootfs\tFileSystem\tmmc0\t0x84400\tf

        """

    /// A plan whose every file exists (this test file itself stands in for all of them).
    static func plan() throws -> PartitionPlan {
        let lines = try UBootLayout.parse(Array(layout.utf8)).get().map { line -> LayoutLine in
            var line = line
            if line.binary == "f" { line.binary = #filePath }
            return line
        }
        return try PartitionPlanner.plan(lines).get()
    }

    func reply(_ phase: UInt8, address: UInt32 = 0xFFFF_FFFF, detach: Bool = false, message: String? = nil)
        -> GetPhaseReply
    {
        var bytes: [UInt8] = [phase] + withUnsafeBytes(of: address.littleEndian, Array.init) + [0, 0, 0, 0]
        if phase == 0 { bytes.append(detach ? 1 : 0) }
        if let message { bytes += Array(message.utf8) }
        do {
            return try GetPhaseReply(bytes: bytes)
        } catch {
            preconditionFailure("test reply \(bytes) does not decode: \(error)")
        }
    }

    let rom = BoardSnapshot(stage: .rom, phases: [0x01, 0xF1])
    let tfa = BoardSnapshot(stage: .tfa, phases: [0x02, 0x03, 0xF1])
    let uboot1 = BoardSnapshot(stage: .uboot, phases: [0x00, 0xF1])
    let uboot2 = BoardSnapshot(stage: .uboot, phases: [0x04, 0x05, 0x10, 0xF1])

    @Test("an MP25 run: ROM → TF-A (DDR) → TF-A (FIP) → U-Boot ×2 → END, each step from GetPhase")
    func mp25() throws {
        var m = FlashStateMachine(plan: try Self.plan())
        let timeouts = TransitionTimeouts()
        #expect(m.boardOpened(rom) == .readPhase)
        #expect(m.phaseRead(reply(0x01)) == .send(phase: 0x01, deviceMayLeave: true))
        #expect(m.phaseSent() == .readPhase)
        #expect(m.phaseRead(reply(0x00, detach: true)) == .detachAndAwait(expecting: .tfa, timeout: timeouts.romToTFA))
        #expect(m.boardOpened(tfa) == .readPhase)
        #expect(m.phaseRead(reply(0x02, address: 0x0E00_0000)) == .send(phase: 0x02, deviceMayLeave: false))
        #expect(m.phaseSent() == .readPhase)
        #expect(
            m.phaseRead(reply(0x00, detach: true)) == .detachAndAwait(expecting: .tfa, timeout: timeouts.tfaReconnect))
        #expect(m.boardOpened(tfa) == .readPhase)
        #expect(m.phaseRead(reply(0x03, address: 0x8700_0000)) == .send(phase: 0x03, deviceMayLeave: false))
        #expect(m.phaseSent() == .readPhase)
        #expect(
            m.phaseRead(reply(0x00, detach: true)) == .detachAndAwait(expecting: .uboot, timeout: timeouts.tfaToUBoot))
        #expect(m.boardOpened(uboot1) == .readPhase)
        #expect(m.phaseRead(reply(0x00, address: 0xC200_0000)) == .send(phase: 0x00, deviceMayLeave: false))
        #expect(m.phaseSent() == .readPhase)
        #expect(
            m.phaseRead(reply(0x00, address: 0xC200_0000, detach: true))
                == .detachAndAwait(expecting: .uboot, timeout: timeouts.ubootReenumeration))
        #expect(m.boardOpened(uboot2) == .readPhase)
        for id: UInt8 in [0x04, 0x10] {
            #expect(m.phaseRead(reply(id)) == .send(phase: id, deviceMayLeave: false))
            #expect(m.phaseSent() == .readPhase)
        }
        #expect(m.phaseRead(reply(0xFE)) == .detachAtEnd)
        #expect(m.endDetached() == .succeed)
        #expect(m.sent == [0x01, 0x02, 0x03, 0x00, 0x04, 0x10])
    }

    @Test("MP15: the ROM hands over to TF-A in one session; GetPhase phase 3 confirms TF-A")
    func mp15InPlace() throws {
        var m = FlashStateMachine(plan: try Self.plan())
        _ = m.boardOpened(BoardSnapshot(stage: .rom, phases: [0x00, 0x01, 0x02, 0x03, 0x04, 0xF1]))
        _ = m.phaseRead(reply(0x01))
        _ = m.phaseSent()
        #expect(m.phaseRead(reply(0x03, address: 0xC700_0000)) == .send(phase: 0x03, deviceMayLeave: false))
        #expect(m.stage == .tfa)
        _ = m.phaseSent()
        #expect(
            m.phaseRead(reply(0x00, detach: true))
                == .detachAndAwait(expecting: .uboot, timeout: TransitionTimeouts().tfaToUBoot))
    }

    @Test("ST TF-A v2.4 asks for the layout first: sent, then the FIP")
    func layoutFirst() throws {
        var m = FlashStateMachine(plan: try Self.plan())
        _ = m.boardOpened(BoardSnapshot(stage: .rom, phases: [0x00, 0x01, 0x03, 0xF1]))
        _ = m.phaseRead(reply(0x01))
        _ = m.phaseSent()
        #expect(m.phaseRead(reply(0x00, address: 0xC000_0000)) == .send(phase: 0x00, deviceMayLeave: false))
        #expect(m.stage == .tfa)
        _ = m.phaseSent()
        #expect(m.phaseRead(reply(0x03, address: 0xC700_0000)) == .send(phase: 0x03, deviceMayLeave: false))
    }

    @Test(
        "failures",
        arguments: [
            (
                "0xFF carries the board's message", [UInt8(0xFF)],
                FlashFailure.Reason.boardReportedError("Layout line 3: invalid offset 'x'")
            ),
            ("a phase the layout has no file for", [0x20], .phaseWithoutFile(0x20)),
            ("a phase without an alternate", [0x03], .missingAlternate(0x03)),
            ("the same phase asked again", [0x04, 0x04], .phaseRepeated(0x04)),
        ])
    func failures(_ name: String, phases: [UInt8], expected: FlashFailure.Reason) throws {
        var m = FlashStateMachine(plan: try Self.plan())
        _ = m.boardOpened(BoardSnapshot(stage: .uboot, phases: [0x04, 0x10, 0xF1]))
        var action: FlashStateMachine.Action = .readPhase
        for phase in phases {
            action = m.phaseRead(reply(phase, message: phase == 0xFF ? "Layout line 3: invalid offset 'x'" : nil))
            if case .send = action { action = m.phaseSent() }
        }
        #expect(action == .fail(expected))
    }

    @Test("END before every selected partition was asked for is a failure, not success")
    func incomplete() throws {
        var m = FlashStateMachine(plan: try Self.plan())
        _ = m.boardOpened(uboot2)
        _ = m.phaseRead(reply(0x04))
        _ = m.phaseSent()
        #expect(m.phaseRead(reply(0xFE)) == .fail(.incomplete([0x10])))
    }

    @Test("the ROM reappearing after a DETACH is a failure")
    func romCameBack() throws {
        var m = FlashStateMachine(plan: try Self.plan())
        _ = m.boardOpened(tfa)
        _ = m.phaseRead(reply(0x03))
        _ = m.phaseSent()
        _ = m.phaseRead(reply(0x00, detach: true))
        #expect(m.boardOpened(rom) == .fail(.unexpectedIdentity(.rom)))
    }

    @Test("a timeout while waiting reports the wait")
    func timeout() throws {
        var m = FlashStateMachine(plan: try Self.plan())
        _ = m.boardOpened(tfa)
        _ = m.phaseRead(reply(0x03))
        _ = m.phaseSent()
        _ = m.phaseRead(reply(0x00, detach: true))
        #expect(m.expectedStage == .uboot)
        #expect(m.reconnectTimedOut(after: .seconds(30)) == .fail(.reconnectTimeout(waited: .seconds(30))))
    }
}
