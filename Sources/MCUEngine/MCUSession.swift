package import BoardTracking
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

/// One MCU command's work over a USB bus (real or virtual): take the device through a lease of the
/// process's `BoardTracker` (so a board another job holds is never opened), open it as DfuSe, run
/// the AN3156 steps, follow a reset's re-enumeration through the same lease (by port first: an MCU
/// serial may be a constant), and fail with typed facts for the diagnosis.
package struct MCUSession: Sendable {
    package let tracker: BoardTracker
    package let selection: MCUSelection
    package var arrivalTimeout: Duration = .seconds(5)
    /// How long a reset (option-byte write, Read Unprotect) may take to re-enumerate.
    package var resetTimeout: Duration = .seconds(10)
    package var leaseTiming = LeaseTiming()
    package let events: @Sendable (MCUEvent) -> Void

    package var bus: any USBBus { tracker.bus }

    package init(
        tracker: BoardTracker, selection: MCUSelection, events: @escaping @Sendable (MCUEvent) -> Void = { _ in }
    ) {
        self.tracker = tracker
        self.selection = selection
        self.events = events
    }

    /// A session with a tracker of its own (one command, one process).
    package init(bus: any USBBus, selection: MCUSelection, events: @escaping @Sendable (MCUEvent) -> Void = { _ in }) {
        self.init(tracker: BoardTracker(bus: bus), selection: selection, events: events)
    }

    // MARK: - Finding and opening

    /// The tracker's name for the selection: without one, the only STM32 MCU nobody holds.
    var match: BoardMatch {
        switch selection {
        case .any: .only(.stm32MCU)
        case .port(let port): .port(port)
        case .serial(let serial): .serial(serial)
        }
    }

    /// Leases the selected MCU (waiting up to `arrivalTimeout` for it to appear), opens it and
    /// runs `body` on it; the device is closed and the lease released afterwards, whatever happens.
    func withDevice<T: Sendable>(
        _ operation: String,
        _ body: (inout MCUConnection, inout MCUFacts) async throws(MCUFailure) -> T
    ) async throws(MCUFailure) -> T {
        var facts = MCUFacts()
        let lease: BoardLease
        do { lease = try await tracker.lease(match, timing: leaseTiming) } catch {
            throw MCUFailure(.cancelled, facts: facts, operation: operation)
        }
        let outcome: Result<T, MCUFailure>
        var connection: MCUConnection?
        do throws(MCUFailure) {
            var opened = try await connect(lease, facts: &facts, operation: operation)
            connection = opened
            let value = try await body(&opened, &facts)
            connection = opened
            // A signal never ends in success, even when the last step had already finished.
            if Task.isCancelled { throw MCUFailure(.cancelled, facts: facts, operation: operation) }
            outcome = .success(value)
        } catch {
            outcome = .failure(error)
        }
        if let connection, connection.open { await connection.device.dfu.transport.close() }
        await lease.release()
        return try outcome.get()
    }

    private func connect(_ lease: BoardLease, facts: inout MCUFacts, operation: String) async throws(MCUFailure)
        -> MCUConnection
    {
        let clock = bus.clock
        do {
            _ = try await lease.arrival(until: clock.now + arrivalTimeout)
            let opened = try await lease.open(until: clock.now + max(arrivalTimeout, leaseTiming.openWindow))
            let device = DfuSeDevice(opened: opened.device, clock: clock)
            guard let kind = Self.kind(of: device) else {
                await device.dfu.transport.close()
                throw MCUFailure(.noDevice(seen: [device.identity]), facts: facts, operation: operation)
            }
            facts.identity = device.identity
            facts.alternates = device.alternates.map(\.string)
            facts.kind = kind
            events(.found(device.identity, kind))
            return MCUConnection(device: device, lease: lease)
        } catch let failure as MCUFailure {
            throw failure
        } catch let error as TrackingError {
            switch error {
            case .noBoard:
                let seen = (try? await tracker.devices().map(\.identity)) ?? []
                throw MCUFailure(.noDevice(seen: seen), facts: facts, operation: operation)
            case .otherFamily(let identity, _):
                throw MCUFailure(.noDevice(seen: [identity]), facts: facts, operation: operation)
            case .severalBoards(let list):
                throw MCUFailure(.severalDevices(list), facts: facts, operation: operation)
            case .leasedElsewhere(let port):
                throw MCUFailure(.leasedElsewhere(port), facts: facts, operation: operation)
            case .openFailed(let error):
                throw MCUFailure(.open(error), facts: facts, operation: operation)
            }
        } catch let error as USBTransferError {
            throw MCUFailure(.open(error), facts: facts, operation: operation)
        } catch {
            throw MCUFailure(.cancelled, facts: facts, operation: operation)
        }
    }

    static func kind(of device: DfuSeDevice) -> MCUKind? {
        let identity = device.identity
        return MCUKind.classify(
            vendorID: identity.vendorID, productID: identity.productID, bcdDevice: identity.bcdDevice,
            product: identity.product, alternates: device.alternates.compactMap(\.string))
    }

    /// After a reset the device was told to do: closes it, waits through the lease for the MCU to
    /// enumerate again (its port, or its non-constant serial elsewhere) and opens it.
    private func followReset(
        _ connection: inout MCUConnection, after step: String, facts: inout MCUFacts, operation: String
    ) async throws(MCUFailure) {
        events(.waitingForReset(step))
        let previous = connection.device.identity
        await connection.device.dfu.transport.close()
        connection.open = false
        let opened: OpenedBoard?
        do {
            opened = try await connection.lease.reappearance(of: previous, until: bus.clock.now + resetTimeout)
        } catch is CancellationError {
            throw MCUFailure(.cancelled, facts: facts, operation: operation)
        } catch {
            throw MCUFailure(.notBack(after: step), facts: facts, operation: operation)
        }
        guard let opened else { throw MCUFailure(.notBack(after: step), facts: facts, operation: operation) }
        let device = DfuSeDevice(opened: opened.device, clock: bus.clock)
        connection = MCUConnection(device: device, lease: connection.lease)
        facts.identity = device.identity
        facts.reenumerations += 1
        events(.reenumerated(device.identity))
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
        try await withDevice("info") { connection, facts throws(MCUFailure) in
            await gather(connection.device, into: &facts)
            return facts
        }
    }

    /// Erases the sectors the image touches, writes it, and reads it back unless `verify` is false.
    package func write(_ image: MCUImage, verify: Bool) async throws(MCUFailure) -> MCUWriteReport {
        try await withDevice("write") { connection, facts throws(MCUFailure) in
            try await write(image, verify: verify, on: connection.device, facts: facts)
        }
    }

    private func write(_ image: MCUImage, verify: Bool, on device: DfuSeDevice, facts: MCUFacts)
        async throws(MCUFailure) -> MCUWriteReport
    {
        let start = bus.clock.now
        let startTransfers = device.controlTransferCount
        let plan: MCUWritePlan
        do { plan = try MCUWritePlan(image: image, maps: device.maps) } catch {
            throw MCUFailure(.plan(error), facts: facts, operation: "write")
        }
        do {
            try await eraseSectors(plan.erase, on: device)
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
                    if let offset = Self.firstDifference(run.segment.bytes, back) {
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
        } catch {
            throw await failed(any: error, device: device, facts: facts, operation: "write")
        }
        return MCUWriteReport(
            bytes: plan.byteCount, erased: plan.erase, verified: verify,
            controlTransfers: device.controlTransferCount - startTransfers, duration: bus.clock.now - start)
    }

    /// The first offset where `back` differs from `written` (a short readback differs at its end).
    static func firstDifference(_ written: [UInt8], _ back: [UInt8]) -> Int? {
        let common = min(written.count, back.count)
        for index in 0..<common where written[index] != back[index] { return index }
        return back.count < written.count ? back.count : nil
    }

    /// Erases `sectors` one by one, stopping between sectors when the run is cancelled.
    private func eraseSectors(_ sectors: [DfuSeSector], on device: DfuSeDevice) async throws(DfuSeFailure) {
        for (index, sector) in sectors.enumerated() {
            try Task.checkCancellationAsFailure(.erasePage(sector.address))
            guard let (alt, _) = device.alternate(covering: UInt64(sector.address)) else { continue }
            events(.erasing(sector, index: index, count: sectors.count))
            try await device.erase(page: sector.address, on: alt)
        }
    }

    package func read(address: UInt64, length: Int) async throws(MCUFailure) -> [UInt8] {
        try await withDevice("read") { connection, facts throws(MCUFailure) in
            let device = connection.device
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
            do throws(DfuSeFailure) {
                return try await device.read(at: UInt32(address), length: length, on: alt) { bytes in
                    events(.progress(phase: "read", bytes: bytes, total: length))
                }
            } catch {
                throw await failed(error, device: device, facts: facts, operation: "read")
            }
        }
    }

    /// Mass erase, or the sectors overlapping `[address, address + length)`.
    package func erase(range: (address: UInt64, length: UInt64)?) async throws(MCUFailure) -> [DfuSeSector] {
        try await withDevice("erase") { connection, facts throws(MCUFailure) in
            let device = connection.device
            guard let (flashAlt, flash) = device.alternate(named: "Internal Flash") else {
                throw MCUFailure(
                    .unsupported("the device offers no Internal Flash alternate"), facts: facts, operation: "erase")
            }
            do {
                guard let range else {
                    try Task.checkCancellationAsFailure(.massErase)
                    try await device.massErase(on: flashAlt)
                    return flash.sectors
                }
                guard let (_, map) = device.alternate(covering: range.address),
                    map.firstUncovered(range.address, length: range.length) == nil
                else {
                    throw MCUFailure(
                        .unsupported(
                            "\(DfuSe.address(range.address))+\(range.length) is not inside one memory of the device"),
                        facts: facts, operation: "erase")
                }
                let sectors = map.sectors(overlapping: range.address, length: range.length).filter(\.erasable)
                try await eraseSectors(sectors, on: device)
                return sectors
            } catch {
                throw await failed(any: error, device: device, facts: facts, operation: "erase")
            }
        }
    }

    /// Reads the option bytes; a failure to read them fails the command (with the facts).
    package func readOptionBytes() async throws(MCUFailure) -> MCUFacts {
        let facts = try await withDevice("option-bytes") { connection, facts throws(MCUFailure) in
            await gather(connection.device, into: &facts)
            return facts
        }
        if let failure = facts.optionBytesFailure {
            if failure.cancelled { throw MCUFailure(.cancelled, facts: facts, operation: "option-bytes") }
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
        try await withDevice("option-bytes") { connection, facts throws(MCUFailure) in
            let device = connection.device
            guard let (alt, map) = device.alternate(named: "Option Bytes") else {
                throw MCUFailure(
                    .unsupported("the device offers no Option Bytes alternate"), facts: facts,
                    operation: "option-bytes")
            }
            await gather(device, into: &facts)
            // A whole block needs no read first (under RDP level 1 the bootloader refuses it).
            if let failure = facts.optionBytesFailure, newBlock == nil {
                if failure.cancelled { throw MCUFailure(.cancelled, facts: facts, operation: "option-bytes") }
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
                    let field = facts.family?.optionBytes.first(where: {
                        $0.name.uppercased() == change.name.uppercased()
                    })
                else {
                    let known = facts.family?.optionBytes.map(\.name).joined(separator: ", ") ?? "none (family unknown)"
                    throw MCUFailure(
                        .unsupported("no option-byte field \(change.name) on this device; known: \(known)"),
                        facts: facts, operation: "option-bytes")
                }
                block = field.setting(change.value, in: block)
            }
            do throws(DfuSeFailure) {
                try Task.checkCancellationAsFailure(.optionBytesWrite(map.start))
                try await device.writeOptionBytes(block, at: map.start, on: alt)
            } catch {
                throw await failed(error, device: device, facts: facts, operation: "option-bytes")
            }
            try await followReset(&connection, after: "the option-byte write", facts: &facts, operation: "option-bytes")
            facts.kind = Self.kind(of: connection.device) ?? facts.kind
            await gather(connection.device, into: &facts)
            return (before, facts)
        }
    }

    /// Read Unprotect (0x92): everything is erased, the chip resets; follows the re-enumeration.
    package func unprotect() async throws(MCUFailure) -> MCUFacts {
        try await withDevice("unprotect") { connection, facts throws(MCUFailure) in
            let device = connection.device
            facts.commands = try? await device.commands(on: device.alternates[0])
            guard facts.commands?.contains(DfuSeCommand.readUnprotect) ?? true else {
                throw MCUFailure(
                    .unsupported(
                        "this bootloader has no Read Unprotect (its Get list is \(facts.commands!.map { String(format2: $0) }.joined(separator: " ")))"
                    ),
                    facts: facts, operation: "unprotect")
            }
            do throws(DfuSeFailure) {
                try Task.checkCancellationAsFailure(.readUnprotect)
                try await device.readUnprotect(on: device.alternates[0])
            } catch {
                throw await failed(error, device: device, facts: facts, operation: "unprotect")
            }
            try await followReset(&connection, after: "Read Unprotect", facts: &facts, operation: "unprotect")
            await gather(connection.device, into: &facts)
            return facts
        }
    }

    /// Leaves DFU and starts the application (at `address`'s vector table when given).
    package func leave(address: UInt32?) async throws(MCUFailure) {
        try await withDevice("leave") { connection, facts throws(MCUFailure) in
            let device = connection.device
            guard
                let (alt, _) = device.alternate(named: "Internal Flash")
                    ?? device.alternates.first.map({ ($0, DfuSeMemoryMap(name: "", sectors: [])) })
            else {
                throw MCUFailure(.unsupported("the device has no alternate"), facts: facts, operation: "leave")
            }
            do throws(DfuSeFailure) {
                try Task.checkCancellationAsFailure(.leave)
                try await device.leave(address: address, on: alt)
            } catch {
                throw await failed(error, device: device, facts: facts, operation: "leave")
            }
        }
    }

    /// Any error of a step that mixes DfuSe requests and MCU checks, as the command's failure.
    private func failed(any error: any Error, device: DfuSeDevice, facts: MCUFacts, operation: String) async
        -> MCUFailure
    {
        switch error {
        case let failure as DfuSeFailure: await failed(failure, device: device, facts: facts, operation: operation)
        case let failure as MCUFailure: failure
        default: MCUFailure(.cancelled, facts: facts, operation: operation)
        }
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

/// The device a session works on and the lease that holds it (the device changes after a reset).
struct MCUConnection: Sendable {
    var device: DfuSeDevice
    let lease: BoardLease
    /// False once closed for a reset and not yet reopened.
    var open = true
}
