import BootImages
import DFU
import Fastboot
import FlashLayout
import Testing
import Timekeeping
import UBootScript
import USBModel
import VirtualBoard
import VirtualBoardTestSupport

@Suite("Fault scenarios: each one's host-observable symptom and console evidence (§E)")
struct FaultTests {
    func isTransfer(_ error: any Error, _ kind: USBTransferError.Kind) -> Bool {
        (error as? DFUError)?.transferError?.kind == kind
    }

    @Test("every scenario shows its symptom", arguments: FaultScenario.allCases)
    func symptom(_ fault: FaultScenario) async throws {
        let rig = try BoardRig.smallBuffer { $0.fault = fault }
        switch fault {
        case .none:
            let uboot = try #require(try await rig.bootToUBoot())
            let enumeration2 = try #require(try await rig.sendLayout(TestLayouts.sdCard, to: uboot))
            #expect(
                try await rig.programPartitions(enumeration2, files: try TestLayouts.files(for: TestLayouts.sdCard))
                    .phase == 0xFE)
            #expect(rig.board.protocolViolations.isEmpty)

        case .noUBoot:
            #expect(try await rig.bootToUBoot() == nil)
            #expect(rig.board.consoleLog.contains("udc_device_get_by_index failed"))
            #expect(rig.board.stage == nil)

        case .layoutRejected:
            let uboot = try #require(try await rig.bootToUBoot())
            #expect(try await rig.sendLayout(TestLayouts.sdCard, to: uboot) == nil)
            let reply = try await uboot.getPhase()
            #expect(reply.phase == 0xFF)
            #expect(reply.message == "Layout line 2: type parsing error : 'FIP'")
            // §C.7: a rejected layout, then DETACH: U-Boot leaves without reset, nothing returns.
            try await uboot.detach()
            #expect(try await rig.next() == nil)
            #expect(rig.board.consoleLog.contains("Download done"))

        case .fipHeaderBad:
            let device = try await rig.open()
            _ = try await device.download(MemoryByteSource(SampleImages.fsbl()), phase: 0x01, deviceMayLeave: true)
            await #expect { _ = try await device.download(MemoryByteSource(SampleImages.fip()), phase: 0x03) } throws: {
                isTransfer($0, .stall)
            }
            // TF-A stays in dfuERROR and refuses the GetPhase read until CLRSTATUS.
            await #expect(throws: DFUError.self) { _ = try await device.getPhase() }
            #expect(try await device.clearError().state == .error)
            let reply = try await device.getPhase()
            #expect(reply.phase == 0xFF)
            #expect(reply.message == "FIP Header check failed for phase 3")
            #expect(rig.board.consoleLog.contains("ERROR:   FIP Header check failed for phase 3"))

        case .writeError:
            let uboot = try #require(try await rig.bootToUBoot())
            let enumeration2 = try #require(try await rig.sendLayout(TestLayouts.sdCard, to: uboot))
            await #expect {
                _ = try await rig.programPartitions(enumeration2, files: try TestLayouts.files(for: TestLayouts.sdCard))
            } throws: { error in
                (error as? DFUError)?.kind == .deviceError(state: .error, status: 0x0E)
            }
            let reply = try await enumeration2.getPhase()
            #expect(reply.phase == 0xFF)
            #expect(reply.message == "DFU write error")
            // The error was read through GetPhase: DETACH resets the board into the ROM (§C.7).
            try await enumeration2.detach()
            let rom = try #require(try await rig.next())
            #expect(rom.identity.product?.hasPrefix("DFU in HS Mode") == true)

        case .resetAfterDetach:
            let uboot = try #require(try await rig.bootToUBoot())
            let next = try #require(try await rig.sendLayout(TestLayouts.sdCard, to: uboot))
            #expect(next.identity.product == "DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000")
            #expect(rig.board.consoleLog.contains("resetting ..."))

        case .transientStrings:
            let listed = try await rig.bus.dfuDevices()
            #expect(listed.count == 1)
            #expect(listed.first?.identity.product == nil)
            let rom = try await rig.open()
            #expect(rom.identity.product?.hasPrefix("DFU in HS Mode") == true)
            let stalledStrings = rig.board.trace.filter {
                $0.setup.request == USBRequest.getDescriptor && $0.setup.value >> 8 == 3 && $0.reply == .stall
            }
            #expect(stalledStrings.count == 3)

        case .alternateNameStalls:
            // Only the command alternate's name STALLs, for more requests than one read retries
            // (the bus tries 5 times); then it answers like every other string.
            let transport = try await rig.bus.open(port: rig.board.port)
            var names: [String] = []
            let alternates = try await transport.configurationDescriptor().interfaces.filter(\.isDFU)
            for alt in alternates {
                for _ in 0..<4 {
                    if let name = try? await transport.string(index: alt.interfaceStringIndex) {
                        names.append(name)
                        break
                    }
                }
            }
            await transport.close()
            #expect(names.count == alternates.count, "\(names)")
            #expect(names.contains { DFUAlternateName.parse($0)?.phaseID == DFUDevice.commandPhase }, "\(names)")
            let stalled = rig.board.trace.filter {
                $0.setup.request == USBRequest.getDescriptor && $0.setup.value >> 8 == 3 && $0.reply == .stall
            }
            #expect(stalled.count == 12)
            #expect(Set(stalled.map { $0.setup.value & 0xFF }).count == 1)

        case .getStatusStall:
            let device = try await rig.open()
            await #expect {
                _ = try await device.download(MemoryByteSource(SampleImages.fsbl()), phase: 0x01)
            } throws: {
                isTransfer($0, .stall)
            }

        case .vanishMidPartition:
            let uboot = try #require(try await rig.bootToUBoot())
            let enumeration2 = try #require(try await rig.sendLayout(TestLayouts.sdCard, to: uboot))
            await #expect {
                _ = try await rig.programPartitions(enumeration2, files: try TestLayouts.files(for: TestLayouts.sdCard))
            } throws: {
                isTransfer($0, .noDevice)
            }
            #expect(try await rig.next() == nil)
            #expect(rig.board.stage == nil)

        case .storesWrongBytes:
            let uboot = try #require(try await rig.bootToUBoot())
            let enumeration2 = try #require(try await rig.sendLayout(TestLayouts.sdCard, to: uboot))
            let files = try TestLayouts.files(for: TestLayouts.sdCard)
            // Every request succeeds; only reading back shows it.
            #expect(try await rig.programPartitions(enumeration2, files: files).phase == 0xFE)
            let bootfs = try #require(files[0x10])
            let readBack = try await enumeration2.upload(phase: 0x10, length: bootfs.count)
            #expect(readBack.count == bootfs.count)
            #expect(readBack != bootfs)
            #expect(
                try await enumeration2.upload(phase: 0x06, length: 4096)
                    == Array(try #require(files[0x06]).prefix(4096)))

        case .serialChanges:
            let rom = try await rig.open()
            let uboot = try #require(try await rig.bootToUBoot())
            #expect(rom.identity.serial == "000000000000")
            #expect(uboot.identity.serial == "0029002A4C4250110038344D")

        case .vanishAfterFSBL:
            let device = try await rig.open()
            _ = try await device.download(MemoryByteSource(SampleImages.fsbl()), phase: 0x01, deviceMayLeave: true)
            await #expect { _ = try await device.getPhase() } throws: { isTransfer($0, .noDevice) }
            #expect(try await rig.next(within: .seconds(10)) == nil)
            #expect(rig.board.stage == nil)

        case .bootInterfaceUnsupported:
            let device = try await rig.open()
            _ = try await device.download(MemoryByteSource(SampleImages.fsbl()), phase: 0x01, deviceMayLeave: true)
            await #expect { _ = try await device.getPhase() } throws: { isTransfer($0, .timeout) }
            #expect(rig.board.consoleLog.contains("ERROR:   Boot interface 6 not supported"))

        case .movesPort, .movesPortNewSerial:
            // Nothing comes back on the original port; U-Boot is on the next port of the hub.
            #expect(try await rig.bootToUBoot() == nil)
            #expect(rig.board.port == PortPath(bus: 1, ports: [3]))
            let uboot = try await rig.bus.openDFU(port: rig.board.port)
            #expect(uboot.identity.port == PortPath(bus: 1, ports: [3]))
            #expect(
                uboot.identity.serial == (fault == .movesPort ? "0029002A4C4250110038344D" : "55AA00000000000000000001")
            )

        case .scriptRejected:
            // U-Boot without LEGACY_IMAGE_FORMAT parses the script image as a layout.
            let uboot = try #require(try await rig.bootToUBoot())
            _ = try await uboot.download(
                MemoryByteSource(LegacyScriptImage(script: "fastboot usb 0").bytes), phase: 0x00)
            let reply = try await uboot.getPhase()
            #expect(reply.phase == 0xFF)
            #expect(!rig.board.consoleLog.contains("U-Boot script received"))

        case .noFastboot:
            // The script's `|| stm32prog usb 0` brings enumeration 1 back.
            let uboot = try #require(try await rig.bootToUBoot())
            let next = try #require(try await rig.sendScript("fastboot usb 0 || stm32prog usb 0", to: uboot))
            #expect(next.identity.productID == 0xDF11)
            #expect(rig.board.consoleLog.contains("Unknown command 'fastboot' - try 'help'"))
            #expect(try await rig.open().getPhase().phase == 0x00)

        case .fastbootOtherMMC:
            let uboot = try #require(try await rig.bootToUBoot())
            let gadget = try #require(try await rig.sendScript("fastboot usb 0", to: uboot))
            #expect(gadget.identity.productID == 0x0AFB)
            #expect(try await rig.fastboot(gadget).getvar("mmcdev") == "0")

        case .enumerationErrors:
            #expect(try await rig.bootToUBoot() == nil)
            #expect(rig.board.kernelLog.contains("usb 1-2: device descriptor read/64, error -71"))
            #expect(rig.board.kernelLog.contains { $0.contains("unable to enumerate USB device") })

        case .fsblRejected:
            // A good FSBL: the ROM still refuses it at the manifestation with errVERIFY, stays in
            // DFU and asks for the FSBL again.
            let device = try await rig.open()
            await #expect {
                _ = try await device.download(MemoryByteSource(SampleImages.fsbl()), phase: 0x01, deviceMayLeave: true)
            } throws: { error in
                (error as? DFUError)?.kind == .deviceError(state: .error, status: DFUStatusCode.errVerify)
            }
            #expect(try await device.clearError().status == DFUStatusCode.errVerify)
            #expect(try await device.getPhase().phase == 0x01)
            #expect(rig.board.stage == .rom)
        }
    }

    /// The ROM's own checks (item 9): a header for another chip, a bad checksum, a truncated
    /// payload or no STM32 header are refused with errVERIFY at the manifestation, as on the
    /// real ROM; the right image is taken.
    @Test(
        "the virtual ROM refuses an FSBL it would not start",
        arguments: [
            (VirtualSoC.mp15, "v2 header"), (.mp13, "v1 header"), (.mp25, "v2 header for MP13"), (.mp15, "checksum"),
            (.mp15, "truncated"), (.mp13, "no header"), (.mp13, "right image"),
        ])
    func romChecksTheFSBL(soc: VirtualSoC, image: String) async throws {
        let rig = try BoardRig.smallBuffer { $0.soc = soc }
        let payload = SampleImages.pattern(4096, seed: 7)
        let bytes: [UInt8]
        switch image {
        case "v2 header": bytes = STM32ImageHeader.wrap(payload: payload, version: .v2, loadAddress: 0x2FFE_0000)
        case "v2 header for MP13":
            bytes = STM32ImageHeader.wrap(payload: payload, version: .v2, loadAddress: 0x2FFE_0000)
        case "v1 header": bytes = STM32ImageHeader.wrap(payload: payload, version: .v1)
        case "checksum":
            var wrapped = STM32ImageHeader.wrap(payload: payload, version: .v1)
            wrapped[wrapped.count - 1] &+= 1
            bytes = wrapped
        case "truncated": bytes = Array(STM32ImageHeader.wrap(payload: payload, version: .v1).dropLast(100))
        case "no header": bytes = payload
        default: bytes = STM32ImageHeader.wrap(payload: payload, version: .v2, loadAddress: 0x2FFE_0000)
        }
        let device = try await rig.open()
        if image == "right image" {
            _ = try await device.download(MemoryByteSource(bytes), phase: 0x01, deviceMayLeave: true)
            #expect(try await device.getPhase().needsDetach)
            return
        }
        await #expect {
            _ = try await device.download(MemoryByteSource(bytes), phase: 0x01, deviceMayLeave: true)
        } throws: { error in
            (error as? DFUError)?.kind == .deviceError(state: .error, status: DFUStatusCode.errVerify)
        }
        #expect(rig.board.stage == .rom)
    }

    @Test("boot-interface-unsupported on MP13: after DETACH nothing TF-A-like enumerates")
    func bootInterfaceMP13() async throws {
        let rig = try BoardRig.smallBuffer {
            $0.soc = .mp13
            $0.fault = .bootInterfaceUnsupported
        }
        let rom = try await rig.open()
        _ = try await rom.download(MemoryByteSource(SampleImages.fsbl(for: .mp13)), phase: 0x01)
        _ = try await rom.getPhase()
        try await rom.detach()
        #expect(try await rig.next() == nil)
    }

    @Test("§C.7: an error not read through GetPhase, then DETACH: no reset, nothing comes back")
    func errorNotReadThenDetach() async throws {
        let rig = try BoardRig.smallBuffer { $0.fault = .writeError }
        let uboot = try #require(try await rig.bootToUBoot())
        let enumeration2 = try #require(try await rig.sendLayout(TestLayouts.sdCard, to: uboot))
        _ = try? await rig.programPartitions(enumeration2, files: try TestLayouts.files(for: TestLayouts.sdCard))
        // U-Boot accepts DETACH only in dfuIDLE: SET_INTERFACE gets it there without reading GetPhase.
        try await enumeration2.transport.setAlternate(interface: 0, alternate: 0)
        try await enumeration2.detach()
        #expect(try await rig.next() == nil)
        #expect(rig.board.protocolViolations.contains("DFU_DETACH to uboot without a GetPhase read before it"))
    }

    @Test("rule 7: a port reset after DETACH to U-Boot is a violation, and the ROM comes back")
    func portResetAfterDetach() async throws {
        let rig = try BoardRig.smallBuffer()
        let uboot = try #require(try await rig.bootToUBoot())
        let lines = try UBootLayout.parse(Array(TestLayouts.sdCard.utf8)).get()
        _ = try await uboot.download(MemoryByteSource(LayoutPayload.normalized(lines).bytes), phase: 0x00)
        _ = try await uboot.getPhase()
        try await uboot.detach()
        rig.bus.resetPort(rig.board.port)
        #expect(rig.board.protocolViolations == ["USB port reset after DFU_DETACH to U-Boot"])
        #expect(rig.board.trace.last?.isBusReset == true)
        let next = try #require(try await rig.next())
        #expect(next.identity.product?.hasPrefix("DFU in HS Mode") == true)
    }
}
