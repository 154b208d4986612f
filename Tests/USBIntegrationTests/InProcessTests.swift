import Foundation
import Hotplug
import Testing
import Timekeeping
import USBHost
import USBModel

/// USBHost and Hotplug inside a process started under the emulator (see `inEmulatedProcess`).
@Suite struct InProcessTests {
    static let port = PortPath(bus: 1, ports: [1])
    static let detach = SetupPacket(requestType: 0x21, request: 0, value: 1000, index: 0, length: 0)
    static let getStatus = SetupPacket(requestType: 0xA1, request: 3, value: 0, index: 0, length: 6)

    @Test func hotplugStreamSeesReenumerationAsRemoveThenAdd() async throws {
        try await inEmulatedProcess("hotplugStreamSeesReenumerationAsRemoveThenAdd") { _ in
            let clock = SystemClock()
            for source in UdevEventSource.allCases {
                let events = try HotplugMonitor.events(source: source, clock: clock)
                let context = try USBContext(clock: clock)
                let handle = try await context.open(port: Self.port)
                let before = handle.identity
                let sentAt = clock.now
                try await handle.controlOut(Self.detach, data: [], timeout: .seconds(1))
                let seen = try await firstEvents(2, from: events, within: .seconds(10))
                await handle.close()
                try #require(seen.count == 2, "source \(source): \(seen)")
                #expect(seen.map(\.action) == [.remove, .add])
                let (removed, added) = (seen[0].device, seen[1].device)
                #expect(removed.port == Self.port && added.port == Self.port)
                #expect(removed.serial == before.serial && removed.product == before.product)
                #expect(removed.deviceAddress == before.deviceAddress)
                #expect(added.vendorID == 0x0483 && added.productID == 0xDF11 && added.bcdDevice == 0x0200)
                #expect(added.product?.hasPrefix("USB download gadget@Device ID /0x500") == true)
                #expect(added.serial != nil && added.serial != before.serial)
                #expect(added.deviceAddress != before.deviceAddress)
                #expect(added.speed == .high)
                #expect(seen[0].time >= sentAt && seen[1].time >= seen[0].time)
                print(
                    "[figure] \(source) source: DETACH sent → remove event \(ms(seen[0].time - sentAt)), add event \(ms(seen[1].time - sentAt))"
                )
            }
        }
    }

    @Test func controlTransferOnVanishedDeviceFailsWithNoDevice() async throws {
        try await inEmulatedProcess("controlTransferOnVanishedDeviceFailsWithNoDevice") { _ in
            let clock = SystemClock()
            let events = try HotplugMonitor.events(source: .kernel, clock: clock)
            let context = try USBContext(clock: clock)
            let handle = try await context.open(port: Self.port)
            try await handle.setAlternate(interface: 0, alternate: 0)
            try await handle.controlOut(Self.detach, data: [], timeout: .seconds(1))
            let removed = try await firstEvents(1, from: events, within: .seconds(10))
            try #require(removed.first?.action == .remove)
            let error = await #expect(throws: USBTransferError.self) {
                _ = try await handle.controlIn(Self.getStatus, timeout: .seconds(5))
            }
            #expect(error?.kind == .noDevice)
            #expect(error?.detail?.contains("the board disconnected") == true)
            await handle.close()
            await handle.close()  // Twice is fine.
        }
    }

    /// A transfer in flight when the device goes away comes back with NO_DEVICE instead of hanging
    /// (the emulator holds each GETSTATUS after a block for 3 s; SIGUSR1 unplugs meanwhile).
    @Test func inFlightTransferEndsWithNoDeviceWhenTheDeviceVanishes() async throws {
        try await inEmulatedProcess(
            "inFlightTransferEndsWithNoDeviceWhenTheDeviceVanishes", emulatorOptions: ["--download-latency-ms", "3000"]
        ) { _ in
            let clock = SystemClock()
            let context = try USBContext(clock: clock)
            let handle = try await context.open(port: Self.port)
            try await handle.setAlternate(interface: 0, alternate: 0)
            try await handle.controlOut(
                dnload(block: 0, length: 16), data: Array(repeating: 0xA5, count: 16), timeout: .seconds(1))
            let unplug = Task {
                try await clock.sleep(for: .milliseconds(300))
                kill(getppid(), SIGUSR1)  // The emulator is this process's parent.
            }
            let started = clock.now
            let error = await #expect(throws: USBTransferError.self) {
                _ = try await handle.controlIn(Self.getStatus, timeout: .seconds(10))
            }
            #expect(error?.kind == .noDevice)
            try await unplug.value
            print("[figure] in-flight GETSTATUS ended \(ms(clock.now - started)) after submission (unplug at 300 ms)")
            await handle.close()
        }
    }

    /// A device that holds its answer past the transfer timeout: libusb discards the URB, the
    /// caller gets `.timeout`, and the handle keeps working.
    @Test func heldAnswerEndsWithTimeoutAndTheHandleStaysUsable() async throws {
        try await inEmulatedProcess(
            "heldAnswerEndsWithTimeoutAndTheHandleStaysUsable", emulatorOptions: ["--download-latency-ms", "5000"]
        ) { _ in
            let context = try USBContext(clock: SystemClock())
            let handle = try await context.open(port: Self.port)
            try await handle.setAlternate(interface: 0, alternate: 0)
            try await handle.controlOut(dnload(block: 0, length: 4), data: [1, 2, 3, 4], timeout: .seconds(1))
            let error = await #expect(throws: USBTransferError.self) {
                _ = try await handle.controlIn(Self.getStatus, timeout: .milliseconds(300))
            }
            #expect(error?.kind == .timeout)
            let getState = SetupPacket(requestType: 0xA1, request: 5, value: 0, index: 0, length: 1)
            #expect(try await handle.controlIn(getState, timeout: .seconds(1)) == [5], "dfuDNLOAD-IDLE")
            await handle.close()
        }
    }

    @Test func downloadThroughUSBControlTransportIsByteExact() async throws {
        try await inEmulatedProcess("downloadThroughUSBControlTransportIsByteExact") { storage in
            let clock = SystemClock()
            let context = try USBContext(clock: clock)
            let transport: any USBControlTransport = try await context.open(port: Self.port)
            let configuration = try await transport.configurationDescriptor()
            let functional = try #require(
                configuration.interfaces.first?.extra.first { $0[1] == DescriptorType.dfuFunctional })
            let transferSize = Int(functional[5]) | Int(functional[6]) << 8
            #expect(transferSize == 1024)
            #expect(
                try await transport.string(index: configuration.interfaces[0].interfaceStringIndex)
                    == "@fixed-dfu /0x00/1*1Me")
            #expect(try await transport.deviceDescriptor().vendorID == 0x0483)

            var generator = SystemRandomNumberGenerator()
            let image = (0..<(200 * 1024 + 123)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            try await transport.setAlternate(interface: 0, alternate: 0)
            let started = clock.now
            var transfers = 0
            var block: UInt16 = 0
            for offset in stride(from: 0, to: image.count, by: transferSize) {
                let chunk = Array(image[offset..<min(offset + transferSize, image.count)])
                try await transport.controlOut(
                    dnload(block: block, length: chunk.count), data: chunk, timeout: .seconds(2))
                let status = try await transport.controlIn(Self.getStatus, timeout: .seconds(2))
                #expect(status.count == 6 && status[0] == 0 && status[4] == 5, "dfuDNLOAD-IDLE after block \(block)")
                block &+= 1
                transfers += 2
            }
            try await transport.controlOut(dnload(block: block, length: 0), data: [], timeout: .seconds(2))
            let final = try await transport.controlIn(Self.getStatus, timeout: .seconds(2))
            transfers += 2
            let elapsed = clock.now - started
            #expect(final[4] == 2, "dfuIDLE after manifestation")
            let received = try [UInt8](Data(contentsOf: URL(fileURLWithPath: storage + "/fixed-dfu-alt0.bin")))
            #expect(received == image)

            // And back with UPLOAD.
            var uploaded: [UInt8] = []
            var uploadBlock: UInt16 = 0
            while true {
                let setup = SetupPacket(
                    requestType: 0xA1, request: 2, value: uploadBlock, index: 0, length: UInt16(transferSize))
                let chunk = try await transport.controlIn(setup, timeout: .seconds(2))
                uploaded += chunk
                uploadBlock &+= 1
                if chunk.count < transferSize { break }
            }
            #expect(uploaded == image)
            await transport.close()
            print(
                "[figure] \(transfers) control transfers (DNLOAD 1 KiB + GETSTATUS) in \(ms(elapsed)): \(Int(Double(transfers) / elapsed.inSeconds))/s, \(Int(Double(image.count) / 1024 / elapsed.inSeconds)) KiB/s"
            )
        }
    }

    @Test func enumerationListsTheDFUDeviceWithStringsAndAlternates() async throws {
        try await inEmulatedProcess("enumerationListsTheDFUDeviceWithStringsAndAlternates") { _ in
            let context = try USBContext(clock: SystemClock())
            let listings = try await context.dfuDevices()
            try #require(listings.count == 1)
            let identity = listings[0].identity
            #expect(identity.port == Self.port && identity.busNumber == 1 && identity.deviceAddress == 2)
            #expect(identity.manufacturer == "STMicroelectronics")
            #expect(identity.product == "DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000")
            #expect(identity.serial == "002800423232511538303631")
            #expect(identity.speed == .high)
            #expect(
                listings[0].alternates == [
                    DFUInterfaceAlternate(interface: 0, alternate: 0, name: "@fixed-dfu /0x00/1*1Me")
                ])
            let missing = await #expect(throws: USBTransferError.self) {
                _ = try await context.open(port: PortPath(bus: 1, ports: [7]))
            }
            #expect(missing?.kind == .notFound)
        }
    }
}

extension InProcessTests {
    /// Strings STALL for a while after enumeration: reads retry on the injected clock.
    @Test func stringReadsRetryThroughTheTransientStateOnTheInjectedClock() async throws {
        // 9 stalls: the kernel's 4 reads for sysfs (3 identity strings, the interface name), then 3 single
        // attempts, then 2 retried ones.
        try await inEmulatedProcess(
            "stringReadsRetryThroughTheTransientStateOnTheInjectedClock",
            emulatorOptions: ["--unreadable-strings", "9"]
        ) { _ in
            let impatient = try USBContext(clock: SystemClock(), stringRetry: StringRetryPolicy(attempts: 1))
            let first = try await impatient.open(port: Self.port)
            #expect(first.identity.manufacturer == nil && first.identity.product == nil && first.identity.serial == nil)
            await first.close()

            let clock = SimulatedClock()
            let patient = try USBContext(
                clock: clock, stringRetry: StringRetryPolicy(attempts: 5, interval: .milliseconds(50)))
            let second = try await patient.open(port: Self.port)
            #expect(second.identity.manufacturer == "STMicroelectronics")
            #expect(second.identity.product == "DFU in HS Mode @Device ID /0x500, @Revision ID /0x0000")
            #expect(second.identity.serial == "002800423232511538303631")
            #expect(clock.now == .milliseconds(100), "two retries of 50 ms, waited on the injected clock")
            await second.close()
        }
    }
}

func dnload(block: UInt16, length: Int) -> SetupPacket {
    SetupPacket(requestType: 0x21, request: 1, value: block, index: 0, length: UInt16(length))
}

func ms(_ duration: Duration) -> String {
    String(format: "%.2f ms", duration.inSeconds * 1000)
}

/// The first `count` events of `stream`, or fewer if `limit` passes first.
func firstEvents(_ count: Int, from stream: AsyncStream<HotplugEvent>, within limit: Duration) async throws
    -> [HotplugEvent]
{
    try await withThrowingTaskGroup(of: [HotplugEvent]?.self) { group in
        group.addTask {
            var events: [HotplugEvent] = []
            for await event in stream {
                events.append(event)
                if events.count == count { break }
            }
            return events
        }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        let first = try await group.next() ?? nil
        group.cancelAll()
        return first ?? []
    }
}
