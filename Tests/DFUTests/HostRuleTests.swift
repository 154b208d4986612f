import DFU
import Synchronization
import TestSupport
import Testing
import Timekeeping
import USBModel
import VirtualBoard
import VirtualBoardTestSupport

typealias Rig = VirtualBoardBench

/// What the host-rule tests read from a run.
extension VirtualBoardBench {
    /// Waits for the next device to appear on the board's port.
    func waitForDevice() async throws -> DFUDevice {
        try #require(try await bus.waitForDFU(port: board.port, timeout: .seconds(60), events: events))
    }

    /// GETSTATUS answers (bState) in the order the board sent them.
    var statusStates: [UInt8] {
        board.trace.filter { $0.isDFU(DFURequest.getStatus) }.compactMap { entry in
            if case .ok(let bytes) = entry.reply.outcome, bytes.count == 6 { return bytes[4] }
            return nil
        }
    }

    /// (wValue, data length) of every DNLOAD.
    var downloads: [(block: UInt16, length: Int)] {
        board.trace.filter { $0.isDFU(DFURequest.download) }.map { ($0.setup.value, $0.dataLength) }
    }

    func count(_ request: UInt8) -> Int { board.trace.filter { $0.isDFU(request) }.count }

    /// MP15 ROM → TF-A (in place) → FIP → DETACH → U-Boot enumeration 1.
    func bootMP15ToUBoot() async throws -> DFUDevice {
        let rom = try await open()
        _ = try await rom.download(MemoryByteSource(SampleImages.fsbl()), phase: 0x01, deviceMayLeave: true)
        _ = try await rom.download(MemoryByteSource(SampleImages.fip()), phase: 0x03)
        #expect(try await rom.getPhase().needsDetach)
        try await rom.detach()
        return try await waitForDevice()
    }
}

@Suite("Host rules of §1.2 against the virtual firmwares")
struct HostRuleTests {
    @Test("rules 3 and 4 on the MP15 ROM: blocks 0,1,2 + numbered ZLP, dfuDNBUSY waited out on the clock")
    func romBlocksAndPollTimeout() async throws {
        let rig = try Rig()
        let device = try await rig.open()
        let report = try await device.download(
            MemoryByteSource(SampleImages.fsbl(payloadSize: 2744)), phase: 0x01, deviceMayLeave: true)
        #expect(report.bytes == 3000)
        #expect(report.blocks == 3)
        #expect(rig.downloads.map(\.block) == [0, 1, 2, 3])
        #expect(rig.downloads.map(\.length) == [1024, 1024, 952, 0])
        // Each block: dfuDNBUSY with bwPollTimeout, then (after the host slept) dfuDNLOAD-IDLE.
        #expect(rig.statusStates.suffix(8) == [4, 5, 4, 5, 4, 5, 7, 2])
        #expect(rig.clock.now >= .milliseconds(6))
        #expect(rig.board.protocolViolations.isEmpty)
        #expect(rig.count(DFURequest.clearStatus) == 0)
        // The MP15 ROM started TF-A in the same USB session.
        #expect(rig.board.stage == .tfa)
        let phase = try await device.getPhase()
        #expect(phase.phase == 0x03)
        #expect(phase.address == 0xC700_0000)
    }

    @Test("rule 3 with bcdDFUVersion 0x011A: data starts at block 2, and 0-based numbering is refused")
    func dfuSeNumbering() async throws {
        let rig = try Rig { $0.romDFUVersion = 0x011A }
        let device = try await rig.open()
        #expect(device.firstBlockNumber == 2)
        _ = try await device.download(
            MemoryByteSource(SampleImages.fsbl(payloadSize: 1800)), phase: 0x01, deviceMayLeave: true)
        #expect(rig.downloads.map(\.block) == [2, 3, 4, 5])
        #expect(rig.downloads.map(\.length) == [1024, 1024, 8, 0])
        #expect(rig.board.protocolViolations.isEmpty)

        let other = try Rig { $0.romDFUVersion = 0x011A }
        let transport = try await other.bus.open(port: other.board.port)
        try await transport.setAlternate(interface: 0, alternate: 1)
        let block0 = SetupPacket(requestType: 0x21, request: DFURequest.download, value: 0, index: 0, length: 1024)
        await #expect(throws: USBTransferError(.stall, operation: "DFU_DNLOAD")) {
            try await transport.controlOut(block0, data: Array(SampleImages.fsbl().prefix(1024)), timeout: .seconds(1))
        }
        #expect(other.board.protocolViolations == ["DFU_DNLOAD block 0, expected 2"])
    }

    @Test("rule 2: chunk = wTransferSize rounded down to a multiple of bMaxPacketSize0")
    func chunkRounding() async throws {
        let rig = try Rig { $0.romTransferSize = 1000 }
        let device = try await rig.open()
        #expect(device.functional.transferSize == 1000)
        #expect(device.chunkSize == 960)
        _ = try await device.download(
            MemoryByteSource(SampleImages.fsbl(payloadSize: 2000)), phase: 0x01, deviceMayLeave: true)
        #expect(rig.downloads.map(\.length) == [960, 960, 336, 0])
    }

    @Test("rule 4 on TF-A: bState 3 then 5 for every block; manifestation 7 then dfuIDLE")
    func tfaStatusSequence() async throws {
        let rig = try Rig { $0.soc = .mp13 }
        let rom = try await rig.open()
        #expect(rom.alternate(forPhase: 0x01)?.alternateSetting == 0)
        _ = try await rom.download(MemoryByteSource(SampleImages.fsbl(for: .mp13)), phase: 0x01)
        let afterFSBL = try await rom.getPhase()
        #expect(afterFSBL.bytes == [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0x01])
        try await rom.detach()
        let tfa = try await rig.waitForDevice()
        #expect(tfa.identity.product?.hasPrefix("DFU @Device ID /0x501") == true)
        let before = rig.statusStates.count
        _ = try await tfa.download(MemoryByteSource(SampleImages.fip(payloadSize: 2000)), phase: 0x03)
        #expect(Array(rig.statusStates.dropFirst(before)) == [2, 3, 5, 3, 5, 3, 5, 7, 2])
        #expect(rig.board.protocolViolations.isEmpty)
        #expect(try await tfa.getPhase().needsDetach)
    }

    @Test("rule 6: CLRSTATUS only from dfuERROR, exactly once")
    func clearStatusOnlyInError() async throws {
        let rig = try Rig()
        let transport = try await rig.bus.open(port: rig.board.port)
        try await transport.setAlternate(interface: 0, alternate: 5)
        // The legacy stack answers UPLOAD block 0 only: block 1 puts it in dfuERROR.
        let badUpload = SetupPacket(requestType: 0xA1, request: DFURequest.upload, value: 1, index: 0, length: 512)
        await #expect(throws: USBTransferError.self) {
            _ = try await transport.controlIn(badUpload, timeout: .seconds(1))
        }
        let device = try await rig.open()
        _ = try await device.download(MemoryByteSource(SampleImages.fsbl()), phase: 0x01, deviceMayLeave: true)
        #expect(rig.count(DFURequest.clearStatus) == 1)
        #expect(rig.board.protocolViolations.isEmpty)
        #expect(rig.board.stage == .tfa)
    }

    @Test("U-Boot: checked block numbers from 0, numbered ZLP, GETSTATUS 7 then dfuIDLE after the ZLP")
    func ubootNumbering() async throws {
        let rig = try Rig()
        let uboot = try await rig.bootMP15ToUBoot()
        #expect(uboot.functional.transferSize == 4096)
        let start = rig.downloads.count
        let layout = SampleImages.pattern(5000, seed: 1)
        _ = try await uboot.download(MemoryByteSource(layout), phase: 0x00)
        #expect(rig.downloads.dropFirst(start).map(\.block) == [0, 1, 2])
        #expect(rig.downloads.dropFirst(start).map(\.length) == [4096, 904, 0])
        #expect(rig.statusStates.suffix(4) == [5, 5, 7, 2])
        #expect(rig.board.protocolViolations.isEmpty)
    }

    @Test("U-Boot: a wrong sequence number is a device error; in enumeration 1 GetPhase does not report it")
    func ubootWrongSequence() async throws {
        let rig = try Rig()
        let uboot = try await rig.bootMP15ToUBoot()
        let transport = uboot.transport
        try await transport.setAlternate(interface: 0, alternate: 0)
        let block = SetupPacket(requestType: 0x21, request: DFURequest.download, value: 2, index: 0, length: 16)
        try await transport.controlOut(block, data: [UInt8](repeating: 0x41, count: 16), timeout: .seconds(1))
        let status = try await uboot.getStatus()
        #expect(status.state == .error)
        #expect(status.status == 0x0E)
        // dfu_error_callback() only reports errors on the current partition's alternate, and
        // enumeration 1 has no current partition (stm32prog.c): GetPhase still asks for the layout.
        let phase = try await uboot.getPhase()
        #expect(phase.phase == 0x00)
        #expect(phase.message == nil)
        #expect(rig.board.consoleLog.contains("dfu_write: Wrong sequence number! [0] [2]"))
        #expect(rig.board.protocolViolations == ["DFU_DNLOAD block 2, expected 0"])
    }

    @Test("GetPhase is UPLOAD block 0, wLength 512, on the 0xF1 alternate")
    func getPhaseRequest() async throws {
        let rig = try Rig()
        let device = try await rig.open()
        let reply = try await device.getPhase()
        #expect(reply.phase == 0x01)
        let upload = try #require(rig.board.trace.last { $0.isDFU(DFURequest.upload) })
        #expect(upload.setup.value == 0)
        #expect(upload.setup.length == 512)
        let select = try #require(rig.board.trace.last { $0.setup.request == USBRequest.setInterface })
        #expect(select.setup.value == 5)
    }

    @Test("rule 5, MP15: the device may stop answering after FSBL manifestation")
    func deviceMayLeave() async throws {
        let tolerant = try Rig { $0.mp15ROMStatusFailsAfterFSBL = true }
        let device = try await tolerant.open()
        let report = try await device.download(MemoryByteSource(SampleImages.fsbl()), phase: 0x01, deviceMayLeave: true)
        #expect(report.bytes == Int64(SampleImages.fsbl().count))
        #expect(try await device.getPhase().phase == 0x03)

        let strict = try Rig { $0.mp15ROMStatusFailsAfterFSBL = true }
        let other = try await strict.open()
        await #expect {
            _ = try await other.download(MemoryByteSource(SampleImages.fsbl()), phase: 0x01)
        } throws: { error in
            (error as? DFUError)?.transferError?.kind == .io
        }
    }

    @Test("no alternate for a phase is reported by ID")
    func noAlternate() async throws {
        let rig = try Rig()
        let device = try await rig.open()
        await #expect(throws: DFUError(.noAlternate(phase: 0x42), operation: "download of phase 0x42")) {
            _ = try await device.download(MemoryByteSource([1, 2, 3]), phase: 0x42)
        }
    }

    @Test("DETACH is tolerated when the device vanishes; TF-A leaves the bus")
    func detachTolerated() async throws {
        let rig = try Rig { $0.soc = .mp13 }
        let rom = try await rig.open()
        _ = try await rom.download(MemoryByteSource(SampleImages.fsbl(for: .mp13)), phase: 0x01)
        _ = try await rom.getPhase()
        try await rom.detach()
        let removed = try await rig.events.next(until: rig.clock.now + .seconds(1))
        #expect(removed?.action == .remove)
        // Talking to the vanished ROM now fails as "no device"; DETACH still counts as done.
        try await rom.detach()
        await #expect(throws: DFUError.self) { _ = try await rom.getPhase() }
        #expect(rom.controlTransferCount > 0)
    }

    @Test("download streams block by block, reports progress and counts every control transfer")
    func progressAndCounts() async throws {
        let rig = try Rig()
        let device = try await rig.open()
        #expect(device.controlTransferCount == rig.board.trace.count)
        let before = rig.board.trace.count
        let seen = Mutex<[Int64]>([])
        let report = try await device.download(
            MemoryByteSource(SampleImages.fsbl(payloadSize: 2744)), phase: 0x01, deviceMayLeave: true
        ) { bytes in seen.withLock { $0.append(bytes) } }
        #expect(seen.withLock { $0 } == [1024, 2048, 3000])
        // SET_INTERFACE, GETSTATUS; per block DNLOAD + dfuDNBUSY + dfuDNLOAD-IDLE; ZLP + 7 + 2.
        #expect(report.controlTransfers == 14)
        #expect(rig.board.trace.count - before == 14)
        #expect(device.controlTransferCount == rig.board.trace.count)
        #expect(report.duration == rig.clock.now - rig.board.trace[before].time)
    }

    @Test("an empty source is refused before anything is sent")
    func emptySource() async throws {
        let rig = try Rig()
        let device = try await rig.open()
        let before = rig.board.trace.count
        await #expect(throws: DFUError.self) { _ = try await device.download(MemoryByteSource([]), phase: 0x01) }
        #expect(rig.board.trace.count == before)
    }

    @Test("the seven host rules hold over a whole ROM → TF-A → U-Boot run, request by request")
    func invariantsOverAWholeRun() async throws {
        let rig = try Rig()
        let uboot = try await rig.bootMP15ToUBoot()
        _ = try await uboot.download(MemoryByteSource(SampleImages.pattern(10_000, seed: 3)), phase: 0x00)
        _ = try await uboot.getPhase()
        let requests = rig.board.trace
        for (index, entry) in requests.enumerated() where entry.isDFU(DFURequest.download) {
            let previous = requests[..<index].last {
                $0.setup.requestType & 0x60 == 0x20 || $0.setup.request == USBRequest.setInterface
            }
            let next = requests[(index + 1)...].first { $0.setup.requestType & 0x60 == 0x20 }
            // Rule 4/5: every DNLOAD is followed by GETSTATUS.
            #expect(next?.isDFU(DFURequest.getStatus) == true)
            if entry.dataLength > 0 {
                // Rule 2: full chunks are multiples of bMaxPacketSize0.
                let isLast = requests[(index + 1)...].first { $0.isDFU(DFURequest.download) }?.dataLength == 0
                #expect(isLast || entry.dataLength % 64 == 0)
            }
            // Rule 1: a transfer starts right after SET_INTERFACE + GETSTATUS(dfuIDLE).
            if entry.setup.value == 0, let previous {
                #expect(previous.isDFU(DFURequest.getStatus))
                if case .ok(let bytes) = previous.reply.outcome { #expect(bytes[4] == DFUState.dfuIdle.rawValue) }
            }
        }
        // Rule 3 (numbering, ZLP numbered) is checked by the board on every DNLOAD.
        #expect(rig.board.protocolViolations.isEmpty)
        // Rule 6: no CLRSTATUS without an error; rule 7: no bus reset.
        #expect(rig.count(DFURequest.clearStatus) == 0)
        #expect(!requests.contains { $0.isBusReset })
    }
}
