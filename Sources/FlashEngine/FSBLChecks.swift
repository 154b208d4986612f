import BoardTracking
public import BootImages
public import DFU
import FlashLayout
import USBModel

/// The ROM refused the FSBL: GETSTATUS answered dfuERROR while it took phase 0x01 (errVERIFY at
/// the manifestation: a bad STM32 header, checksum or signature, or an image for another chip).
/// What the host reads in the file is kept, so the diagnosis can tell which.
public struct FSBLRejection: Sendable, Hashable {
    /// The board's bStatus and state (`errVERIFY`, dfuERROR).
    public var status: UInt8
    public var state: DFUState
    /// True when every byte was accepted and the zero-length DNLOAD's status was the refusal.
    public var atManifestation: Bool
    public var path: String
    /// The file's STM32 header and checksum as the host reads them; nil when it could not be read.
    public var image: BootImageReport?
    /// Why the file could not be inspected (an invalid header …), when it could not.
    public var imageProblem: String?
    /// The chip the ROM's product string names (`@Device ID`), when it names one.
    public var board: ChipFamily?

    public init(
        status: UInt8, state: DFUState, atManifestation: Bool, path: String, image: BootImageReport?,
        imageProblem: String?, board: ChipFamily?
    ) {
        self.status = status
        self.state = state
        self.atManifestation = atManifestation
        self.path = path
        self.image = image
        self.imageProblem = imageProblem
        self.board = board
    }

    /// `dfuERROR, bStatus 0x07 (errVERIFY) after the zero-length DNLOAD`.
    public var statusText: String {
        "\(state == .error ? "dfuERROR" : "state \(state)"), bStatus \(phaseHex(status)) "
            + "(\(DFUStatusCode.name(status)))"
            + (atManifestation ? " after the zero-length DNLOAD (the manifestation)" : " during the download")
    }

    /// The host finds nothing wrong with the file: an STM32 header for this chip, the whole
    /// payload and its checksum. Then the ROM may hold a torn copy (see `sendFSBLOnceMoreIfTorn`).
    public var fileLooksIntact: Bool {
        guard imageProblem == nil, let image, case .stm32 = image.kind else { return false }
        return image.checksumMatches == true && image.missingPayloadBytes == 0
            && (board.map { image.chipHint.contains($0) } ?? true)
    }
}

/// An FSBL whose STM32 header is for another chip than the board's `@Device ID`; found before
/// anything is sent.
public struct FSBLChipMismatch: Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var header: STM32ImageHeader.Version
    /// The chips the header fits.
    public var fits: [ChipFamily]
    public var board: ChipFamily
    /// The ROM's product string the board's chip was read from.
    public var product: String

    public init(path: String, header: STM32ImageHeader.Version, fits: [ChipFamily], board: ChipFamily, product: String)
    {
        self.path = path
        self.header = header
        self.fits = fits
        self.board = board
        self.product = product
    }

    /// `STM32 header v2 (STM32MP13)`.
    public var headerText: String {
        "STM32 header \(header == .v1 ? "v1" : "v2") (\(fits.map(\.description).joined(separator: "/")))"
    }

    public var description: String {
        "\(path) has an \(headerText) but the board is an \(board); nothing was sent"
    }
}

extension Flasher.Run {
    /// Item: before the FSBL goes to the ROM, its STM32 header must fit the chip the ROM's product
    /// string names (v1 only on MP15; v2 on MP13 and MP2, the load address telling which). The ROM
    /// would refuse it anyway; refusing here names the mismatch and writes nothing.
    func checkFSBLFitsBoard() throws {
        guard let file = plan.files[0x01], let product = board?.product,
            let family = ChipFamily.fromProduct(product)
        else { return }
        guard let report = try? BootImageInspector.inspect(path: file.path), case .stm32(let header) = report.kind
        else { return }
        recorder.add(
            .note(
                "FSBL \(file.path): STM32 header \(header.version == .v1 ? "v1" : "v2") for "
                    + report.chipHint.map(\.description).joined(separator: "/") + "; the board is an \(family)",
                stage: .rom))
        guard report.chipHint.contains(family) else {
            throw failure(
                .fsblWrongChip(
                    FSBLChipMismatch(
                        path: file.path, header: header.version, fits: report.chipHint, board: family,
                        product: product)))
        }
    }

    /// The ROM's dfuERROR while it took the FSBL, with what the file holds.
    func fsblRejection(_ state: DFUState, status: UInt8) -> FSBLRejection {
        let path = plan.files[0x01]?.path ?? "the FSBL"
        var image: BootImageReport?
        var problem: String?
        do {
            image = try BootImageInspector.inspect(path: path)
        } catch {
            problem = "\(error)"
        }
        let atManifestation = sending.map { accepted.withLock { $0 } >= $0.total } ?? false
        return FSBLRejection(
            status: status, state: state, atManifestation: atManifestation, path: path, image: image,
            imageProblem: problem, board: ChipFamily.fromProduct(board?.product))
    }
}

extension Flasher.Run {
    /// Sends phase `id`; an FSBL the ROM refuses although the host finds the file intact is sent
    /// once more.
    ///
    /// A run stopped in the middle of the FSBL ends it with DFU_ABORT. Whether the ROM then starts
    /// the FSBL over or keeps the part it received, so that the next download goes on after it, is
    /// UNCONFIRMED (its USB stack is not public). In the second case the rerun's FSBL lands torn
    /// and the ROM refuses it (errVERIFY); after that refusal the ROM asks for the FSBL again, so
    /// one more send completes it. A file that is really refused (a closed chip) costs one
    /// extra FSBL transfer before `fsbl-rejected`.
    mutating func sendFSBLOnceMoreIfTorn(_ id: UInt8, deviceMayLeave: Bool) async throws {
        do {
            try await send(id, deviceMayLeave: deviceMayLeave)
        } catch let failure as FlashFailure {
            guard id == 0x01, machine.stage == .rom, !fsblSentAgain,
                case .fsblRejected(let rejection) = failure.reason, rejection.fileLooksIntact
            else { throw failure }
            fsblSentAgain = true
            let why =
                "the ROM refused the FSBL (\(rejection.statusText)) although the file is intact: it may hold part of "
                + "an earlier run's FSBL (kept after DFU_ABORT, UNCONFIRMED); sending it once more"
            recorder.add(.note(why, stage: .rom))
            flasher.emit(.message(why))
            try await send(id, deviceMayLeave: deviceMayLeave)
        }
    }
}
