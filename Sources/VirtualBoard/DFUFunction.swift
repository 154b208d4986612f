import DFU
import USBModel

/// Which DFU stack answers: the three behaviours of reference §1.2.
public enum DFUDeviceProfile: String, Sendable, Hashable, CaseIterable, Codable {
    /// ST's legacy stack (ROM-like; ST TF-A v2.0/v2.2): block numbers ignored (DfuSe commands in
    /// block 0 when bcdDFUVersion is 0x011A), dfuDNBUSY with bwPollTimeout, CLRSTATUS quirk.
    case legacyST
    /// Upstream TF-A: answers dfuDNLOAD-SYNC then -IDLE, manifests inside the zero-length DNLOAD.
    case tfaUpstream
    /// U-Boot `f_dfu`: checked block numbers, 4096-byte requests, SET_INTERFACE resets the state.
    case uboot
}

/// The outcome of handing data to the firmware behind a DFU function.
enum DFUDataResult {
    /// Stored; the firmware was busy this long (U-Boot holds EP0, the legacy stack says dfuDNBUSY).
    case accepted(latency: Duration)
    /// Refused: the DFU function goes to dfuERROR (STALLing where the stack does).
    case failed
    /// Refused with this bStatus (the ROM's errVERIFY for an FSBL it will not start).
    case rejected(status: UInt8)
}

/// What a firmware does with the DFU requests of its function.
protocol DFUBackend: AnyObject {
    /// SET_INTERFACE; false = STALL.
    func dfuSelect(alternate: UInt8) -> Bool
    /// Data of one DNLOAD for `alternate`, `offset` bytes into the current transfer.
    func dfuWrite(alternate: UInt8, offset: Int, data: [UInt8]) -> DFUDataResult
    /// The transfer of `length` bytes is complete (manifestation). Legacy stack and U-Boot run it
    /// after the first GETSTATUS that follows the zero-length DNLOAD; TF-A inside that DNLOAD.
    func dfuManifest(alternate: UInt8, length: Int) -> DFUDataResult
    /// UPLOAD data at `offset`; nil = refused (STALL).
    func dfuRead(alternate: UInt8, offset: Int, length: Int) -> [UInt8]?
    /// DFU_DETACH accepted.
    func dfuDetach()
    /// U-Boot: a DFU-level error on `alternate` (`Wrong sequence number`), for `dfu_error_callback`.
    func dfuError(alternate: UInt8, message: String)
    /// U-Boot `dfu_write()`: the block number is checked against the alternate's own transaction,
    /// which outlives SET_INTERFACE, ABORT and CLRSTATUS (`drivers/dfu/dfu.c`). Zero-length = end.
    func ubootWrite(alternate: UInt8, block: UInt16, data: [UInt8]) -> DFUDataResult
    /// U-Boot `dfu_read()`: one 4096-byte request of the alternate's transaction; nil = -1 (STALL).
    func ubootRead(alternate: UInt8, block: UInt16, size: Int) -> (bytes: [UInt8], latency: Duration)?
    /// A DNLOAD carrying data is about to be handled (before any check): for observers of the
    /// board (the emulator's `--pause-at`), never for the firmware's own behaviour.
    func dfuDataBlockArriving(alternate: UInt8, block: UInt16)
}

/// The device side of DFU 1.1 on EP0, with the per-firmware behaviours of reference §1.2.
final class DFUFunction {
    let profile: DFUDeviceProfile
    let functional: DFUFunctionalDescriptor
    private(set) var state: DFUState = .dfuIdle
    private(set) var status: UInt8 = DFUStatusCode.ok
    private(set) var alternate: UInt8 = 0
    weak var backend: (any DFUBackend)?
    /// The board's time; set by the host before each request.
    var now: Duration = .zero
    /// Reports what a well-behaved host would not have done (the protocol checker).
    var reportViolation: (String) -> Void = { _ in }

    /// Bytes received in the current download.
    private var received = 0
    /// Block number the host rules (§1.2 rule 3) call for next.
    private var expectedBlock: UInt16 = 0
    /// Legacy stack: when the current block is stored.
    private var busyUntil: Duration = .zero
    /// U-Boot: time the deferred flush holds the next request.
    private var pendingLatency: Duration = .zero
    /// Earliest time the last bwPollTimeout allows the next request.
    private var pollDeadline: Duration = .zero

    init(profile: DFUDeviceProfile, functional: DFUFunctionalDescriptor) {
        self.profile = profile
        self.functional = functional
        expectedBlock = firstBlock
    }

    private var firstBlock: UInt16 { profile == .legacyST && functional.isDfuSe ? 2 : 0 }
    private var maxTransfer: Int { profile == .uboot ? 4096 : Int(functional.transferSize) }

    /// Standard SET_INTERFACE.
    func setInterface(_ alt: UInt8) -> Bool {
        guard backend?.dfuSelect(alternate: alt) ?? false else { return false }
        alternate = alt
        if profile == .uboot {
            state = .dfuIdle
            status = DFUStatusCode.ok
            resetTransfer()
        }
        return true
    }

    /// Puts the function back to dfuIDLE (a new enumeration, or a firmware taking over in place).
    func reset() {
        state = .dfuIdle
        status = DFUStatusCode.ok
        resetTransfer()
    }

    private func resetTransfer() {
        received = 0
        expectedBlock = firstBlock
    }

    private func fail(_ code: UInt8 = DFUStatusCode.errUnknown) {
        state = .error
        status = code
    }

    /// A class request on the DFU interface.
    func handle(_ setup: SetupPacket, data: [UInt8]) -> DeviceControlReply {
        if pollDeadline > now, setup.request != DFURequest.getState {
            reportViolation(
                "\(DFURequest.name(setup.request)) sent \(Self.milliseconds(pollDeadline - now)) ms before bwPollTimeout elapsed"
            )
        }
        pollDeadline = .zero
        let latency = pendingLatency
        pendingLatency = .zero
        var reply: DeviceControlReply
        switch setup.request {
        case DFURequest.detach: reply = detach()
        case DFURequest.download where !setup.isIn: reply = download(block: setup.value, data: data)
        case DFURequest.upload where setup.isIn: reply = upload(block: setup.value, length: Int(setup.length))
        case DFURequest.getStatus where setup.isIn: reply = getStatus()
        case DFURequest.clearStatus: reply = clearStatus()
        case DFURequest.getState where setup.isIn: reply = .data([state.rawValue])
        case DFURequest.abort: reply = abort()
        default:
            if profile == .uboot { fail() }
            reply = .stall
        }
        reply.latency += latency
        return reply
    }

    private func detach() -> DeviceControlReply {
        // U-Boot accepts DETACH only in dfuIDLE (its other state handlers STALL it).
        if profile == .uboot, state != .dfuIdle {
            fail()
            return .stall
        }
        backend?.dfuDetach()
        return .ack
    }

    private func download(block: UInt16, data: [UInt8]) -> DeviceControlReply {
        if !data.isEmpty { backend?.dfuDataBlockArriving(alternate: alternate, block: block) }
        guard state == .dfuIdle || state == .dnloadIdle else {
            fail()
            return .stall
        }
        if profile == .uboot { return ubootDownload(block: block, data: data) }
        if state == .dfuIdle { resetTransfer() }
        if block != expectedBlock {
            reportViolation(
                (data.isEmpty ? "zero-length DFU_DNLOAD" : "DFU_DNLOAD") + " block \(block), expected \(expectedBlock)")
        }
        if data.isEmpty { return downloadEnd(block: block) }
        let payload = data
        switch profile {
        case .uboot:
            break
        case .legacyST, .tfaUpstream:
            guard payload.count <= maxTransfer else {
                fail(DFUStatusCode.errStalledPacket)
                return .stall
            }
            if profile == .legacyST, functional.isDfuSe, block < 2 {
                // DfuSe: block 0 carries a command (0x21 set address, 0x41 erase), block 1 nothing.
                expectedBlock = 2
                guard block == 0, let command = payload.first, command == 0x21 || command == 0x41, payload.count == 5
                else {
                    fail(DFUStatusCode.errStalledPacket)
                    return .stall
                }
                state = .dnBusy
                busyUntil = now
                return .ack
            }
        }
        expectedBlock = block &+ 1
        let offset = received
        received += payload.count
        switch backend?.dfuWrite(alternate: alternate, offset: offset, data: payload) ?? .failed {
        case .accepted(let latency):
            switch profile {
            case .legacyST:
                state = .dnBusy
                busyUntil = now + latency
                return .ack
            case .tfaUpstream:
                state = .dnloadSync
                return .ack
            case .uboot:
                // The write runs in the DNLOAD completion: EP0 is held for its duration.
                return DeviceControlReply(.ok([]), latency: latency)
            }
        case .failed, .rejected:
            fail()
            // U-Boot reports the failure at the next GETSTATUS; the others refuse the data.
            return profile == .uboot ? .ack : .stall
        }
    }

    private func downloadEnd(block: UInt16) -> DeviceControlReply {
        switch profile {
        case .legacyST:
            state = .manifestSync
            return .ack
        case .tfaUpstream:
            guard state == .dnloadIdle else {
                fail()
                return .stall
            }
            // TF-A runs the manifestation callback inside this request; a failure STALLs it.
            switch backend?.dfuManifest(alternate: alternate, length: received) ?? .failed {
            case .accepted(let latency):
                state = .manifestSync
                return DeviceControlReply(.ok([]), latency: latency)
            case .failed, .rejected:
                fail(DFUStatusCode.errVendor)
                return .stall
            }
        case .uboot:
            return .stall
        }
    }

    /// U-Boot's f_dfu: a zero-length DNLOAD in dfuIDLE is an error; otherwise `dfu_write()` runs in
    /// the request's completion (block number checked by the alternate's transaction, buffer drained
    /// to storage when full or at the zero-length end, EP0 held meanwhile).
    private func ubootDownload(block: UInt16, data: [UInt8]) -> DeviceControlReply {
        if data.isEmpty, state == .dfuIdle {
            fail()
            return .stall
        }
        let payload = data.count > maxTransfer ? Array(data.prefix(maxTransfer)) : data
        state = data.isEmpty ? .manifestSync : .dnloadSync
        switch backend?.ubootWrite(alternate: alternate, block: block, data: payload) ?? .failed {
        case .accepted(let latency):
            received += payload.count
            return DeviceControlReply(.ok([]), latency: latency)
        case .failed, .rejected:
            fail()
            return .ack
        }
    }

    private func upload(block: UInt16, length: Int) -> DeviceControlReply {
        switch profile {
        case .legacyST:
            guard state == .dfuIdle || state == .uploadIdle, block == 0 else {
                fail()
                return .stall
            }
        case .tfaUpstream:
            // dfuERROR refuses UPLOAD until CLRSTATUS (seen on an independent emulation, issue 9
            // item 1; TF-A's own handler UNCONFIRMED): a host must clear before reading GetPhase.
            guard state != .error else { return .stall }
        case .uboot:
            return ubootUpload(block: block, length: length)
        }
        guard let bytes = backend?.dfuRead(alternate: alternate, offset: 0, length: length) else {
            fail()
            return .stall
        }
        // TF-A and the legacy stack send their whole answer, never clipped to wLength (§4.1).
        state = bytes.count < length ? .dfuIdle : .uploadIdle
        return .data(bytes)
    }

    /// U-Boot's f_dfu: from dfuIDLE the block number is forced to 0, from dfuUPLOAD-IDLE it is
    /// wValue; `dfu_read()` always reads a whole 4096-byte request buffer (`req->length`) whatever
    /// wLength says, and a reply shorter than wLength returns to dfuIDLE. A failed read STALLs and
    /// leaves the state in dfuUPLOAD-IDLE.
    private func ubootUpload(block: UInt16, length: Int) -> DeviceControlReply {
        let number: UInt16
        switch state {
        case .dfuIdle: number = 0
        case .uploadIdle: number = block
        default:
            fail()
            return .stall
        }
        state = .uploadIdle
        guard let (bytes, latency) = backend?.ubootRead(alternate: alternate, block: number, size: maxTransfer) else {
            return .stall
        }
        let sent = Array(bytes.prefix(length))
        if sent.count < min(length, maxTransfer) { state = .dfuIdle }
        return .data(sent, latency: latency)
    }

    private func getStatus() -> DeviceControlReply {
        var pollTimeout: Duration = .zero
        var reported = state
        switch (profile, state) {
        case (.legacyST, .dnBusy):
            if now < busyUntil {
                pollTimeout = Self.roundUpToMilliseconds(busyUntil - now)
            } else {
                state = .dnloadIdle
                reported = .dnloadIdle
            }
        case (.legacyST, .manifestSync):
            // Answers dfuMANIFEST once, then the stack leaves (the ROM starts the FSBL here).
            reported = .manifest
            pollTimeout = .milliseconds(1)
            state = .dfuIdle
            let reply = statusReply(reported, pollTimeout)
            // A refused manifestation (the ROM's checks of the FSBL) shows at the next GETSTATUS.
            if case .rejected(let code) = backend?.dfuManifest(alternate: alternate, length: received) {
                fail(code)
            }
            resetTransfer()
            return reply
        case (.tfaUpstream, .dnloadSync):
            pollTimeout = .milliseconds(1)
            state = .dnloadIdle
        case (.tfaUpstream, .manifestSync):
            reported = .manifest
            pollTimeout = .milliseconds(1)
            state = .dfuIdle
            resetTransfer()
        case (.uboot, .dnloadSync), (.uboot, .dnBusy):
            state = .dnloadIdle
            reported = .dnloadIdle
        case (.uboot, .manifestSync):
            // dfuMANIFEST is sent, then the deferred flush runs before the next request.
            state = .manifest
            reported = .manifest
            let reply = statusReply(reported, pollTimeout)
            switch backend?.dfuManifest(alternate: alternate, length: received) ?? .failed {
            case .accepted(let latency): pendingLatency = latency
            case .failed, .rejected: fail()
            }
            resetTransfer()
            return reply
        case (.uboot, .manifest):
            state = .dfuIdle
            reported = .dfuIdle
        default:
            break
        }
        return statusReply(reported, pollTimeout)
    }

    private func statusReply(_ reported: DFUState, _ pollTimeout: Duration) -> DeviceControlReply {
        pollDeadline = pollTimeout > .zero ? now + pollTimeout : .zero
        return .data(DFUStatusReply(status: status, pollTimeout: pollTimeout, state: reported).bytes)
    }

    private func clearStatus() -> DeviceControlReply {
        if state == .error {
            state = .dfuIdle
            status = DFUStatusCode.ok
            resetTransfer()
            return .ack
        }
        reportViolation("DFU_CLRSTATUS in state \(state)")
        fail()
        // The legacy stack and TF-A accept it and go to dfuERROR; U-Boot also STALLs.
        return profile == .uboot ? .stall : .ack
    }

    private func abort() -> DeviceControlReply {
        if profile == .uboot, ![.dfuIdle, .dnloadIdle, .uploadIdle].contains(state) {
            fail()
            return .stall
        }
        state = .dfuIdle
        resetTransfer()
        return .ack
    }

    static func roundUpToMilliseconds(_ duration: Duration) -> Duration {
        let ms = (duration - .nanoseconds(1)).components
        let whole = ms.seconds * 1000 + ms.attoseconds / 1_000_000_000_000_000
        return .milliseconds(whole + 1)
    }

    static func milliseconds(_ duration: Duration) -> String {
        String(Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15)
    }
}
