import DFU
import UBootScript
import USBModel

/// One partition alternate of U-Boot's enumeration 2 (reference §C.5).
struct UBootPartition {
    var id: UInt8
    var name: String
    var size: UInt64
    /// Selected (`P`) and not `E`: programmed, and the alternate is writable (`e`).
    var programmed: Bool
    /// Storage image (`mmc0`, `nor0`…); nil for IP `ram`.
    var device: String?
    /// eMMC boot partition 1 or 2.
    var hardwarePartition: Int?
    /// Byte offset on the device (RAM address for `ram`).
    var offset: UInt64
    /// `@<Name>/0x<id>/1*<size><unit><a|e>` as U-Boot announces it.
    var alternateString: String
}

/// What U-Boot learned from a parsed layout and prepared on storage (§C.4).
struct UBootProgram {
    /// One per layout line whose IP is not `none`, by increasing ID.
    var partitions: [UBootPartition]
    /// Bytes erased and GPTs written during device init (they set the re-enumeration delay).
    var erasedBytes: UInt64 = 0
    var gptWrites = 0
}

/// U-Boot `stm32prog` over USB (reference §C): enumeration 1 takes the FlashLayout, enumeration 2
/// the partitions, GetPhase drives the host.
final class UBootFirmware: Firmware {
    enum Alternate {
        case flashLayout, partition(Int), command, otp, pmic
    }

    private let alternateKinds: [Alternate]
    private let program: UBootProgram?
    /// Enumeration 2 (after device init, successful or not): an error read there arms a reset.
    private let afterDeviceInit: Bool
    private var phase: UInt8
    private var errorMessage: String?
    private var resetArmed = false
    private var storedOffset: UInt32 = 0
    private var layoutBuffer: [UInt8] = []
    private var layoutSession: UBootLayoutSession?
    /// A legacy script image received instead of a layout (run at the DETACH).
    private var script: [UInt8]?
    private var commandBuffer: [UInt8] = []
    private var otpImage: [UInt8]
    private var pmicImage: [UInt8] = [UInt8](repeating: 0, count: 8)
    /// Data of the current partition download not yet written to storage.
    private var pending: [UInt8] = []
    /// Bytes of the current partition download already written.
    private var drained: UInt64 = 0
    private var writeFaultDone = false
    private var vanished = false

    static let layoutAreaSize = 0x40000
    static let commandSize = 512

    var loadAddress: UInt32 { configuration.soc == .mp25 ? 0x8400_0000 : 0xC200_0000 }

    /// U-Boot as TF-A starts it: enumeration 1, or straight to enumeration 2 when a valid layout
    /// is already in RAM (ST TF-A v2.4 put it there).
    static func boot(board: VirtualBoard, ramLayout: [UInt8]?) -> UBootFirmware {
        if let ramLayout,
            case .success(let session) = UBootLayoutInterpreter.parse(ramLayout, fault: board.configuration.fault)
        {
            board.console("FlashLayout received, size = \(ramLayout.count)")
            return afterDeviceInit(board: board, result: session.initialize(board))
        }
        return UBootFirmware(board: board, program: nil, initError: nil)
    }

    /// Enumeration 2 after device init (or its error, with only the layout/virtual alternates).
    static func afterDeviceInit(board: VirtualBoard, result: Result<UBootProgram, UBootFailure>) -> UBootFirmware {
        switch result {
        case .success(let program): return UBootFirmware(board: board, program: program, initError: nil)
        case .failure(let error): return UBootFirmware(board: board, program: nil, initError: error.message)
        }
    }

    private init(board: VirtualBoard, program: UBootProgram?, initError: String?) {
        let config = board.configuration
        var kinds: [Alternate] = []
        var strings: [String] = []
        if let program {
            for (index, partition) in program.partitions.enumerated() {
                kinds.append(.partition(index))
                strings.append(partition.alternateString)
            }
        } else {
            kinds.append(.flashLayout)
            strings.append("@FlashLayout/0x00/1*256Ke")
        }
        kinds.append(.command)
        strings.append("@virtual/0xf1/1*512Be")
        let otpWords = config.soc == .mp25 ? 368 : 96
        otpImage = [2, 0, 0, 0] + [UInt8](repeating: 0, count: 4 + otpWords * 8)
        if config.otpEnabled {
            kinds.append(.otp)
            strings.append("@OTP/0xf2/1*\(otpImage.count)Be")
        }
        if config.pmicEnabled {
            kinds.append(.pmic)
            strings.append("@PMIC/0xf4/1*8Be")
        }
        alternateKinds = kinds
        self.program = program
        afterDeviceInit = program != nil || initError != nil
        if let program {
            phase = program.partitions.first { $0.programmed }?.id ?? 0xFE
        } else {
            phase = 0x00
        }
        let identity = PublishedIdentity(
            manufacturer: StageIdentity.manufacturer, product: StageIdentity.ubootProduct(config.soc),
            serial: config.fault == .movesPortNewSerial ? "55AA00000000000000000001" : config.serial,
            alternates: strings, functional: StageIdentity.ubootFunctional,
            firstInterfaceString: 5)
        super.init(board: board, stage: .uboot, identity: identity, profile: .uboot)
        if let initError { error(initError) }
        if program != nil, phase == 0xFE { board.console("Phase=END") }
    }

    private func kind(_ alt: UInt8) -> Alternate? {
        Int(alt) < alternateKinds.count ? alternateKinds[Int(alt)] : nil
    }

    /// `stm32prog_err()`: the first error wins, the phase becomes 0xFF.
    private func error(_ message: String) {
        board.console("Error: \(message)")
        guard errorMessage == nil else { return }
        errorMessage = message
        phase = 0xFF
    }

    override func getPhase() -> GetPhaseReply {
        switch phase {
        case 0xFF:
            return GetPhaseReply(
                phase: 0xFF, address: GetPhaseReply.undefinedAddress, offset: storedOffset,
                message: errorMessage ?? "Unspecified")
        case 0x00:
            return GetPhaseReply(
                phase: 0x00, address: loadAddress, offset: storedOffset, needsDetach: layoutSession != nil,
                hasDetachByte: true)
        default:
            return GetPhaseReply(phase: phase, address: GetPhaseReply.undefinedAddress, offset: storedOffset)
        }
    }

    // MARK: - DFU backend

    override func dfuWrite(alternate: UInt8, offset: Int, data: [UInt8]) -> DFUDataResult {
        switch kind(alternate) {
        case .flashLayout:
            guard offset + data.count <= Self.layoutAreaSize else {
                board.console("Request would exceed designated area!")
                dfuError(alternate: alternate, message: "DFU write error")
                return .failed
            }
            if offset == 0 { layoutBuffer = [] }
            layoutBuffer += data
        case .command:
            if offset == 0 { commandBuffer = [] }
            guard offset + data.count <= Self.commandSize else { return .failed }
            commandBuffer += data
        case .otp:
            guard offset + data.count <= otpImage.count else { return .failed }
            otpImage.replaceSubrange(offset..<offset + data.count, with: data)
        case .pmic:
            guard offset + data.count <= pmicImage.count else { return .failed }
            pmicImage.replaceSubrange(offset..<offset + data.count, with: data)
        case .partition(let index):
            if offset == 0 {
                pending.removeAll(keepingCapacity: true)
                drained = 0
            }
            if configuration.fault == .vanishMidPartition, offset > 0, !vanished {
                vanished = true
                board.vanish()
                return .accepted(latency: .zero)
            }
            pending += data
            guard pending.count >= configuration.ubootBufferSize else { return .accepted(latency: .zero) }
            return drain(alternate: alternate, index)
        case nil:
            return .failed
        }
        return .accepted(latency: .zero)
    }

    /// Writes the buffered data of partition `index` to storage (U-Boot's buffer drain).
    private func drain(alternate: UInt8, _ index: Int) -> DFUDataResult {
        guard let partition = program?.partitions[index] else { return .failed }
        let count = pending.count
        // Reuse the buffer's storage for the next fill, as U-Boot reuses its DFU buffer.
        defer {
            drained += UInt64(count)
            pending.removeAll(keepingCapacity: true)
        }
        let start = drained + (partition.id == phase ? UInt64(storedOffset) : 0)
        guard start + UInt64(count) <= partition.size else {
            board.console("Request would exceed designated area!")
            dfuError(alternate: alternate, message: "DFU write error")
            return .failed
        }
        if configuration.fault == .writeError, !writeFaultDone, partition.id == writeFaultPartition {
            writeFaultDone = true
            board.console("mmc write failed")
            dfuError(alternate: alternate, message: "DFU write error")
            return .failed
        }
        if let device = partition.device {
            do {
                try board.storage.write(
                    device: device, hardwarePartition: partition.hardwarePartition, offset: partition.offset + start,
                    bytes: pending)
            } catch {
                dfuError(alternate: alternate, message: "DFU write error")
                return .failed
            }
        }
        return .accepted(latency: BoardTiming.transfer(count, rate: configuration.timing.storageBytesPerSecond))
    }

    /// write-error: the first programmed user partition (ID ≥ 0x10), else the last programmed one.
    private var writeFaultPartition: UInt8? {
        let programmed = program?.partitions.filter(\.programmed) ?? []
        return (programmed.first { $0.id >= 0x10 } ?? programmed.last)?.id
    }

    override func dfuManifest(alternate: UInt8, length: Int) -> DFUDataResult {
        switch kind(alternate) {
        case .flashLayout:
            // `stm32prog_end_phase()` with LEGACY_IMAGE_FORMAT: a legacy image is a script (END).
            if LegacyScriptImage.isLegacyImage(layoutBuffer), configuration.fault != .scriptRejected {
                script = layoutBuffer
                phase = 0xFE
                board.console("U-Boot script received")
                return .accepted(latency: .zero)
            }
            board.console("FlashLayout received, size = \(length)")
            switch UBootLayoutInterpreter.parse(layoutBuffer, fault: configuration.fault) {
            case .success(let session): layoutSession = session
            case .failure(let failure): error(failure.message)
            }
        case .command:
            return runCommand()
        case .otp:
            board.console("OTP write: \(otpImage.count) bytes")
        case .pmic:
            board.console("PMIC NVM write: \(pmicImage.count) bytes")
        case .partition(let index):
            if configuration.fault == .vanishMidPartition, !vanished {
                vanished = true
                board.vanish()
                return .accepted(latency: .zero)
            }
            var latency: Duration = .zero
            if !pending.isEmpty {
                switch drain(alternate: alternate, index) {
                case .accepted(let time): latency = time
                case .failed: return .failed
                }
            }
            endOfPhase(index)
            return .accepted(latency: latency)
        case nil:
            return .failed
        }
        return .accepted(latency: .zero)
    }

    /// `stm32prog_end_phase()` for a partition, then the next P-not-E ID (or END).
    private func endOfPhase(_ index: Int) {
        guard let program, program.partitions[index].id == phase else { return }
        let partition = program.partitions[index]
        if let hw = partition.hardwarePartition, let device = partition.device {
            let number = device.drop { !$0.isNumber }
            board.console("mmc bootbus \(number) 0 0 0; mmc partconf \(number) 1 \(hw) 0")
        }
        storedOffset = 0
        drained = 0
        if let next = program.partitions.filter({ $0.programmed && $0.id > partition.id }).map(\.id).min() {
            phase = next
        } else {
            phase = 0xFE
            board.console("Phase=END")
        }
    }

    /// The 0xF1 command write (§4.4): phase byte, big-endian address.
    private func runCommand() -> DFUDataResult {
        guard commandBuffer.count >= 5 else { return .accepted(latency: .zero) }
        let target = commandBuffer[0]
        let address =
            UInt32(commandBuffer[1]) << 24 | UInt32(commandBuffer[2]) << 16 | UInt32(commandBuffer[3]) << 8
            | UInt32(commandBuffer[4])
        if target == 0xFF {
            board.console("## Starting application at 0x\(String(address, radix: 16, uppercase: true)) ...")
            board.ubootLeaves(reset: false, message: "Download done")
            return .accepted(latency: .zero)
        }
        if target == phase {
            storedOffset = address
            return .accepted(latency: .zero)
        }
        guard let program, program.partitions.contains(where: { $0.id == target }) else { return .failed }
        phase = target
        storedOffset = address
        return .accepted(latency: .zero)
    }

    override func dfuRead(alternate: UInt8, offset: Int, length: Int) -> [UInt8]? {
        switch kind(alternate) {
        case .command:
            let reply = getPhase()
            // Reading the error arms the reset (internal phase 0x1FF, §4.2).
            if phase == 0xFF { resetArmed = true }
            return offset == 0 ? reply.bytes : []
        case .flashLayout:
            return Array(layoutBuffer.dropFirst(offset).prefix(length))
        case .otp:
            return Array(otpImage.dropFirst(offset).prefix(length))
        case .pmic:
            return Array(pmicImage.dropFirst(offset).prefix(length))
        case .partition(let index):
            guard let partition = program?.partitions[index], UInt64(offset) < partition.size else { return [] }
            let count = Int(min(UInt64(length), partition.size - UInt64(offset)))
            guard let device = partition.device else { return [UInt8](repeating: 0, count: count) }
            return try? board.storage.read(
                device: device, hardwarePartition: partition.hardwarePartition,
                offset: partition.offset + UInt64(offset),
                length: count)
        case nil:
            return nil
        }
    }

    override func dfuError(alternate: UInt8, message: String) {
        // dfu_error_callback() reports only errors on the current partition's alternate.
        if case .partition(let index) = kind(alternate), program?.partitions[index].id == phase {
            error(message)
        } else if case .flashLayout = kind(alternate), phase == 0x00 {
            error(message)
        }
    }

    override func dfuDetach() {
        if program == nil, phase == 0x00, let session = layoutSession {
            let result = session.initialize(board)
            let timing = configuration.timing
            var delay = timing.ubootReenumeration
            if case .success(let program) = result {
                delay += BoardTiming.transfer(Int(clamping: program.erasedBytes), rate: timing.eraseBytesPerSecond)
                delay += timing.gptWrite * program.gptWrites
            }
            board.ubootReenumerates(after: delay) { [unowned board] in
                UBootFirmware.afterDeviceInit(board: board, result: result)
            }
            return
        }
        if let script, program == nil {
            board.ubootLeaves(reset: false, message: "Download done")
            board.runScript(script)
            return
        }
        // END, a rejected layout or an unread error: leave stm32prog without reset; an error read
        // through GetPhase in enumeration 2: reset (the §C.7 matrix).
        board.ubootLeaves(reset: afterDeviceInit && phase == 0xFF && resetArmed, message: "Download done")
    }
}
