import Synchronization
public import Timekeeping
public import USBModel

/// A DFU client for one opened STM32MP device (ROM, TF-A or U-Boot alike), following the host
/// rules of reference §1.2 so that the same code works with all three firmwares.
///
/// Alternates and descriptors are read once at `open`; a re-enumerated board is a new device and
/// needs a new `DFUDevice`. Requests are not meant to overlap: one task drives a device at a time.
public final class DFUDevice: Sendable {
    public let identity: USBDeviceIdentity
    public let deviceDescriptor: DeviceDescriptor
    public let alternates: [DFUAlternate]
    public let functional: DFUFunctionalDescriptor
    public let transport: any USBControlTransport
    let clock: any FlashClock
    let timeouts: DFUTimeouts
    private let transfers = Atomic<Int>(0)

    /// Phase ID of the command/GetPhase alternate (`virtual`).
    public static let commandPhase: UInt8 = 0xF1

    private init(
        identity: USBDeviceIdentity, deviceDescriptor: DeviceDescriptor, alternates: [DFUAlternate],
        functional: DFUFunctionalDescriptor, transport: any USBControlTransport, clock: any FlashClock,
        timeouts: DFUTimeouts, transfers: Int
    ) {
        self.identity = identity
        self.deviceDescriptor = deviceDescriptor
        self.alternates = alternates
        self.functional = functional
        self.transport = transport
        self.clock = clock
        self.timeouts = timeouts
        self.transfers.store(transfers, ordering: .relaxed)
    }

    /// Reads the device and configuration descriptors, the identity strings, every DFU
    /// alternate's string and the functional descriptor.
    ///
    /// An identity string that cannot be read stays nil (dfu-util shows "UNKNOWN"), but an
    /// alternate's name is what tells its phase (§3): one that cannot be read (after the
    /// transport's own retries, `StringRetryPolicy`) fails the open, so that the caller opens the
    /// device again instead of flashing a stage whose phase has no alternate.
    /// - Throws: `DFUError` when a descriptor or an alternate's name cannot be read, the device is
    ///   gone, or it has no DFU interface.
    public static func open(
        _ transport: any USBControlTransport, clock: any FlashClock, timeouts: DFUTimeouts = .init()
    ) async throws -> DFUDevice {
        var count = 0
        func step<T>(_ operation: String, _ body: () async throws -> T) async throws -> T {
            count += 1
            do { return try await body() } catch let error as USBTransferError {
                throw DFUError(.transport(error), operation: operation)
            }
        }
        func optionalString(_ index: UInt8) async throws -> String? {
            guard index != 0 else { return nil }
            do {
                return try await step("string descriptor \(index)") { try await transport.string(index: index) }
            } catch let error as DFUError where error.transferError?.kind != .noDevice {
                return nil
            }
        }
        /// The name of `alt`, which must be readable when the alternate has one.
        func name(of alt: InterfaceAltSetting) async throws -> String? {
            let index = alt.interfaceStringIndex
            guard index != 0 else { return nil }
            count += 1
            do {
                return try await transport.string(index: index)
            } catch var error as USBTransferError {
                let read = error.operation
                error.operation =
                    "the name of DFU alternate setting \(alt.alternateSetting) (string descriptor \(index)) of the device on \(transport.identity.port)"
                error.detail = [read, error.detail].compactMap { $0 }.joined(separator: ", ")
                throw DFUError(.transport(error), operation: "reading the alternate names")
            }
        }
        let device = try await step("GET_DESCRIPTOR device") { try await transport.deviceDescriptor() }
        let configuration = try await step("GET_DESCRIPTOR configuration") {
            try await transport.configurationDescriptor()
        }
        var identity = transport.identity
        identity.vendorID = device.vendorID
        identity.productID = device.productID
        identity.bcdDevice = device.bcdDevice
        if let text = try await optionalString(device.manufacturerIndex) { identity.manufacturer = text }
        if let text = try await optionalString(device.productIndex) { identity.product = text }
        if let text = try await optionalString(device.serialNumberIndex) { identity.serial = text }
        let dfuAlternates = configuration.interfaces.filter(\.isDFU)
        guard !dfuAlternates.isEmpty else {
            throw DFUError(.malformed("the configuration has no DFU interface"), operation: "open")
        }
        var alternates: [DFUAlternate] = []
        for alt in dfuAlternates {
            let text = try await name(of: alt)
            alternates.append(
                DFUAlternate(interface: alt.interfaceNumber, alternateSetting: alt.alternateSetting, string: text))
        }
        guard let functional = dfuAlternates.lazy.compactMap(\.dfuFunctionalDescriptor).first else {
            throw DFUError(.malformed("no DFU functional descriptor"), operation: "open")
        }
        return DFUDevice(
            identity: identity, deviceDescriptor: device, alternates: alternates, functional: functional,
            transport: transport, clock: clock, timeouts: timeouts, transfers: count)
    }

    /// Every control transfer made through this device so far (descriptor reads included).
    public var controlTransferCount: Int { transfers.load(ordering: .relaxed) }

    /// The alternate whose string names phase `id` (never chosen by index, reference §3).
    public func alternate(forPhase id: UInt8) -> DFUAlternate? {
        alternates.first { $0.name?.phaseID == id }
    }

    /// Data stage size: wTransferSize rounded down to a multiple of bMaxPacketSize0 (rule 2).
    public var chunkSize: Int {
        let transfer = Int(functional.transferSize)
        let packet = Int(deviceDescriptor.maxPacketSize0)
        guard packet > 0, transfer >= packet else { return max(transfer, 1) }
        return transfer / packet * packet
    }

    /// Number of the first data block: 2 for DfuSe (bcdDFUVersion 0x011A), else 0 (rule 3).
    public var firstBlockNumber: UInt16 { functional.isDfuSe ? 2 : 0 }

    // MARK: - GetPhase and commands

    /// Reads GetPhase: SET_INTERFACE to the 0xF1 alternate, UPLOAD block 0 with wLength 512.
    public func getPhase() async throws -> GetPhaseReply {
        let alt = try requireAlternate(Self.commandPhase, "GetPhase")
        try await select(alt, "GetPhase")
        let bytes = try await controlIn(
            request: DFURequest.upload, value: 0, alt: alt, length: 512, timeout: timeouts.control,
            "GetPhase (DFU_UPLOAD)")
        return try GetPhaseReply(bytes: bytes)
    }

    /// Writes the U-Boot command alternate (§4.4): phase byte then the big-endian address, then the
    /// zero-length DNLOAD that executes it.
    public func writeCommand(phase: UInt8, address: UInt32) async throws {
        let payload: [UInt8] = [
            phase, UInt8(address >> 24), UInt8((address >> 16) & 0xFF), UInt8((address >> 8) & 0xFF),
            UInt8(address & 0xFF),
        ]
        _ = try await download(MemoryByteSource(payload), phase: Self.commandPhase)
    }

    /// DFU_DETACH. The device may vanish at once, so "no device" and I/O errors count as success.
    public func detach() async throws {
        let alt = alternates.first
        do {
            try await controlOut(
                request: DFURequest.detach, value: functional.detachTimeoutMS, interface: alt?.interface ?? 0, data: [],
                timeout: timeouts.control, "DFU_DETACH")
        } catch let error as DFUError {
            guard let transfer = error.transferError, transfer.kind == .noDevice || transfer.kind == .io else {
                throw error
            }
        }
    }

    // MARK: - Download

    /// Sends `source` to the alternate of `phase` following host rules 1–6 of §1.2.
    /// - Parameters:
    ///   - deviceMayLeave: the MP15 ROM starts TF-A on manifestation and may stop answering; a
    ///     lost device (no device / I/O error) after the zero-length DNLOAD is then success.
    ///   - progress: called with the number of bytes accepted so far.
    public func download(
        _ source: any ByteSource, phase: UInt8, deviceMayLeave: Bool = false,
        progress: @Sendable (Int64) -> Void = { _ in }
    ) async throws -> DownloadReport {
        let start = clock.now
        let startTransfers = controlTransferCount
        let label = "download of phase 0x\(hex2(phase, uppercase: true))"
        let alt = try requireAlternate(phase, label)
        // A zero-length DNLOAD in dfuIDLE is an error for TF-A and U-Boot: refuse before asking.
        guard source.count > 0 else { throw DFUError(.malformed("nothing to send (empty source)"), operation: label) }
        try await select(alt, label)
        try await expectIdle(alt, label)

        let chunk = chunkSize
        var block = firstBlockNumber
        var offset: Int64 = 0
        var blocks = 0
        while offset < source.count {
            try Task.checkCancellation()
            let data = try source.read(offset: offset, length: Int(min(Int64(chunk), source.count - offset)))
            guard !data.isEmpty else {
                throw DFUError(.malformed("the source returned no bytes at offset \(offset)"), operation: label)
            }
            let operation = "\(label): DFU_DNLOAD block \(block)"
            try await controlOut(
                request: DFURequest.download, value: block, interface: alt.interface, data: data,
                timeout: timeouts.busyWrite,
                operation)
            try await pollUntilDownloadIdle(alt, operation)
            offset += Int64(data.count)
            blocks += 1
            block &+= 1
            progress(offset)
        }
        let finish = "\(label): zero-length DFU_DNLOAD block \(block)"
        do {
            try await controlOut(
                request: DFURequest.download, value: block, interface: alt.interface, data: [],
                timeout: timeouts.busyWrite,
                finish)
            try await pollUntilManifested(alt, finish)
        } catch let error as DFUError where deviceMayLeave && Self.isDeviceGone(error) {
            // The MP15 ROM jumped to the FSBL (reference §1.2 rule 5).
        }
        return DownloadReport(
            bytes: offset, blocks: blocks, controlTransfers: controlTransferCount - startTransfers,
            duration: clock.now - start)
    }

    /// Reads `length` bytes of the alternate of `phase` from where the device starts the read (see
    /// `upload(phase:length:skip:consume:)`); fewer when the alternate is shorter.
    public func upload(phase: UInt8, length: Int) async throws -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(length)
        _ = try await upload(phase: phase, length: Int64(length)) { result += $0 }
        return result
    }

    /// Streams the alternate of `phase` by DFU_UPLOAD blocks 0, 1, 2, … of wLength `chunkSize`
    /// (U-Boot reads a whole 4096-byte request buffer whatever wLength says, so a smaller wLength
    /// would lose data). A reply shorter than wLength ends the read and U-Boot's transaction.
    ///
    /// Where the read starts is the device's choice: U-Boot starts a read of the **current
    /// partition's** alternate at the offset stored by `setPhase(_:offset:)`, every other one at 0
    /// (`dfu_initiated_callback()`, reference §4.4).
    /// - Parameters:
    ///   - length: stop after this many bytes (nil: until the device sends a short block).
    ///   - skip: bytes at the start that are read but not passed to `consume`.
    ///   - consume: the bytes, in order, in pieces of at most one block.
    /// - Returns: what was read; `closed` is false when the read stopped before the device ended it:
    ///   U-Boot then keeps the alternate's transaction open (DFU_ABORT does not close it) and the
    ///   next transfer on that alternate must go through `closeTransaction(phase:)`.
    public func upload(
        phase: UInt8, length: Int64? = nil, skip: Int64 = 0, consume: (ArraySlice<UInt8>) throws -> Void
    ) async throws -> UploadReport {
        let start = clock.now
        let label = "upload of phase 0x\(hex2(phase, uppercase: true))"
        let alt = try requireAlternate(phase, label)
        try await select(alt, label)
        try await expectIdle(alt, label)
        let chunk = chunkSize
        let wanted = length.map { $0 + skip }
        var position: Int64 = 0
        var block: UInt16 = 0
        var blocks = 0
        while wanted.map({ position < $0 }) ?? true {
            try Task.checkCancellation()
            let data = try await controlIn(
                request: DFURequest.upload, value: block, alt: alt, length: UInt16(chunk), timeout: timeouts.busyWrite,
                "\(label): DFU_UPLOAD block \(block)")
            blocks += 1
            block &+= 1
            let end = position + Int64(data.count)
            let from = max(position, skip)
            let to = min(end, wanted ?? end)
            if from < to { try consume(data[Int(from - position)..<Int(to - position)]) }
            position = end
            if data.count < chunk {
                return UploadReport(
                    bytes: max(0, min(position, wanted ?? position) - skip), blocks: blocks, closed: true,
                    duration: clock.now - start)
            }
        }
        // Every block was full: the device waits in dfuUPLOAD-IDLE; ABORT returns it to dfuIDLE
        // (U-Boot's transaction on this alternate stays open).
        try await controlOut(
            request: DFURequest.abort, value: 0, interface: alt.interface, data: [], timeout: timeouts.control,
            "\(label): DFU_ABORT")
        return UploadReport(
            bytes: min(position, wanted ?? position) - skip, blocks: blocks, closed: false,
            duration: clock.now - start)
    }

    /// DFU_ABORT: back to dfuIDLE from dfuDNLOAD-SYNC/-IDLE or dfuUPLOAD-IDLE, so the stage answers
    /// GetPhase again (TF-A and the ROM refuse UPLOAD in the middle of a download: TF-A's
    /// `usb_dfu_upload()`). What the stage received stays where it is: TF-A's write address only
    /// moves forward (`plat/st/common/stm32cubeprogrammer_usb.c`).
    public func abort() async throws {
        try await controlOut(
            request: DFURequest.abort, value: 0, interface: 0, data: [], timeout: timeouts.control, "DFU_ABORT")
    }

    /// Closes a transaction U-Boot keeps open on the alternate of `phase` (a read stopped early, or
    /// a download whose host died): SET_INTERFACE, DNLOAD block 0 of one byte, GETSTATUS. An open
    /// transaction expects another block number, so U-Boot answers "Wrong sequence number", cleans
    /// the transaction up and goes to dfuERROR; a closed one takes the byte into its buffer without
    /// writing it, and a second block 0 then fails the same way. CLRSTATUS ends in dfuIDLE. Nothing
    /// reaches the medium (`drivers/dfu/dfu.c` `dfu_write()`).
    ///
    /// On the **current partition's** alternate the failure is also reported to `stm32prog`
    /// (`dfu_error_callback()` → GetPhase 0xFF "Wrong sequence number"); `setPhase(_:offset:)`
    /// clears it. Prefer making another partition current first.
    /// - Returns: true when a stale transaction was found (the first block 0 failed).
    @discardableResult
    public func closeTransaction(phase: UInt8) async throws -> Bool {
        let label = "closing the transaction of phase 0x\(hex2(phase, uppercase: true))"
        let alt = try requireAlternate(phase, label)
        try await select(alt, label)
        try await expectIdle(alt, label)
        var stale = true
        for attempt in 0..<2 {
            try await controlOut(
                request: DFURequest.download, value: 0, interface: alt.interface, data: [0],
                timeout: timeouts.busyWrite,
                "\(label): DFU_DNLOAD block 0")
            let status = try await getStatus(interface: alt.interface, timeout: timeouts.busyWrite)
            try await honour(status)
            switch status.state {
            case .error:
                try await controlOut(
                    request: DFURequest.clearStatus, value: 0, interface: alt.interface, data: [],
                    timeout: timeouts.control, "\(label): DFU_CLRSTATUS")
                return stale
            case .dnloadIdle where attempt == 0, .dnloadSync where attempt == 0, .dnBusy where attempt == 0:
                stale = false
            default:
                throw DFUError(.unexpectedState(status.state), operation: label)
            }
        }
        throw DFUError(.unexpectedState(.dnloadIdle), operation: label)
    }

    /// Writes the command alternate (U-Boot `stm32prog_set_phase()`, §4.4): make `id` the current
    /// phase with `offset` as the stored offset. The next transfer (download **or** upload) on that
    /// partition's alternate starts `offset` bytes in, and the offset is kept when the phase ends:
    /// set the next phase's offset back to 0 yourself.
    public func setPhase(_ id: UInt8, offset: UInt32) async throws {
        try await writeCommand(phase: id, address: offset)
    }

    /// Sends `source` into the partition of `phase` starting `offset` bytes in: the command
    /// alternate sets phase and offset, then the range goes out as one transfer ending with the
    /// zero-length DNLOAD. Bytes outside the range keep what the medium held. The flush moves U-Boot
    /// to the next phase with the offset still stored.
    public func download(
        _ source: any ByteSource, phase: UInt8, offset: UInt32, progress: @Sendable (Int64) -> Void = { _ in }
    ) async throws -> DownloadReport {
        try await setPhase(phase, offset: offset)
        return try await download(source, phase: phase, progress: progress)
    }

    /// After a STALL or dfuERROR: GETSTATUS, and CLRSTATUS when (and only when) it says dfuERROR
    /// (rule 6), so that GetPhase can be read next. TF-A keeps its DFU state across SET_INTERFACE
    /// and refuses requests in dfuERROR; U-Boot's SET_INTERFACE resets it anyway.
    /// - Returns: the status before clearing.
    @discardableResult
    public func clearError() async throws -> DFUStatusReply {
        let interface = alternates.first?.interface ?? 0
        let status = try await getStatus(interface: interface)
        try await honour(status)
        if status.state == .error {
            try await controlOut(
                request: DFURequest.clearStatus, value: 0, interface: interface, data: [], timeout: timeouts.control,
                "DFU_CLRSTATUS after an error")
        }
        return status
    }

    /// One GETSTATUS.
    public func getStatus(interface: UInt8 = 0, timeout: Duration? = nil) async throws -> DFUStatusReply {
        let bytes = try await controlIn(
            request: DFURequest.getStatus, value: 0, interface: interface, length: 6,
            timeout: timeout ?? timeouts.control,
            "DFU_GETSTATUS")
        guard let reply = DFUStatusReply(bytes: bytes) else {
            throw DFUError(.malformed("GETSTATUS answered \(bytes)"), operation: "DFU_GETSTATUS")
        }
        return reply
    }

    // MARK: - Steps

    private func requireAlternate(_ phase: UInt8, _ operation: String) throws -> DFUAlternate {
        guard let alt = alternate(forPhase: phase) else {
            throw DFUError(.noAlternate(phase: phase), operation: operation)
        }
        return alt
    }

    /// Rule 1: select the alternate before each transfer.
    /// SET_INTERFACE to `alt`, counted (also used by the DfuSe client).
    public func select(_ alt: DFUAlternate, _ operation: String) async throws {
        try await counted("\(operation): SET_INTERFACE \(alt.alternateSetting)") {
            try await transport.setAlternate(interface: alt.interface, alternate: alt.alternateSetting)
        }
    }

    /// Rule 1 and 6: expect dfuIDLE; from dfuERROR (and only then) one CLRSTATUS.
    private func expectIdle(_ alt: DFUAlternate, _ operation: String) async throws {
        var status = try await getStatus(interface: alt.interface)
        try await honour(status)
        if status.state == .error {
            try await controlOut(
                request: DFURequest.clearStatus, value: 0, interface: alt.interface, data: [],
                timeout: timeouts.control,
                "\(operation): DFU_CLRSTATUS")
            status = try await getStatus(interface: alt.interface)
            try await honour(status)
        }
        guard status.state == .dfuIdle else {
            if status.state == .error {
                throw DFUError(.deviceError(state: status.state, status: status.status), operation: operation)
            }
            throw DFUError(.unexpectedState(status.state), operation: operation)
        }
    }

    /// Rule 4: after a data block, poll until dfuDNLOAD-IDLE (3 and 4 on the way), never past
    /// dfuERROR.
    private func pollUntilDownloadIdle(_ alt: DFUAlternate, _ operation: String) async throws {
        let start = clock.now
        while true {
            try Task.checkCancellation()
            let asked = clock.now
            let status = try await getStatus(interface: alt.interface, timeout: timeouts.busyWrite)
            try await honour(status)
            switch status.state {
            case .dnloadIdle: return
            case .dnloadSync, .dnBusy:
                guard asked - start <= timeouts.busyWrite else {
                    throw DFUError(.unexpectedState(status.state), operation: operation + " (still busy)")
                }
            case .error: throw DFUError(.deviceError(state: status.state, status: status.status), operation: operation)
            default: throw DFUError(.unexpectedState(status.state), operation: operation)
            }
        }
    }

    /// Rule 5: after the zero-length DNLOAD, poll until dfuIDLE (6, 7 on the way; 8 means the
    /// device resets by itself). Not cancelled: U-Boot flushes on the first of these GETSTATUS, so
    /// a cancel here would leave a whole partition sent but never written.
    ///
    /// Both polls give up only on a busy answer to a request *sent* after the limit: a host that
    /// was itself held up (a loaded machine) asks once more instead of blaming the board.
    private func pollUntilManifested(_ alt: DFUAlternate, _ operation: String) async throws {
        let start = clock.now
        while true {
            let asked = clock.now
            let status = try await getStatus(interface: alt.interface, timeout: timeouts.busyWrite)
            try await honour(status)
            switch status.state {
            case .dfuIdle, .manifestWaitReset: return
            case .manifestSync, .manifest, .dnloadSync, .dnBusy:
                guard asked - start <= timeouts.busyWrite else {
                    throw DFUError(.unexpectedState(status.state), operation: operation + " (manifestation never ends)")
                }
            case .error: throw DFUError(.deviceError(state: status.state, status: status.status), operation: operation)
            default: throw DFUError(.unexpectedState(status.state), operation: operation)
            }
        }
    }

    /// bwPollTimeout is the least time before the next request: sleep it on the injected clock.
    func honour(_ status: DFUStatusReply) async throws {
        if status.pollTimeout > .zero { try await clock.sleep(for: status.pollTimeout) }
    }

    static func isDeviceGone(_ error: DFUError) -> Bool {
        guard let transfer = error.transferError else { return false }
        return transfer.kind == .noDevice || transfer.kind == .io
    }

    // MARK: - Transfers

    private func counted<T>(_ operation: String, _ body: () async throws -> T) async throws -> T {
        transfers.add(1, ordering: .relaxed)
        do { return try await body() } catch let error as USBTransferError {
            throw DFUError(.transport(error), operation: operation)
        }
    }

    private func controlIn(
        request: UInt8, value: UInt16, alt: DFUAlternate, length: UInt16, timeout: Duration, _ operation: String
    ) async throws -> [UInt8] {
        try await controlIn(
            request: request, value: value, interface: alt.interface, length: length, timeout: timeout, operation)
    }

    /// One class request with an IN data stage, counted; transfer errors become `DFUError`
    /// (also used by the DfuSe client for its block-addressed UPLOADs).
    public func controlIn(
        request: UInt8, value: UInt16, interface: UInt8, length: UInt16, timeout: Duration, _ operation: String
    ) async throws -> [UInt8] {
        let setup = SetupPacket(
            requestType: USBRequest.classInterfaceIn, request: request, value: value, index: UInt16(interface),
            length: length)
        return try await counted(operation) { try await transport.controlIn(setup, timeout: timeout) }
    }

    /// One class request with an OUT data stage, counted; transfer errors become `DFUError`.
    public func controlOut(
        request: UInt8, value: UInt16, interface: UInt8, data: [UInt8], timeout: Duration, _ operation: String
    ) async throws {
        let setup = SetupPacket(
            requestType: USBRequest.classInterfaceOut, request: request, value: value, index: UInt16(interface),
            length: UInt16(data.count))
        try await counted(operation) { try await transport.controlOut(setup, data: data, timeout: timeout) }
    }
}
