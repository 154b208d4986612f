import DFU
package import DfuSe
package import MCUImages
import Synchronization
import Timekeeping
package import USBModel

/// Which MCU to work on, as `flash` chooses a board.
package enum MCUSelection: Sendable, Hashable {
    case any
    case port(PortPath)
    case serial(String)
}

/// Progress of an MCU command, for the terminal and JSON output.
package enum MCUEvent: Sendable {
    case found(USBDeviceIdentity, MCUKind)
    case erasing(DfuSeSector, index: Int, count: Int)
    case progress(phase: String, bytes: Int, total: Int)
    case verified(bytes: Int)
    case waitingForReset(String)
    case reenumerated(USBDeviceIdentity)
}

/// What `mcu write` did.
package struct MCUWriteReport: Sendable {
    package var bytes: Int
    package var erased: [DfuSeSector]
    package var verified: Bool
    package var controlTransfers: Int
    package var duration: Duration
}

/// One MCU command's work over a USB bus (real or virtual): find the device, open it as DfuSe,
/// run the AN3156 steps, follow a reset's re-enumeration by port (an MCU serial may be a constant),
/// and fail with typed facts for the diagnosis.
package struct MCUSession: Sendable {
    package let bus: any USBBus
    package let selection: MCUSelection
    package var arrivalTimeout: Duration = .seconds(5)
    /// How long a reset (option-byte write, Read Unprotect) may take to re-enumerate.
    package var resetTimeout: Duration = .seconds(10)
    package let events: @Sendable (MCUEvent) -> Void

    /// This session's hot-plug subscription, made by `connect` (the bus fans events out to every
    /// subscriber, so nothing else can take the reset's events).
    private let hotplug = HotplugHolder()

    package init(bus: any USBBus, selection: MCUSelection, events: @escaping @Sendable (MCUEvent) -> Void = { _ in }) {
        self.bus = bus
        self.selection = selection
        self.events = events
    }

    // MARK: - Finding and opening

    /// Finds the selected MCU (waiting up to `arrivalTimeout` for one to appear) and opens it.
    package func connect(_ operation: String) async throws(MCUFailure) -> (DfuSeDevice, MCUFacts) {
        var facts = MCUFacts()
        do {
            let hotplug = try await self.hotplug.subscription(on: bus)
            let deadline = bus.clock.now + arrivalTimeout
            while true {
                let identities = try await bus.dfuDevices().map(\.identity)
                var matches: [(DfuSeDevice, MCUKind)] = []
                for identity in identities where matchesSelection(identity) {
                    guard let device = try? await open(identity.port) else { continue }
                    if let kind = Self.kind(of: device) {
                        matches.append((device, kind))
                    } else {
                        await device.dfu.transport.close()
                    }
                }
                if matches.count == 1, let (device, kind) = matches.first {
                    facts.identity = device.identity
                    facts.alternates = device.alternates.map(\.string)
                    facts.kind = kind
                    events(.found(device.identity, kind))
                    return (device, facts)
                }
                if matches.count > 1 {
                    for (device, _) in matches { await device.dfu.transport.close() }
                    throw MCUFailure(.severalDevices(matches.map(\.0.identity)), facts: facts, operation: operation)
                }
                guard bus.clock.now < deadline else {
                    throw MCUFailure(.noDevice(seen: identities), facts: facts, operation: operation)
                }
                _ = try await hotplug.next(until: min(deadline, bus.clock.now + .milliseconds(500)))
            }
        } catch let failure as MCUFailure {
            throw failure
        } catch let error as USBTransferError {
            throw MCUFailure(.open(error), facts: facts, operation: operation)
        } catch {
            throw MCUFailure(.cancelled, facts: facts, operation: operation)
        }
    }

    private func matchesSelection(_ identity: USBDeviceIdentity) -> Bool {
        switch selection {
        case .any: true
        case .port(let port): identity.port == port
        case .serial(let serial): identity.serial == serial
        }
    }

    private func open(_ port: PortPath) async throws -> DfuSeDevice {
        try await DfuSeDevice.open(try await bus.open(port: port), clock: bus.clock)
    }

    static func kind(of device: DfuSeDevice) -> MCUKind? {
        let identity = device.identity
        return MCUKind.classify(
            vendorID: identity.vendorID, productID: identity.productID, bcdDevice: identity.bcdDevice,
            product: identity.product, alternates: device.alternates.compactMap(\.string))
    }

    /// Waits for the device on `port` to leave and come back (a reset), then opens it.
    private func followReset(
        _ port: PortPath, after step: String, facts: inout MCUFacts, operation: String
    ) async throws(MCUFailure) -> DfuSeDevice {
        events(.waitingForReset(step))
        let deadline = bus.clock.now + resetTimeout
        var left = false
        do {
            let hotplug = try await self.hotplug.subscription(on: bus)
            while let event = try await hotplug.next(until: deadline) {
                guard event.device.port == port else { continue }
                if event.action == .remove { left = true }
                if event.action == .add && left {
                    let device = try await open(port)
                    facts.identity = device.identity
                    facts.reenumerations += 1
                    events(.reenumerated(device.identity))
                    return device
                }
            }
        } catch {
            throw MCUFailure(.notBack(after: step), facts: facts, operation: operation)
        }
        throw MCUFailure(.notBack(after: step), facts: facts, operation: operation)
    }

    // MARK: - Facts

    /// Reads what the bootloader tells about itself: the Get list, the option bytes (a failure is
    /// recorded, not thrown: it is evidence), and the UID where readable.
    package func gather(_ device: DfuSeDevice, into facts: inout MCUFacts) async {
        if let alt = device.alternates.first {
            facts.commands = try? await device.commands(on: alt)
        }
        if let (alt, map) = device.alternate(named: "Option Bytes") {
            do {
                facts.optionBytes = try await device.read(at: map.start, length: Int(map.totalSize), on: alt)
                facts.optionBytesFailure = nil
            } catch {
                facts.optionBytes = nil
                facts.optionBytesFailure = error
            }
        }
        if let family = facts.family, let uidAddress = family.uidAddress, let alt = device.alternates.first {
            facts.uid = try? await device.read(at: uidAddress, length: 12, on: alt)
            if facts.uid?.count != 12 { facts.uid = nil }
        }
    }

    // MARK: - Commands

    package func info() async throws(MCUFailure) -> MCUFacts {
        var (device, facts) = try await connect("info")
        await gather(device, into: &facts)
        await device.dfu.transport.close()
        return facts
    }

    /// Erases the sectors the image touches, writes it, and reads it back unless `verify` is false.
    package func write(_ image: MCUImage, verify: Bool) async throws(MCUFailure) -> MCUWriteReport {
        let (device, facts) = try await connect("write")
        defer { Task { await device.dfu.transport.close() } }
        let start = bus.clock.now
        let startTransfers = device.controlTransferCount
        let plan: MCUWritePlan
        do { plan = try MCUWritePlan(image: image, maps: device.maps) } catch {
            throw MCUFailure(.plan(error), facts: facts, operation: "write")
        }
        do {
            for (index, sector) in plan.erase.enumerated() {
                events(.erasing(sector, index: index, count: plan.erase.count))
                guard let (alt, _) = device.alternate(covering: UInt64(sector.address)) else { continue }
                try await device.erase(page: sector.address, on: alt)
            }
            var done = 0
            let total = plan.byteCount
            for run in plan.runs {
                let alt = device.alternates[Int(run.alternate)]
                let before = done
                try await device.write(run.segment.bytes, at: UInt32(run.segment.address), on: alt) { bytes in
                    events(.progress(phase: "write", bytes: before + bytes, total: total))
                }
                done += run.segment.bytes.count
            }
            if verify {
                var checked = 0
                for run in plan.runs {
                    let alt = device.alternates[Int(run.alternate)]
                    let before = checked
                    let back = try await device.read(
                        at: UInt32(run.segment.address), length: run.segment.bytes.count, on: alt
                    ) { bytes in events(.progress(phase: "verify", bytes: before + bytes, total: total)) }
                    if let offset = zip(
                        run.segment.bytes,
                        back + [UInt8](repeating: 0, count: max(0, run.segment.bytes.count - back.count))
                    ).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
                        var failureFacts = facts
                        await gather(device, into: &failureFacts)
                        throw MCUFailure(
                            .verifyMismatch(
                                address: run.segment.address + UInt64(offset), expected: run.segment.bytes[offset],
                                actual: offset < back.count ? back[offset] : 0, segment: run.segment),
                            facts: failureFacts, operation: "write")
                    }
                    checked += run.segment.bytes.count
                }
                events(.verified(bytes: checked))
            }
        } catch let failure as DfuSeFailure {
            throw await failed(failure, device: device, facts: facts, operation: "write")
        } catch let failure as MCUFailure {
            throw failure
        } catch {
            throw MCUFailure(.cancelled, facts: facts, operation: "write")
        }
        return MCUWriteReport(
            bytes: plan.byteCount, erased: plan.erase, verified: verify,
            controlTransfers: device.controlTransferCount - startTransfers, duration: bus.clock.now - start)
    }

    package func read(address: UInt64, length: Int) async throws(MCUFailure) -> [UInt8] {
        let (device, facts) = try await connect("read")
        defer { Task { await device.dfu.transport.close() } }
        guard let (alt, map) = device.alternate(covering: address) else {
            throw MCUFailure(
                .unsupported(
                    "\(DfuSe.address(address)) is in no memory the device offers (\(device.maps.compactMap { $0.map { "\($0.name) \(DfuSe.address(UInt64($0.start)))–\(DfuSe.address($0.end - 1))" } }.joined(separator: "; ")))"
                ), facts: facts, operation: "read")
        }
        if let uncovered = map.firstUncovered(address, length: UInt64(length)) {
            throw MCUFailure(
                .unsupported(
                    "\(DfuSe.address(uncovered)) is past the end of \(map.name) (\(DfuSe.address(map.end - 1)))"),
                facts: facts, operation: "read")
        }
        do {
            return try await device.read(at: UInt32(address), length: length, on: alt) { bytes in
                events(.progress(phase: "read", bytes: bytes, total: length))
            }
        } catch {
            throw await failed(error, device: device, facts: facts, operation: "read")
        }
    }

    /// Mass erase, or the sectors overlapping `[address, address + length)`.
    package func erase(range: (address: UInt64, length: UInt64)?) async throws(MCUFailure) -> [DfuSeSector] {
        let (device, facts) = try await connect("erase")
        defer { Task { await device.dfu.transport.close() } }
        guard let (flashAlt, flash) = device.alternate(named: "Internal Flash") else {
            throw MCUFailure(
                .unsupported("the device offers no Internal Flash alternate"), facts: facts, operation: "erase")
        }
        do {
            guard let range else {
                try await device.massErase(on: flashAlt)
                return flash.sectors
            }
            guard let (alt, map) = device.alternate(covering: range.address),
                map.firstUncovered(range.address, length: range.length) == nil
            else {
                throw MCUFailure(
                    .unsupported(
                        "\(DfuSe.address(range.address))+\(range.length) is not inside one memory of the device"),
                    facts: facts, operation: "erase")
            }
            let sectors = map.sectors(overlapping: range.address, length: range.length).filter(\.erasable)
            for (index, sector) in sectors.enumerated() {
                events(.erasing(sector, index: index, count: sectors.count))
                try await device.erase(page: sector.address, on: alt)
            }
            return sectors
        } catch let failure as DfuSeFailure {
            throw await failed(failure, device: device, facts: facts, operation: "erase")
        } catch let failure as MCUFailure {
            throw failure
        } catch {
            throw MCUFailure(.cancelled, facts: facts, operation: "erase")
        }
    }

    /// Reads the option bytes; a failure to read them fails the command (with the facts).
    package func readOptionBytes() async throws(MCUFailure) -> MCUFacts {
        let (device, found) = try await connect("option-bytes")
        var facts = found
        await gather(device, into: &facts)
        await device.dfu.transport.close()
        if let failure = facts.optionBytesFailure {
            throw MCUFailure(.dfuse(failure), facts: facts, operation: "option-bytes")
        }
        guard facts.optionBytes != nil else {
            throw MCUFailure(
                .unsupported("the device offers no Option Bytes alternate"), facts: facts, operation: "option-bytes")
        }
        return facts
    }

    /// Writes a whole option-byte block (from a file, or the current one with `changes` applied),
    /// follows the reset and reads the block back.
    package func writeOptionBytes(
        block newBlock: [UInt8]?, changes: [(name: String, value: UInt32)]
    ) async throws(MCUFailure) -> (before: [UInt8], after: MCUFacts) {
        let (device, found) = try await connect("option-bytes")
        var facts = found
        guard let (alt, map) = device.alternate(named: "Option Bytes") else {
            throw MCUFailure(
                .unsupported("the device offers no Option Bytes alternate"), facts: facts, operation: "option-bytes")
        }
        await gather(device, into: &facts)
        // A whole block needs no read first (under RDP level 1 the bootloader refuses it).
        if let failure = facts.optionBytesFailure, newBlock == nil {
            if failure.isVendorError {
                throw MCUFailure(
                    .unsupported(
                        "the option bytes cannot be read (RDP level 1), so --set has nothing to change; write a whole block with --write FILE, or remove the protection with `mcu unprotect --yes`"
                    ), facts: facts, operation: "option-bytes")
            }
            throw MCUFailure(.dfuse(failure), facts: facts, operation: "option-bytes")
        }
        let before = facts.optionBytes ?? []
        var block = newBlock ?? before
        guard block.count == Int(map.totalSize) else {
            throw MCUFailure(
                .unsupported(
                    "the option-byte block of this device is \(map.totalSize) bytes, the file has \(block.count)"),
                facts: facts, operation: "option-bytes")
        }
        for change in changes {
            guard
                let field = facts.family?.optionBytes.first(where: { $0.name.uppercased() == change.name.uppercased() })
            else {
                let known = facts.family?.optionBytes.map(\.name).joined(separator: ", ") ?? "none (family unknown)"
                throw MCUFailure(
                    .unsupported("no option-byte field \(change.name) on this device; known: \(known)"), facts: facts,
                    operation: "option-bytes")
            }
            block = field.setting(change.value, in: block)
        }
        let port = device.identity.port
        do {
            try await device.writeOptionBytes(block, at: map.start, on: alt)
        } catch {
            throw await failed(error, device: device, facts: facts, operation: "option-bytes")
        }
        await device.dfu.transport.close()
        let again = try await followReset(
            port, after: "the option-byte write", facts: &facts, operation: "option-bytes")
        facts.kind = Self.kind(of: again) ?? facts.kind
        await gather(again, into: &facts)
        await again.dfu.transport.close()
        return (before, facts)
    }

    /// Read Unprotect (0x92): everything is erased, the chip resets; follows the re-enumeration.
    package func unprotect() async throws(MCUFailure) -> MCUFacts {
        let (device, found) = try await connect("unprotect")
        var facts = found
        facts.commands = try? await device.commands(on: device.alternates[0])
        guard facts.commands?.contains(DfuSeCommand.readUnprotect) ?? true else {
            throw MCUFailure(
                .unsupported(
                    "this bootloader has no Read Unprotect (its Get list is \(facts.commands!.map { String(format2: $0) }.joined(separator: " ")))"
                ),
                facts: facts, operation: "unprotect")
        }
        let port = device.identity.port
        do {
            try await device.readUnprotect(on: device.alternates[0])
        } catch {
            throw await failed(error, device: device, facts: facts, operation: "unprotect")
        }
        await device.dfu.transport.close()
        let again = try await followReset(port, after: "Read Unprotect", facts: &facts, operation: "unprotect")
        await gather(again, into: &facts)
        await again.dfu.transport.close()
        return facts
    }

    /// Leaves DFU and starts the application (at `address`'s vector table when given).
    package func leave(address: UInt32?) async throws(MCUFailure) {
        let (device, facts) = try await connect("leave")
        guard
            let (alt, _) = device.alternate(named: "Internal Flash")
                ?? device.alternates.first.map({ ($0, DfuSeMemoryMap(name: "", sectors: [])) })
        else {
            throw MCUFailure(.unsupported("the device has no alternate"), facts: facts, operation: "leave")
        }
        do {
            try await device.leave(address: address, on: alt)
        } catch {
            throw await failed(error, device: device, facts: facts, operation: "leave")
        }
        await device.dfu.transport.close()
    }

    /// A DfuSe failure with the facts gathered after it (the option bytes tell RDP and WRP).
    private func failed(_ failure: DfuSeFailure, device: DfuSeDevice, facts: MCUFacts, operation: String) async
        -> MCUFailure
    {
        var facts = facts
        if failure.cancelled { return MCUFailure(.cancelled, facts: facts, operation: operation) }
        await gather(device, into: &facts)
        return MCUFailure(.dfuse(failure), facts: facts, operation: operation)
    }
}

extension String {
    /// Two upper-case hex digits.
    package init(format2 value: UInt8) {
        let s = String(value, radix: 16, uppercase: true)
        self = s.count < 2 ? "0" + s : s
    }
}

/// A session's hot-plug subscription, made on first use and kept for the session's copies.
private final class HotplugHolder: Sendable {
    private let stored = Mutex<(any HotplugSubscription)?>(nil)

    func subscription(on bus: any USBBus) async throws -> any HotplugSubscription {
        if let existing = stored.withLock({ $0 }) { return existing }
        let made = try await bus.subscribe()
        return stored.withLock { current in
            if let current { return current }
            current = made
            return made
        }
    }
}
