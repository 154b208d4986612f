import DFU
public import USBModel

/// One request the board received, for tests and the protocol checker.
public struct BoardTraceEntry: Sendable, Hashable, CustomStringConvertible {
    /// Board time when the request arrived.
    public var time: Duration
    public var stage: FirmwareStage
    /// Enumeration number (1 = the ROM at power-on); an in-place firmware change keeps it.
    public var session: Int
    public var setup: SetupPacket
    /// Bytes of the OUT data stage, or returned in the IN data stage.
    public var dataLength: Int
    public var reply: DeviceControlReply

    public var description: String {
        let outcome: String
        switch reply.outcome {
        case .ok(let bytes): outcome = "ok(\(bytes.count))"
        case .stall: outcome = "STALL"
        case .noAnswer: outcome = "no answer"
        }
        return "[\(time)] #\(session) \(stage.rawValue) \(setup) data=\(dataLength) → \(outcome)"
    }

    /// bRequest of the entry that records a USB bus reset of the port (not a control request).
    public static let busResetRequest: UInt8 = 0xFF

    /// True when this entry is a bus reset, not a request.
    public var isBusReset: Bool { setup.requestType == 0 && setup.request == Self.busResetRequest }

    /// True for a DFU class request `request` (DFURequest constants).
    public func isDFU(_ request: UInt8) -> Bool { setup.requestType & 0x60 == 0x20 && setup.request == request }
}

/// The USB device on the board's port during one enumeration. The firmware behind it can change
/// in place (MP15 ROM → TF-A keeps the session, reference §A.4).
final class BoardDevice: USBDeviceModel {
    unowned let board: VirtualBoard
    let session: Int
    var firmware: Firmware
    /// transient-strings: string requests that still STALL.
    var stringFailuresLeft: Int
    /// alternate-name-stalls: requests for the command alternate's name that still STALL.
    var commandNameFailuresLeft: Int
    /// The next request fails at the host with this error instead of its reply.
    var pendingFailure: USBTransferError.Kind?
    /// The firmware stopped answering (a panic in place).
    var silent = false
    /// A GetPhase read happened since the last DNLOAD (checked at DETACH).
    var getPhaseSinceDownload = false

    init(board: VirtualBoard, session: Int, firmware: Firmware) {
        self.board = board
        self.session = session
        self.firmware = firmware
        stringFailuresLeft =
            board.configuration.fault == .transientStrings ? board.configuration.transientStringFailures : 0
        commandNameFailuresLeft =
            board.configuration.fault == .alternateNameStalls ? board.configuration.alternateNameFailures : 0
    }

    /// String `index` is the name of the command (GetPhase) alternate of the current firmware.
    private func namesCommandAlternate(_ index: UInt8) -> Bool {
        index != 0 && board.configuration.alternateNameStallStages.contains(firmware.stage)
            && firmware.identity.string(index).flatMap(DFUAlternateName.parse)?.phaseID == DFUDevice.commandPhase
    }

    var deviceDescriptor: DeviceDescriptor { firmware.identity.deviceDescriptor }
    var configuration: ConfigurationDescriptor { firmware.identity.configuration }
    var speed: USBSpeed { board.configuration.speed }

    func stringDescriptor(index: UInt8, languageID: UInt16) -> [UInt8]? {
        let setup = SetupPacket(
            requestType: USBRequest.standardDeviceIn, request: USBRequest.getDescriptor,
            value: UInt16(DescriptorType.string) << 8 | UInt16(index), index: languageID, length: 255)
        var bytes: [UInt8]?
        if silent {
            bytes = nil
        } else if stringFailuresLeft > 0 {
            stringFailuresLeft -= 1
        } else if commandNameFailuresLeft > 0, namesCommandAlternate(index) {
            commandNameFailuresLeft -= 1
        } else if index == 0 {
            bytes = StringDescriptor.languageTable
        } else {
            bytes = firmware.identity.string(index).map(StringDescriptor.encode)
        }
        record(setup, dataLength: bytes?.count ?? 0, reply: bytes.map { .data($0) } ?? .stall)
        return bytes
    }

    func setInterface(_ interface: UInt8, alternate: UInt8) -> Bool {
        let setup = SetupPacket(
            requestType: USBRequest.standardInterfaceOut, request: USBRequest.setInterface, value: UInt16(alternate),
            index: UInt16(interface), length: 0)
        let accepted = !silent && interface == 0 && firmware.dfu.setInterface(alternate)
        record(setup, dataLength: 0, reply: accepted ? .ack : .stall)
        return accepted
    }

    func control(_ setup: SetupPacket, data: [UInt8]) -> DeviceControlReply {
        let handler = firmware
        var reply: DeviceControlReply
        if silent {
            reply = DeviceControlReply(.noAnswer)
        } else if setup.requestType & 0x60 != 0x20 || setup.index != 0 {
            reply = .stall
        } else if board.injectGetStatusStall(setup, stage: handler.stage) {
            reply = .stall
        } else {
            checkProtocol(setup, handler: handler)
            handler.dfu.now = board.now
            handler.dfu.reportViolation = { [unowned board] in board.violation($0) }
            reply = handler.dfu.handle(setup, data: data)
            if case .ok(let bytes) = reply.outcome {
                reply.latency += board.usbTime(stage: handler.stage, bytes: max(bytes.count, data.count))
            }
        }
        let length: Int
        if case .ok(let bytes) = reply.outcome, setup.isIn { length = bytes.count } else { length = data.count }
        record(setup, dataLength: length, reply: reply, stage: handler.stage)
        board.afterRequest(setup, data: data, device: self)
        return reply
    }

    /// The checker's view of the request: GetPhase before DETACH (§4).
    private func checkProtocol(_ setup: SetupPacket, handler: Firmware) {
        switch setup.request {
        case DFURequest.upload where handler.advertisedPhase(handler.dfu.alternate) == 0xF1:
            getPhaseSinceDownload = true
        case DFURequest.download:
            getPhaseSinceDownload = false
        case DFURequest.detach:
            if !getPhaseSinceDownload {
                board.violation("DFU_DETACH to \(handler.stage.rawValue) without a GetPhase read before it")
            }
        default:
            break
        }
    }

    func busReset() {
        record(
            SetupPacket(requestType: 0, request: BoardTraceEntry.busResetRequest, value: 0, index: 0, length: 0),
            dataLength: 0,
            reply: .ack)
        board.portReset()
    }

    private func record(_ setup: SetupPacket, dataLength: Int, reply: DeviceControlReply, stage: FirmwareStage? = nil) {
        board.record(
            BoardTraceEntry(
                time: board.now, stage: stage ?? firmware.stage, session: session, setup: setup, dataLength: dataLength,
                reply: reply))
    }
}
