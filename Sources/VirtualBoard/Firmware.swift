import BootImages
import DFU
import USBModel

/// One firmware answering on the board's USB port: what it publishes and how it reacts to DFU.
/// Subclasses are the personalities of reference §F.
class Firmware: DFUBackend {
    unowned let board: VirtualBoard
    let stage: FirmwareStage
    var identity: PublishedIdentity
    let dfu: DFUFunction

    init(board: VirtualBoard, stage: FirmwareStage, identity: PublishedIdentity, profile: DFUDeviceProfile) {
        self.board = board
        self.stage = stage
        self.identity = identity
        dfu = DFUFunction(profile: profile, functional: identity.functional)
        dfu.backend = self
    }

    var configuration: BoardConfiguration { board.configuration }

    /// Phase ID written in alternate `alt`'s string.
    func advertisedPhase(_ alt: UInt8) -> UInt8? {
        guard Int(alt) < identity.alternates.count else { return nil }
        return DFUAlternateName.parse(identity.alternates[Int(alt)])?.phaseID
    }

    /// What GetPhase answers now.
    func getPhase() -> GetPhaseReply { GetPhaseReply(phase: 0xFF, address: GetPhaseReply.undefinedAddress) }

    func dfuSelect(alternate: UInt8) -> Bool { Int(alternate) < identity.alternates.count }
    func dfuWrite(alternate: UInt8, offset: Int, data: [UInt8]) -> DFUDataResult { .failed }
    func dfuManifest(alternate: UInt8, length: Int) -> DFUDataResult { .failed }
    func dfuRead(alternate: UInt8, offset: Int, length: Int) -> [UInt8]? { nil }
    func dfuDetach() {}
    func dfuError(alternate: UInt8, message: String) {}
    func ubootWrite(alternate: UInt8, block: UInt16, data: [UInt8]) -> DFUDataResult { .failed }
    func ubootRead(alternate: UInt8, block: UInt16, size: Int) -> (bytes: [UInt8], latency: Duration)? { nil }
    func dfuDataBlockArriving(alternate: UInt8, block: UInt16) {
        board.dataBlockObserver?(advertisedPhase(alternate) ?? 0xFF, Int(block))
    }
}

/// The STM32 image header magic `STM2`.
func hasSTM32Magic(_ bytes: [UInt8]) -> Bool { bytes.starts(with: [0x53, 0x54, 0x4D, 0x32]) }

/// The boot ROM's USB DFU (reference §A): takes the FSBL on phase 0x01.
final class ROMFirmware: Firmware {
    /// The FSBL as received (at most the FSBL alternate's 1 MiB).
    private var fsbl: [UInt8] = []
    private var fsblLoaded = false

    init(board: VirtualBoard) {
        let config = board.configuration
        var alternates: [String]
        if config.soc == .mp15 {
            alternates = StageIdentity.mp15Alternates
        } else {
            // FSBL at alt 0; where `virtual` sits is UNCONFIRMED (configurable).
            let virtualIndex = Int(max(config.romVirtualAlternate, 1))
            alternates = (0...virtualIndex).map { index in
                index == 0
                    ? "@FSBL /0x01/1*1Me"
                    : "@Partition\(index) /0x\(StageIdentity.hex(UInt16(index + 1), digits: 2))/1*1Me"
            }
            alternates[virtualIndex] = "@virtual /0xF1/1*512Ba"
        }
        let serial = config.fault == .serialChanges ? "000000000000" : config.serial
        let identity = PublishedIdentity(
            manufacturer: StageIdentity.manufacturer,
            product: StageIdentity.romProduct(config.soc, speed: config.speed),
            serial: serial, alternates: alternates,
            functional: StageIdentity.romFunctional(
                version: config.romDFUVersion, transferSize: config.romTransferSize),
            // The ROM's string indices are UNCONFIRMED. On MP15, TF-A keeps the ROM's USB session
            // and "keeps the configuration from ROM code" (§A.4, §B.1), so the ROM must use TF-A's
            // indices (6 + alt; 4 and 5 configuration and interface) or the host, still holding
            // the ROM's descriptors, would read TF-A's strings at the wrong indices.
            firstInterfaceString: config.soc == .mp15 ? 6 : 4,
            extraStrings: config.soc == .mp15 ? [4: "DFU Config", 5: "DFU Interface"] : [:])
        super.init(board: board, stage: .rom, identity: identity, profile: .legacyST)
    }

    override func getPhase() -> GetPhaseReply {
        // Before the FSBL: phase 0x01, address unknown (UNCONFIRMED). After it (MP13/MP2): detach.
        fsblLoaded
            ? GetPhaseReply(phase: 0x00, address: GetPhaseReply.undefinedAddress, needsDetach: true)
            : GetPhaseReply(phase: 0x01, address: GetPhaseReply.undefinedAddress)
    }

    override func dfuWrite(alternate: UInt8, offset: Int, data: [UInt8]) -> DFUDataResult {
        guard advertisedPhase(alternate) == 0x01, !fsblLoaded, offset + data.count <= 1 << 20 else { return .failed }
        if offset == 0, !configuration.romKeepsFSBLAfterAbort { fsbl = [] }
        fsbl += data
        return .accepted(latency: configuration.timing.romBlockStore)
    }

    override func dfuManifest(alternate: UInt8, length: Int) -> DFUDataResult {
        guard advertisedPhase(alternate) == 0x01, !fsbl.isEmpty else { return .accepted(latency: .zero) }
        if configuration.fault == .fsblRejected || Self.refusal(of: fsbl, soc: configuration.soc) != nil {
            // The ROM stays in DFU and asks for the FSBL again.
            fsbl = []
            return .rejected(status: DFUStatusCode.errVerify)
        }
        fsblLoaded = true
        if configuration.soc == .mp15 { board.romStartsFSBL(inPlace: true) }
        return .accepted(latency: .zero)
    }

    override func dfuRead(alternate: UInt8, offset: Int, length: Int) -> [UInt8]? {
        guard advertisedPhase(alternate) == 0xF1 else { return nil }
        return getPhase().bytes
    }

    /// Why the ROM would not start `image` on `soc`, or nil: an STM32 header it accepts (magic,
    /// version: v1 on MP15, v2 on MP13/MP2, a load address in the chip's SYSRAM where the header
    /// tells), the whole payload present and its checksum right. A real ROM checks the signature
    /// too on closed chips (the `fsbl-rejected` scenario); what else it checks is UNCONFIRMED.
    static func refusal(of image: [UInt8], soc: VirtualSoC) -> String? {
        let header: STM32ImageHeader
        do {
            header = try STM32ImageHeader(decoding: image)
        } catch {
            return "STM32 header: \(error)"
        }
        guard header.candidateFamilies.contains(soc.family) else {
            return
                "header for \(header.candidateFamilies.map(\.description).joined(separator: "/")), chip \(soc.family)"
        }
        let end = header.headerLength + Int(header.imageLength)
        guard image.count >= end else {
            return "payload \(image.count - header.headerLength) of \(header.imageLength) bytes"
        }
        guard STM32ImageHeader.checksum(of: image[header.headerLength..<end]) == header.checksum else {
            return "checksum"
        }
        return nil
    }

    override func dfuDetach() {
        guard configuration.soc != .mp15, fsblLoaded else { return }
        board.romStartsFSBL(inPlace: configuration.soc == .mp25 && configuration.mp25ROMChangesInPlace)
    }
}

/// TF-A BL2 built as a USB programmer (reference §B), upstream or one of ST's forks.
final class TFAFirmware: Firmware {
    private var phase: UInt8
    private var base: UInt32
    private var bufferSize: Int
    private var received = 0
    private var head: [UInt8] = []
    private var layout: [UInt8] = []
    /// What phase 0x03 wrote into the buffer, in order (a continued download included).
    private var fip: [UInt8] = []
    private var errorMessage: String?
    /// Set once phase 0x03 is in: the next DETACH starts U-Boot.
    private var ssblLoaded = false
    /// A phase was downloaded again after a partial download: what is in RAM is not the file.
    private var torn = false

    /// - Parameter ddrDone: MP2, second enumeration: the DDR firmware phase is over.
    init(board: VirtualBoard, ddrDone: Bool = false) {
        let config = board.configuration
        let alternates: [String]
        switch config.soc {
        case .mp15: alternates = StageIdentity.mp15Alternates
        case .mp13: alternates = ["@SSBL /0x03/1*16Me", "@virtual /0xF1/1*512Ba"]
        case .mp25: alternates = ["@DDR FIP /0x02/1*32Ke", "@FIP /0x03/1*16Me", "@virtual /0xF1/1*512Ba"]
        }
        let legacy = config.tfaVariant == .stLegacy
        let identity = PublishedIdentity(
            manufacturer: StageIdentity.manufacturer,
            product: legacy
                ? StageIdentity.romProduct(config.soc, speed: config.speed) : StageIdentity.tfaProduct(config.soc),
            serial: config.serial, alternates: alternates,
            functional: legacy ? StageIdentity.romFunctional(version: 0x0110) : StageIdentity.tfaFunctional,
            firstInterfaceString: 6, extraStrings: [4: "DFU Config", 5: "DFU Interface"])
        if config.soc == .mp25, !ddrDone {
            (phase, base, bufferSize) = (0x02, 0x0E00_0000, 0xA000)
        } else if config.soc == .mp15, config.tfaVariant == .stV24 {
            (phase, base, bufferSize) = (0x00, 0xC000_0000, 1 << 20)
        } else {
            (phase, base, bufferSize) = (0x03, config.fipBufferBase, 16 << 20)
        }
        super.init(board: board, stage: .tfa, identity: identity, profile: legacy ? .legacyST : .tfaUpstream)
    }

    /// The phase TF-A serves on `alt` (MP15 maps only 0, 3 and 5; the rest are 0xFF, §B.1).
    private func servedPhase(_ alt: UInt8) -> UInt8 {
        guard configuration.soc == .mp15 else { return advertisedPhase(alt) ?? 0xFF }
        switch alt {
        case 0 where configuration.tfaVariant == .stV24: return 0x00
        case 3: return 0x03
        case 5: return 0xF1
        default: return 0xFF
        }
    }

    private var waitingForDetach: Bool { phase == 0x00 && base == GetPhaseReply.undefinedAddress }

    override func getPhase() -> GetPhaseReply {
        if phase == 0xFF {
            return GetPhaseReply(phase: 0xFF, address: GetPhaseReply.undefinedAddress, message: errorMessage ?? "")
        }
        if waitingForDetach { return GetPhaseReply(phase: 0x00, address: base, needsDetach: true) }
        return GetPhaseReply(phase: phase, address: base &+ UInt32(received))
    }

    private func error(_ message: String) {
        if errorMessage == nil { errorMessage = message }
        phase = 0xFF
        board.console("ERROR:   \(message)")
    }

    override func dfuWrite(alternate: UInt8, offset: Int, data: [UInt8]) -> DFUDataResult {
        guard phase != 0xFF, !waitingForDetach, servedPhase(alternate) == phase else {
            error("phase ID :\(phase), alternate \(alternate), address \(String(base &+ UInt32(received), radix: 16))")
            return .failed
        }
        // TF-A writes each DNLOAD at its download address, which only moves forward (block numbers
        // are ignored, `dfu_callback_download()`): an image sent again from its start after a
        // partial download (a cancelled run) lands after the first part, and BL2 would load a torn
        // FIP. A host that continues from the bytes TF-A already holds keeps the image whole.
        if offset == 0, received > 0, FIPHeader(decoding: data)?.isValid == true || hasSTM32Magic(data) {
            torn = true
        }
        received += data.count
        guard received <= bufferSize else { return .failed }
        if head.count < 512 { head += data.prefix(512 - head.count) }
        if phase == 0x00 { layout += data }
        if phase == 0x03 { fip += data }
        return .accepted(latency: .zero)
    }

    override func dfuManifest(alternate: UInt8, length: Int) -> DFUDataResult {
        guard !waitingForDetach, phase != 0xFF else { return .failed }
        let accepted: Bool
        switch phase {
        case 0x00:
            accepted = hasSTM32Magic(head)
            if !accepted { error("Flashlayout header check failed") }
        default:
            let stm32Image = configuration.tfaVariant != .upstream && phase == 0x03 && hasSTM32Magic(head)
            accepted =
                configuration.fault != .fipHeaderBad && (FIPHeader(decoding: head)?.isValid == true || stm32Image)
            if !accepted { error("FIP Header check failed for phase \(phase)") }
        }
        guard accepted else { return .failed }
        switch phase {
        case 0x00:
            board.ramLayout = layout
            (phase, base, bufferSize) = (0x03, configuration.fipBufferBase, 16 << 20)
        case 0x02:
            board.console("NOTICE:  DDR firmware loaded over USB (\(received) bytes)")
            (phase, base) = (0x00, GetPhaseReply.undefinedAddress)
        default:
            ssblLoaded = true
            board.ramFIP = fip
            (phase, base) = (0x00, GetPhaseReply.undefinedAddress)
        }
        received = 0
        head = []
        return .accepted(latency: .zero)
    }

    override func dfuRead(alternate: UInt8, offset: Int, length: Int) -> [UInt8]? {
        guard servedPhase(alternate) == 0xF1 else {
            error("phase ID :\(phase), alternate \(alternate) for phase \(servedPhase(alternate))")
            return nil
        }
        return getPhase().bytes
    }

    override func dfuDetach() {
        if ssblLoaded, torn {
            board.console("ERROR:   the FIP in RAM was written across two downloads (an interrupted one first)")
        }
        board.tfaDetached(ssblLoaded: ssblLoaded && !torn, ddrOnly: waitingForDetach && !ssblLoaded)
    }
}

extension BoardConfiguration {
    /// Where TF-A writes the FIP: `tfaBufferBase`, or TF-A's default for the SoC.
    var fipBufferBase: UInt32 { tfaBufferBase ?? (soc == .mp25 ? 0x8700_0000 : 0xC700_0000) }
}
