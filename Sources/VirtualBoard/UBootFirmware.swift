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

/// One alternate's DFU transaction as `drivers/dfu/dfu.c` keeps it in its `dfu_entity`: shared by
/// reads and writes, opened by the first request, closed by a flush, a short read or an error —
/// never by SET_INTERFACE, ABORT, CLRSTATUS or a new request numbered 0.
struct UBootTransaction {
    /// `i_blk_seq_num`: the block number the next request must carry.
    var nextBlock: UInt16 = 0
    /// `dfu->offset`: where the next drain or fill goes in the alternate's medium.
    var offset: UInt64 = 0
    /// Written data not yet drained to the medium.
    var pending: [UInt8] = []
    /// `r_left`: bytes a read has still to fetch from the medium (its size, from the start).
    var remaining: UInt64 = 0
    /// Filled read buffer not yet sent.
    var buffered: ArraySlice<UInt8> = []
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
    /// `data->cur_part`: index of the current partition (nil in enumeration 1 and at END).
    private var currentPart: Int?
    /// The RAM area the FlashLayout is downloaded to, and how much of it was written.
    private var layoutArea = [UInt8](repeating: 0, count: layoutAreaSize)
    private var layoutLength = 0
    private var layoutSession: UBootLayoutSession?
    /// A legacy script image received instead of a layout (run at the DETACH).
    private var script: [UInt8]?
    private var otpImage: [UInt8]
    private var pmicImage: [UInt8] = [UInt8](repeating: 0, count: 8)
    /// Open DFU transactions, one per alternate (`dfu_entity.inited`).
    private var transactions: [UInt8: UBootTransaction] = [:]
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
            let first = program.partitions.indices.filter { program.partitions[$0].programmed }.min {
                program.partitions[$0].id < program.partitions[$1].id
            }
            currentPart = first
            phase = first.map { program.partitions[$0].id } ?? 0xFE
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

    /// `stm32prog_err()`: the first error wins while the phase is 0xFF; the phase becomes 0xFF.
    /// A phase set again by the command alternate clears it, so a later error is reported.
    private func error(_ message: String) {
        board.console("Error: \(message)")
        guard phase != 0xFF || resetArmed else { return }
        errorMessage = message
        phase = 0xFF
        resetArmed = false
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

    // MARK: - DFU backend (`drivers/dfu/dfu.c` transactions, `stm32prog.c` callbacks)

    /// `dfu_initiated_callback()`: a transaction on the current partition's alternate (download or
    /// upload) starts at the stored offset; every other one at 0.
    private func initiate(_ kind: Alternate, read: Bool) -> UBootTransaction {
        var transaction = UBootTransaction()
        if read { transaction.remaining = mediumSize(kind) }
        if case .partition(let index) = kind, index == currentPart { transaction.offset = UInt64(storedOffset) }
        return transaction
    }

    /// `dfu_get_buf()`: `CONFIG_SYS_DFU_DATA_BUF_SIZE`, capped at the erase size on MTD devices.
    private func bufferSize(_ kind: Alternate) -> Int {
        let size = configuration.ubootBufferSize
        guard case .partition(let index) = kind, let partition = program?.partitions[index],
            let device = partition.device, !device.hasPrefix("mmc"),
            let erase = board.storage.device(named: device)?.eraseSize
        else { return size }
        return min(size, Int(clamping: erase))
    }

    /// `get_medium_size()` of the alternate (what a read transaction has left to deliver).
    private func mediumSize(_ kind: Alternate) -> UInt64 {
        switch kind {
        case .flashLayout: UInt64(Self.layoutAreaSize)
        case .command: UInt64(Self.commandSize)
        case .otp: UInt64(otpImage.count)
        case .pmic: UInt64(pmicImage.count)
        case .partition(let index): program?.partitions[index].size ?? 0
        }
    }

    /// MMC entities work in whole 512-byte blocks from `offset / 512` (`dfu_mmc.c`
    /// `mmc_block_op()`); MTD and RAM entities in bytes.
    private func blockAligned(_ kind: Alternate, _ offset: UInt64, _ length: Int) -> (start: UInt64, span: UInt64) {
        guard case .partition(let index) = kind, program?.partitions[index].device?.hasPrefix("mmc") == true else {
            return (offset, UInt64(length))
        }
        let start = offset / 512 * 512
        return (start, (UInt64(length) + 511) / 512 * 512)
    }

    /// `read_medium()`: nil = refused (`Request would exceed designated area!`).
    private func readMedium(_ kind: Alternate, offset: UInt64, length: Int) -> [UInt8]? {
        switch kind {
        case .command:
            // stm32prog_cmd_read(): the reply at offset 0, end of file after it; reading an error
            // arms the reset (internal phase 0x1FF, §4.2).
            guard offset == 0 else { return [] }
            let reply = getPhase()
            if phase == 0xFF { resetArmed = true }
            return Array(reply.bytes.prefix(length))
        case .flashLayout:
            guard offset + UInt64(length) <= UInt64(Self.layoutAreaSize) else { return exceeded() }
            return Array(layoutArea[Int(offset)..<Int(offset) + length])
        case .otp:
            return Array(otpImage.dropFirst(Int(offset)).prefix(length))
        case .pmic:
            return Array(pmicImage.dropFirst(Int(offset)).prefix(length))
        case .partition(let index):
            guard let partition = program?.partitions[index] else { return nil }
            let (start, span) = blockAligned(kind, offset, length)
            guard start + span <= partition.size else { return exceeded() }
            guard let device = partition.device else { return [UInt8](repeating: 0, count: length) }
            return try? board.storage.read(
                device: device, hardwarePartition: partition.hardwarePartition, offset: partition.offset + start,
                length: length)
        }
    }

    private func exceeded() -> [UInt8]? {
        board.console("Request would exceed designated area!")
        return nil
    }

    /// `write_medium()`: stores a drained buffer; the command alternate runs its command here.
    private func writeMedium(_ alternate: UInt8, _ kind: Alternate, offset: UInt64, bytes: [UInt8]) -> DFUDataResult {
        switch kind {
        case .flashLayout:
            guard offset + UInt64(bytes.count) <= UInt64(Self.layoutAreaSize) else {
                _ = exceeded()
                return .failed
            }
            layoutArea.replaceSubrange(Int(offset)..<Int(offset) + bytes.count, with: bytes)
            layoutLength = max(layoutLength, Int(offset) + bytes.count)
        case .command:
            return runCommand(offset: offset, bytes)
        case .otp:
            guard offset + UInt64(bytes.count) <= UInt64(otpImage.count) else { return .failed }
            otpImage.replaceSubrange(Int(offset)..<Int(offset) + bytes.count, with: bytes)
        case .pmic:
            guard offset + UInt64(bytes.count) <= UInt64(pmicImage.count) else { return .failed }
            pmicImage.replaceSubrange(Int(offset)..<Int(offset) + bytes.count, with: bytes)
        case .partition(let index):
            guard let partition = program?.partitions[index] else { return .failed }
            let (start, span) = blockAligned(kind, offset, bytes.count)
            guard start + span <= partition.size else {
                _ = exceeded()
                return .failed
            }
            if configuration.fault == .writeError, !writeFaultDone, partition.id == writeFaultPartition {
                writeFaultDone = true
                board.console("mmc write failed")
                return .failed
            }
            if let device = partition.device {
                do {
                    try board.storage.write(
                        device: device, hardwarePartition: partition.hardwarePartition,
                        offset: partition.offset + start, bytes: corrupted(partition, start, bytes))
                } catch {
                    return .failed
                }
            }
            return .accepted(
                latency: BoardTiming.transfer(bytes.count, rate: configuration.timing.storageBytesPerSecond))
        }
        return .accepted(latency: .zero)
    }

    /// stores-wrong-bytes: the medium keeps a different byte every 64 KiB of user partitions.
    private func corrupted(_ partition: UBootPartition, _ start: UInt64, _ bytes: [UInt8]) -> [UInt8] {
        guard configuration.fault == .storesWrongBytes, partition.id >= 0x10 else { return bytes }
        return Self.wrongByteEvery64K(bytes, start: start)
    }

    /// What stores-wrong-bytes keeps of `bytes` written at `start` of a partition.
    static func wrongByteEvery64K(_ bytes: [UInt8], start: UInt64) -> [UInt8] {
        var stored = bytes
        var index = Int((0x1_0000 - start % 0x1_0000) % 0x1_0000)
        while index < stored.count {
            stored[index] ^= 0xA5
            index += 0x1_0000
        }
        return stored
    }

    /// Writes the transaction's buffer at its offset (`dfu_write_buffer_drain()`).
    private func drain(_ alternate: UInt8, _ kind: Alternate, _ transaction: inout UBootTransaction) -> DFUDataResult {
        guard !transaction.pending.isEmpty else { return .accepted(latency: .zero) }
        let result = writeMedium(alternate, kind, offset: transaction.offset, bytes: transaction.pending)
        transaction.offset += UInt64(transaction.pending.count)
        // Reuse the buffer's storage for the next fill, as U-Boot reuses its DFU buffer.
        transaction.pending.removeAll(keepingCapacity: true)
        return result
    }

    override func ubootWrite(alternate: UInt8, block: UInt16, data: [UInt8]) -> DFUDataResult {
        guard let kind = kind(alternate) else { return .failed }
        let open = transactions[alternate]
        var transaction = open ?? initiate(kind, read: false)
        guard block == transaction.nextBlock else {
            if open == nil {
                // A fresh transaction numbered wrongly is the host's fault (rule 3); block 0 on a
                // stale one is how a host recovers it.
                board.violation(
                    (data.isEmpty ? "zero-length DFU_DNLOAD" : "DFU_DNLOAD")
                        + " block \(block), expected \(transaction.nextBlock)")
            }
            board.console("dfu_write: Wrong sequence number! [\(transaction.nextBlock)] [\(block)]")
            transactions[alternate] = nil
            dfuError(alternate: alternate, message: "Wrong sequence number")
            return .failed
        }
        transaction.nextBlock &+= 1
        if case .partition = kind, configuration.fault == .vanishMidPartition,
            block >= max(1, configuration.vanishBlock), !vanished
        {
            vanished = true
            board.vanish()
            return .accepted(latency: .zero)
        }
        var latency: Duration = .zero
        let buffer = bufferSize(kind)
        for step in 0..<2 {
            // Drain before a block that would overflow, and after one when the next would (or at the end).
            let due =
                step == 0
                ? transaction.pending.count + data.count > buffer
                : data.isEmpty || transaction.pending.count + data.count > buffer
            if step == 1 { transaction.pending += data }
            guard due else { continue }
            switch drain(alternate, kind, &transaction) {
            case .accepted(let time): latency += time
            case .failed, .rejected:
                transactions[alternate] = nil
                dfuError(alternate: alternate, message: "DFU write error")
                return .failed
            }
        }
        transactions[alternate] = transaction
        return .accepted(latency: latency)
    }

    override func ubootRead(alternate: UInt8, block: UInt16, size: Int) -> (bytes: [UInt8], latency: Duration)? {
        guard let kind = kind(alternate) else { return nil }
        var transaction = transactions[alternate] ?? initiate(kind, read: true)
        var open = true
        defer { transactions[alternate] = open ? transaction : nil }
        guard block == transaction.nextBlock else {
            board.console("dfu_read: Wrong sequence number! [\(transaction.nextBlock)] [\(block)]")
            return nil
        }
        transaction.nextBlock &+= 1
        var out: [UInt8] = []
        var latency: Duration = .zero
        while out.count < size {
            let take = min(size - out.count, transaction.buffered.count)
            out += transaction.buffered.prefix(take)
            transaction.buffered = transaction.buffered.dropFirst(take)
            guard out.count < size, transaction.remaining > 0 else { break }
            let fill = Int(min(UInt64(bufferSize(kind)), transaction.remaining))
            guard let data = readMedium(kind, offset: transaction.offset, length: fill) else {
                board.console("dfu_read: Failed to fill buffer")
                return nil
            }
            guard !data.isEmpty else { break }
            transaction.offset += UInt64(data.count)
            transaction.remaining -= UInt64(data.count)
            transaction.buffered = data[...]
            if case .partition = kind {
                latency += BoardTiming.transfer(data.count, rate: configuration.timing.storageReadBytesPerSecond)
            }
        }
        // A short read ends the transaction (`dfu_transaction_cleanup()`); the defer stores it.
        if out.count < size { open = false }
        return (out, latency)
    }

    /// write-error: the first programmed user partition (ID ≥ 0x10), else the last programmed one.
    private var writeFaultPartition: UInt8? {
        let programmed = program?.partitions.filter(\.programmed) ?? []
        return (programmed.first { $0.id >= 0x10 } ?? programmed.last)?.id
    }

    /// `dfu_flush()` after the first GETSTATUS that follows the zero-length DNLOAD: drain, then
    /// `dfu_flush_callback()`, then the transaction is cleaned up.
    override func dfuManifest(alternate: UInt8, length: Int) -> DFUDataResult {
        guard let kind = kind(alternate) else { return .failed }
        var latency: Duration = .zero
        if var transaction = transactions[alternate] {
            transactions[alternate] = nil
            switch drain(alternate, kind, &transaction) {
            case .accepted(let time): latency = time
            case .failed, .rejected: return .failed
            }
        }
        switch kind {
        case .flashLayout:
            guard phase == 0x00 else { break }
            let received = Array(layoutArea.prefix(layoutLength))
            // `stm32prog_end_phase()` with LEGACY_IMAGE_FORMAT: a legacy image is a script (END).
            if LegacyScriptImage.isLegacyImage(received), configuration.fault != .scriptRejected {
                script = received
                phase = 0xFE
                board.console("U-Boot script received")
                return .accepted(latency: latency)
            }
            board.console("FlashLayout received, size = \(layoutLength)")
            switch UBootLayoutInterpreter.parse(received, fault: configuration.fault) {
            case .success(let session): layoutSession = session
            case .failure(let failure): error(failure.message)
            }
        case .command:
            break
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
            if index == currentPart {
                endOfPhase(index)
                nextPhase()
            }
        }
        return .accepted(latency: latency)
    }

    /// `stm32prog_end_phase()` for a partition.
    private func endOfPhase(_ index: Int) {
        guard let partition = program?.partitions[index] else { return }
        if let hw = partition.hardwarePartition, let device = partition.device {
            let number = device.drop { !$0.isNumber }
            board.console("mmc bootbus \(number) 0 0 0; mmc partconf \(number) 1 \(hw) 0")
        }
    }

    /// `stm32prog_next_phase()`: the next selected, not-empty ID, or END. It does **not** reset the
    /// stored offset (§4.4): a host that set one must set the next phase's offset itself.
    private func nextPhase() {
        guard let program, phase != 0xFF, phase != 0xFE, !resetArmed else { return }
        let from = phase
        currentPart = nil
        phase = 0xFE
        let candidates = program.partitions.indices.filter {
            program.partitions[$0].programmed && program.partitions[$0].id > from
        }
        if let next = candidates.min(by: { program.partitions[$0].id < program.partitions[$1].id }) {
            currentPart = next
            phase = program.partitions[next].id
        } else {
            board.console("Phase=END")
        }
    }

    /// The 0xF1 command write (§4.4), run when its buffer is drained: phase byte, big-endian address.
    private func runCommand(offset: UInt64, _ bytes: [UInt8]) -> DFUDataResult {
        guard bytes.count >= 5, offset == 0 else { return .failed }
        let target = bytes[0]
        let address = UInt32(bytes[1]) << 24 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 8 | UInt32(bytes[4])
        if target == 0xFF {
            board.console("## Starting application at 0x\(String(address, radix: 16, uppercase: true)) ...")
            board.ubootLeaves(reset: false, message: "Download done")
            return .accepted(latency: .zero)
        }
        // stm32prog_set_phase(): the same phase only moves the offset; another ID becomes the
        // current partition (which also replaces an error or an armed reset).
        if target == phase, !resetArmed {
            storedOffset = address
            return .accepted(latency: .zero)
        }
        guard let index = program?.partitions.firstIndex(where: { $0.id == target }) else { return .failed }
        currentPart = index
        phase = target
        storedOffset = address
        resetArmed = false
        return .accepted(latency: .zero)
    }

    override func dfuError(alternate: UInt8, message: String) {
        // dfu_error_callback() reports only errors on the current partition's alternate.
        if case .partition(let index) = kind(alternate), index == currentPart {
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
