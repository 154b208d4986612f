package import DFU
import Synchronization
package import Timekeeping
package import USBModel

/// A step of a DfuSe session that failed, with the address it concerned: the typed fact the MCU
/// diagnoses match on (never the error text).
package struct DfuSeFailure: Error, Sendable, Hashable, CustomStringConvertible {
    package enum Step: Sendable, Hashable {
        case getCommands
        case setAddress(UInt32)
        case erasePage(UInt32)
        case massErase
        case write(UInt32)
        case read(UInt32)
        case readUnprotect
        case leave
        case optionBytesWrite(UInt32)
    }

    package var step: Step
    package var error: DFUError
    /// The user stopped the run (Ctrl-C) during this step.
    package var cancelled: Bool

    package init(_ step: Step, _ error: DFUError, cancelled: Bool = false) {
        self.step = step
        self.error = error
        self.cancelled = cancelled
    }

    /// bStatus when the device reported dfuERROR.
    package var deviceStatus: UInt8? {
        if case .deviceError(_, let status) = error.kind { return status }
        return nil
    }

    /// errVENDOR: how the bootloader refuses reads, writes and erases under RDP level 1 (AN3156 §5).
    package var isVendorError: Bool { deviceStatus == DFUStatusCode.errVendor }

    package var description: String { error.description }
}

/// A DfuSe (AN3156) client over one opened STM32 MCU DFU device: Get, Set Address Pointer, Erase,
/// Read Unprotect, address-pointer reads and writes (block n ↦ pointer + (n − 2) × wTransferSize),
/// and leaving DFU. Built on the DFU target's `DFUDevice` for descriptors, strings and GETSTATUS,
/// and on its transport for every other request. Requests do not overlap: one task drives it.
package final class DfuSeDevice: Sendable {
    package let dfu: DFUDevice
    /// Each alternate's memory map (nil where the string does not parse), by alternate index.
    package let maps: [DfuSeMemoryMap?]
    package let clock: any FlashClock
    /// The alternate selected and the state our last exchange left the device in (dfuIDLE or
    /// dfuDNLOAD-IDLE), so consecutive commands go back to back as dfu-util sends them, without a
    /// SET_INTERFACE, GETSTATUS and ABORT before each; nil when unknown (start, after any error).
    private let known = Mutex<(alt: UInt8, state: DFUState)?>(nil)

    private init(dfu: DFUDevice, clock: any FlashClock) {
        self.dfu = dfu
        self.clock = clock
        maps = dfu.alternates.map { $0.string.flatMap(DfuSeMemoryMap.init) }
    }

    /// Reads descriptors, strings and alternates (`DFUDevice.open`).
    package static func open(
        _ transport: any USBControlTransport, clock: any FlashClock, timeouts: DFUTimeouts = .init()
    ) async throws -> DfuSeDevice {
        DfuSeDevice(dfu: try await DFUDevice.open(transport, clock: clock, timeouts: timeouts), clock: clock)
    }

    /// A DFU device already opened (by a board lease) spoken to as DfuSe.
    package convenience init(opened dfu: DFUDevice, clock: any FlashClock) {
        self.init(dfu: dfu, clock: clock)
    }

    package var identity: USBDeviceIdentity { dfu.identity }
    package var alternates: [DFUAlternate] { dfu.alternates }
    /// Every control transfer so far, the opening descriptor reads included.
    package var controlTransferCount: Int { dfu.controlTransferCount }
    /// wTransferSize: the unit of the block-number address formula.
    package var transferSize: Int { max(Int(dfu.functional.transferSize), 1) }

    /// The alternate whose memory map covers `address` (the flash, option bytes, OTP …).
    package func alternate(covering address: UInt64) -> (DFUAlternate, DfuSeMemoryMap)? {
        for (index, map) in maps.enumerated() {
            if let map, map.sector(containing: address) != nil { return (alternates[index], map) }
        }
        return nil
    }

    /// The alternate whose map is named `prefix` (`Internal Flash`, `Option Bytes`).
    package func alternate(named prefix: String) -> (DFUAlternate, DfuSeMemoryMap)? {
        for (index, map) in maps.enumerated() {
            if let map, map.name.hasPrefix(prefix) { return (alternates[index], map) }
        }
        return nil
    }

    // MARK: - Commands

    /// Get (UPLOAD block 0): the command bytes the bootloader supports, `00 21 41 92` typically.
    package func commands(on alt: DFUAlternate) async throws(DfuSeFailure) -> [UInt8] {
        try await run(.getCommands) {
            try await select(alt)
            try await expectIdle(alt, downloadIdleWillDo: false)
            forget()
            let bytes = try await controlIn(DFURequest.upload, value: 0, alt: alt, length: 16, "Get (UPLOAD block 0)")
            try await abort(alt)
            remember(alt, .dfuIdle)
            return bytes
        }
    }

    /// Set Address Pointer (0x21): the pointer for the following blocks and for leaving.
    package func setAddress(_ address: UInt32, on alt: DFUAlternate) async throws(DfuSeFailure) {
        try await run(.setAddress(address)) {
            try await select(alt)
            try await expectIdle(alt)
            try await command(
                [DfuSeCommand.setAddressPointer] + le32(address), alt, "Set Address Pointer 0x\(hex8(address))")
        }
    }

    /// Erase (0x41) of the page or sector starting at `address`.
    package func erase(page address: UInt32, on alt: DFUAlternate) async throws(DfuSeFailure) {
        try await run(.erasePage(address)) {
            try await select(alt)
            try await expectIdle(alt)
            try await command([DfuSeCommand.erase] + le32(address), alt, "Erase 0x\(hex8(address))")
        }
    }

    /// Mass erase (0x41 with no address).
    package func massErase(on alt: DFUAlternate) async throws(DfuSeFailure) {
        try await run(.massErase) {
            try await select(alt)
            try await expectIdle(alt)
            try await command([DfuSeCommand.erase], alt, "Mass erase")
        }
    }

    /// Read Unprotect (0x92): under RDP level 1 the bootloader erases flash and RAM, resets the
    /// option bytes and resets the chip, so the device is expected to vanish; that is success.
    package func readUnprotect(on alt: DFUAlternate) async throws(DfuSeFailure) {
        try await run(.readUnprotect) {
            try await select(alt)
            try await expectIdle(alt)
            forget()
            do {
                try await command([DfuSeCommand.readUnprotect], alt, "Read Unprotect")
            } catch let error as DFUError where Self.isGone(error) {}
            forget()
        }
    }

    /// Writes `bytes` from `address` (already erased): Set Address Pointer once, then DNLOAD
    /// blocks 2, 3, … of wTransferSize, each polled until dfuDNLOAD-IDLE.
    package func write(
        _ bytes: [UInt8], at address: UInt32, on alt: DFUAlternate, progress: @Sendable (Int) -> Void = { _ in }
    ) async throws(DfuSeFailure) {
        try await setAddress(address, on: alt)
        var offset = 0
        var block: UInt16 = 2
        while offset < bytes.count {
            try Task.checkCancellationAsFailure(.write(address &+ UInt32(offset)))
            let chunk = Array(bytes[offset..<min(offset + transferSize, bytes.count)])
            let at = address &+ UInt32(offset)
            try await run(.write(at)) {
                forget()
                try await controlOut(
                    DFURequest.download, value: block, alt: alt, data: chunk, "DNLOAD block \(block) (0x\(hex8(at)))")
                try await pollUntilIdle(alt, "write 0x\(hex8(at))")
                remember(alt, .dnloadIdle)
            }
            offset += chunk.count
            block &+= 1
            progress(offset)
        }
    }

    /// Reads `length` bytes from `address`: Set Address Pointer, ABORT to dfuIDLE, UPLOAD blocks
    /// 2, 3, … of wTransferSize, ABORT.
    package func read(
        at address: UInt32, length: Int, on alt: DFUAlternate, progress: @Sendable (Int) -> Void = { _ in }
    ) async throws(DfuSeFailure) -> [UInt8] {
        try await setAddress(address, on: alt)
        try await run(.read(address)) { try await abort(alt) }
        forget()
        var result: [UInt8] = []
        result.reserveCapacity(length)
        var block: UInt16 = 2
        while result.count < length {
            let at = address &+ UInt32(result.count)
            try Task.checkCancellationAsFailure(.read(at))
            let want = min(transferSize, length - result.count)
            let data = try await run(.read(at)) {
                try await controlIn(
                    DFURequest.upload, value: block, alt: alt, length: UInt16(want),
                    "UPLOAD block \(block) (0x\(hex8(at)))")
            }
            result += data.prefix(want)
            block &+= 1
            progress(result.count)
            if data.count < want { break }
        }
        try await run(.read(address)) {
            try await abort(alt)
        }
        remember(alt, .dfuIdle)
        return result
    }

    /// Writes a whole option-byte block. The bootloader programs it and resets the chip, so the
    /// device vanishing is success (AN3156 §5.1).
    package func writeOptionBytes(_ block: [UInt8], at address: UInt32, on alt: DFUAlternate) async throws(DfuSeFailure)
    {
        try await setAddress(address, on: alt)
        try await run(.optionBytesWrite(address)) {
            forget()
            defer { forget() }
            do {
                try await controlOut(DFURequest.download, value: 2, alt: alt, data: block, "DNLOAD option bytes")
                try await pollUntilIdle(alt, "option bytes 0x\(hex8(address))")
            } catch let error as DFUError where Self.isGone(error) {}
        }
    }

    /// Leaves DFU: Set Address Pointer (when given), then a zero-length DNLOAD and GETSTATUS; the
    /// bootloader jumps to the reset vector at [pointer + 4] and disconnects (AN3156 §5.5).
    package func leave(address: UInt32?, on alt: DFUAlternate) async throws(DfuSeFailure) {
        if let address { try await setAddress(address, on: alt) }
        try await run(.leave) {
            forget()
            defer { forget() }
            do {
                if address == nil {
                    try await select(alt)
                    try await expectIdle(alt)
                }
                try await controlOut(DFURequest.download, value: 2, alt: alt, data: [], "zero-length DNLOAD (leave)")
                _ = try await dfu.getStatus(interface: alt.interface)
            } catch let error as DFUError where Self.isGone(error) {}
        }
    }

    // MARK: - Steps

    private func run<T>(_ step: DfuSeFailure.Step, _ body: () async throws -> T) async throws(DfuSeFailure) -> T {
        do { return try await body() } catch {
            forget()
            throw Self.failure(step, error)
        }
    }

    private static func failure(_ step: DfuSeFailure.Step, _ error: any Error) -> DfuSeFailure {
        switch error {
        case let error as DFUError: DfuSeFailure(step, error)
        case let error as DfuSeFailure: error
        case let error as USBTransferError: DfuSeFailure(step, DFUError(.transport(error), operation: "\(step)"))
        default:
            DfuSeFailure(step, DFUError(.malformed("the run was cancelled"), operation: "\(step)"), cancelled: true)
        }
    }

    private func remember(_ alt: DFUAlternate, _ state: DFUState) {
        known.withLock { $0 = (alt.alternateSetting, state) }
    }

    private func forget() { known.withLock { $0 = nil } }

    /// Whether the device is known to be on `alt` in one of `states`.
    private func isKnown(_ alt: DFUAlternate, in states: Set<DFUState>) -> Bool {
        known.withLock { $0.map { $0.alt == alt.alternateSetting && states.contains($0.state) } ?? false }
    }

    /// Any zero-length-DNLOAD command, executed by the next GETSTATUS (dfuDNBUSY), checked by the
    /// one after (dfuDNLOAD-IDLE).
    private func command(_ payload: [UInt8], _ alt: DFUAlternate, _ label: String) async throws {
        forget()
        try await controlOut(DFURequest.download, value: 0, alt: alt, data: payload, "\(label) (DNLOAD block 0)")
        try await pollUntilIdle(alt, label)
        remember(alt, .dnloadIdle)
    }

    /// SET_INTERFACE, unless this alternate is already selected and in a known state.
    private func select(_ alt: DFUAlternate) async throws {
        guard !isKnown(alt, in: [.dfuIdle, .dnloadIdle]) else { return }
        try await dfu.select(alt, "DfuSe")
    }

    /// dfuIDLE expected (or dfuDNLOAD-IDLE, which takes the next DNLOAD command as dfu-util sends
    /// it, when `downloadIdleWillDo`); when the state is not known: from dfuERROR one CLRSTATUS,
    /// from dfuDNLOAD-IDLE / dfuUPLOAD-IDLE one ABORT.
    private func expectIdle(_ alt: DFUAlternate, downloadIdleWillDo: Bool = true) async throws {
        if isKnown(alt, in: downloadIdleWillDo ? [.dfuIdle, .dnloadIdle] : [.dfuIdle]) { return }
        var status = try await dfu.getStatus(interface: alt.interface)
        if status.state == .error {
            try await controlOut(DFURequest.clearStatus, value: 0, alt: alt, data: [], "DFU_CLRSTATUS")
            status = try await dfu.getStatus(interface: alt.interface)
        } else if status.state == .dnloadIdle || status.state == .uploadIdle {
            try await abort(alt)
            status = try await dfu.getStatus(interface: alt.interface)
        }
        guard status.state == .dfuIdle else {
            if status.state == .error {
                throw DFUError(.deviceError(state: status.state, status: status.status), operation: "DFU_GETSTATUS")
            }
            throw DFUError(.unexpectedState(status.state), operation: "DFU_GETSTATUS")
        }
        remember(alt, .dfuIdle)
    }

    private func abort(_ alt: DFUAlternate) async throws {
        try await controlOut(DFURequest.abort, value: 0, alt: alt, data: [], "DFU_ABORT")
    }

    /// GETSTATUS until dfuDNLOAD-IDLE, sleeping bwPollTimeout on the injected clock in between.
    private func pollUntilIdle(_ alt: DFUAlternate, _ label: String) async throws {
        var polls = 0
        while true {
            let status = try await dfu.getStatus(interface: alt.interface, timeout: .seconds(30))
            switch status.state {
            case .dnloadIdle, .dfuIdle: return
            case .dnBusy, .dnloadSync, .manifest, .manifestSync:
                polls += 1
                guard polls < 10_000 else {
                    throw DFUError(.unexpectedState(status.state), operation: label + " (still busy)")
                }
                if status.pollTimeout > .zero { try await clock.sleep(for: status.pollTimeout) }
            case .error:
                throw DFUError(.deviceError(state: status.state, status: status.status), operation: label)
            default:
                throw DFUError(.unexpectedState(status.state), operation: label)
            }
        }
    }

    static func isGone(_ error: DFUError) -> Bool {
        guard let transfer = error.transferError else { return false }
        return transfer.kind == .noDevice || transfer.kind == .io
    }

    private func controlIn(
        _ request: UInt8, value: UInt16, alt: DFUAlternate, length: UInt16, _ operation: String
    ) async throws -> [UInt8] {
        do {
            return try await dfu.controlIn(
                request: request, value: value, interface: alt.interface, length: length, timeout: .seconds(5),
                operation)
        } catch let error as DFUError {
            throw await statusAfterStall(error, alt)
        }
    }

    private func controlOut(
        _ request: UInt8, value: UInt16, alt: DFUAlternate, data: [UInt8], _ operation: String
    ) async throws {
        do {
            try await dfu.controlOut(
                request: request, value: value, interface: alt.interface, data: data, timeout: .seconds(30), operation)
        } catch let error as DFUError {
            throw await statusAfterStall(error, alt)
        }
    }

    /// A bootloader refuses a request by STALLing it and entering dfuERROR: GETSTATUS says why
    /// (errVENDOR under RDP level 1, errADDRESS …), which is the fact worth keeping.
    private func statusAfterStall(_ error: DFUError, _ alt: DFUAlternate) async -> DFUError {
        guard error.transferError?.kind == .stall,
            let status = try? await dfu.getStatus(interface: alt.interface), status.state == .error
        else { return error }
        return DFUError(
            .deviceError(state: status.state, status: status.status), operation: error.operation + " (STALL)")
    }
}

extension Task where Success == Never, Failure == Never {
    /// Cancellation as a typed DfuSe failure of `step`.
    package static func checkCancellationAsFailure(_ step: DfuSeFailure.Step) throws(DfuSeFailure) {
        if Task.isCancelled {
            throw DfuSeFailure(
                step, DFUError(.malformed("the run was cancelled"), operation: "\(step)"), cancelled: true)
        }
    }
}

/// Little-endian bytes of a 32-bit value (the DfuSe command address order).
package func le32(_ value: UInt32) -> [UInt8] {
    [UInt8(value & 0xFF), UInt8((value >> 8) & 0xFF), UInt8((value >> 16) & 0xFF), UInt8(value >> 24)]
}
