import AndroidSparse
import BoardTracking
import DFU
import Fastboot
import FlashLayout
import ImageSources
import Timekeeping
import UBootScript

/// The fastboot part of a `--transport fastboot` run, once U-Boot shows 0483:0afb: probe
/// (`getvar`), check the board against the plan before anything is written, send every file as
/// Android sparse pieces no larger than `max-download-size`, erase, boot partitions last, reboot.
struct FastbootStage {
    let client: FastbootClient
    let plan: PartitionPlan
    let fastboot: FastbootPlan
    /// Binaries read through ImageSources (compressed, with a block map, or with holes skipped).
    let images: [UInt8: PreparedImage]
    /// The serial U-Boot's DFU stage announced; fastboot must show the same (`serial#`).
    let expectedSerial: String?
    let clock: any FlashClock
    let emit: @Sendable (FlashEvent) -> Void
    let note: @Sendable (String) -> Void

    /// What the second session (after the CRC stage) found equal, one record per line.
    var verifiedChecks: [PartitionCheck] = []

    /// The slowest storage we plan for when waiting for a `flash` answer (an old SD card).
    static let slowestStorageBytesPerSecond: Int64 = 1_000_000
    /// ST's `CONFIG_FASTBOOT_BUF_SIZE`, used when the board does not say.
    static let defaultMaxDownload = 0x0200_0000

    struct Failure: Error {
        var reason: FlashFailure.Reason
        var phase: UInt8?
    }

    /// Runs the fastboot session after `probe()`; returns one result per file sent.
    func run(maxDownload: Int) async throws -> [PhaseResult] {
        var results: [PhaseResult] = []
        for step in fastboot.steps {
            switch step {
            case .flash(let id, let name):
                results.append(try await send(id: id, target: name, maxDownload: maxDownload, sparse: true))
            case .flashBoot(let id, let target, _):
                results.append(try await send(id: id, target: target, maxDownload: maxDownload, sparse: false))
            case .erase(let id, let name):
                note("erase \(name)")
                _ = try await command(.erase(name), phase: id, timeout: .seconds(120))
            case .selectBoot(let hardwarePartition):
                _ = try await command(.oem("bootbus: 0 0 0"), phase: nil)
                _ = try await command(.oem("partconf: 1 \(hardwarePartition)"), phase: nil)
            }
        }
        return results
    }

    /// After everything was flashed (and verified where asked): END, then `reboot`.
    func finish() async throws {
        emit(.end)
        // The board resets after this OKAY; with the boot pins on USB the ROM comes back.
        _ = try await command(.reboot, phase: nil)
        note("reboot sent: the board restarts (the ROM's DFU reappears while the boot pins select USB)")
    }

    /// The session the CRC stage started: the same board (`serialno`), then the comparison.
    func verifySession(_ stage: CRCReadbackStage, expected: [UInt32], mode: VerifyMode) async throws -> [PartitionCheck]
    {
        let serial = try await command(.getvar("serialno"), phase: nil)
        if let expectedSerial, !expectedSerial.isEmpty, serial != expectedSerial {
            throw Failure(reason: .serialChanged(expected: expectedSerial, found: serial))
        }
        return try await compareCRCs(stage, expected: expected, mode: mode)
    }

    /// Reads what the hand-off script's CRC stage computed (`getvar:vcrcN`) and compares it with
    /// `expected` (the host's CRC-32 of the same ranges); one record per checked line. An unset
    /// variable means the board could not read that range back, which fails the run.
    func compareCRCs(_ stage: CRCReadbackStage, expected: [UInt32], mode: VerifyMode) async throws -> [PartitionCheck] {
        var records: [PartitionCheck] = []
        for (index, check) in stage.checks.enumerated() {
            let variable = CRCReadbackStage.variable(index)
            let name = fastboot.stepName(check.lineID)
            let answer: String
            do {
                answer = try await client.getvar(variable)
            } catch let failure as FastbootFailure {
                throw Failure(
                    reason: .fastbootFailed(
                        command: "getvar:\(variable)",
                        reason: failure.reason
                            + " (U-Boot did not compute the CRC of \(name) bytes \(check.start)..<\(check.range.upperBound): its mmc read, crc32 or setexpr failed or is missing)"
                    ), phase: check.lineID)
            }
            guard let board = CRCReadbackStage.crc(fromAnswer: answer) else {
                throw Failure(reason: .protocolError("getvar:\(variable) answered '\(answer)'"), phase: check.lineID)
            }
            note(
                "verify \(name) bytes \(check.start)..<\(check.range.upperBound): CRC-32 board \(hex8(board)), host \(hex8(expected[index]))"
            )
            guard board == expected[index] else {
                throw Failure(
                    reason: .verifyMismatch(
                        VerifyMismatch(
                            phase: check.lineID, name: name, offset: check.start, expectedSHA256: hex8(expected[index]),
                            actualSHA256: hex8(board), method: mode, digest: "CRC-32 (computed by U-Boot)",
                            length: check.length)), phase: check.lineID)
            }
            if let last = records.last, last.phase == check.lineID {
                records[records.count - 1].bytesRead += check.length
            } else {
                records.append(
                    PartitionCheck(
                        phase: check.lineID, name: name,
                        bytes: images[check.lineID]?.size ?? plan.files[check.lineID]?.size ?? 0,
                        sha256: nil, method: mode == .full ? .full : .sampled, bytesRead: check.length))
            }
        }
        return records
    }

    private func hex8(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    /// `getvar` probing and the checks that must pass before anything is written.
    func probe() async throws -> Int {
        let sizeText = try await command(.getvar("max-download-size"), phase: nil)
        let maxDownload = Self.number(sizeText).map(Int.init) ?? Self.defaultMaxDownload
        note("fastboot: max-download-size \(sizeText)")
        let serial = try await command(.getvar("serialno"), phase: nil)
        if let expectedSerial, !expectedSerial.isEmpty, serial != expectedSerial {
            throw Failure(reason: .serialChanged(expected: expectedSerial, found: serial))
        }
        let wanted = fastboot.device.target.index
        if let mmcdev = try? await client.getvar("mmcdev") {
            note("fastboot: mmcdev \(mmcdev)")
            guard Int(mmcdev) == wanted else {
                throw Failure(
                    reason: .storageMismatch(board: "mmc\(mmcdev)", layout: fastboot.device.target.description))
            }
        } else {
            note("fastboot: getvar mmcdev is not answered (upstream U-Boot); partitions are checked by name")
        }
        let status = try? await client.getvar("gptstat")
        note("fastboot: gptstat \(status ?? "unset")")
        switch status {
        case "fail":
            throw Failure(reason: .fastbootPartitions("U-Boot's gpt write of the layout's partitions failed"))
        case "other-device":
            throw Failure(reason: .storageMismatch(board: "another MMC", layout: fastboot.device.target.description))
        default:
            break
        }
        for step in fastboot.steps {
            switch step {
            case .flash(let id, let name), .erase(let id, let name):
                try await checkPartition(id: id, name: name)
            case .flashBoot(let id, let target, _):
                if let size = images[id]?.size ?? plan.files[id]?.size, size > Int64(maxDownload) {
                    throw Failure(
                        reason: .fastbootPartitions(
                            "\(target): \(size) bytes do not fit one download (max \(maxDownload)); U-Boot writes boot partitions raw"
                        ), phase: id)
                }
            case .selectBoot:
                break
            }
        }
        return maxDownload
    }

    /// `partition-size:NAME` must exist, equal the planned size where known, and hold the file.
    func checkPartition(id: UInt8, name: String) async throws {
        let answer: String
        do {
            answer = try await client.getvar("partition-size:\(name)")
        } catch let failure as FastbootFailure {
            throw Failure(
                reason: .fastbootPartitions("no partition '\(name)' on the board (FAIL\(failure.reason))"), phase: id)
        }
        guard let size = Self.number(answer) else {
            throw Failure(reason: .protocolError("partition-size:\(name) answered '\(answer)'"), phase: id)
        }
        let planned = fastboot.device.partitions.first { $0.line.id == id }?.size
        if let planned, planned != size {
            throw Failure(
                reason: .fastbootPartitions("'\(name)' is \(size) bytes on the board, the layout plans \(planned)"),
                phase: id)
        }
        if let bytes = images[id]?.size ?? plan.files[id]?.size, UInt64(bytes) > size {
            throw Failure(
                reason: .fastbootPartitions("'\(name)' holds \(size) bytes, its file has \(bytes)"), phase: id)
        }
    }

    /// Sends line `id`'s file to `target`: sparse pieces, or one raw download (boot partitions).
    func send(id: UInt8, target: String, maxDownload: Int, sparse: Bool) async throws -> PhaseResult {
        guard let file = plan.files[id] else { throw Failure(reason: .phaseWithoutFile(id), phase: id) }
        let (source, dataSource, mapped) = try sources(id: id, path: file.path)
        let started = clock.now
        let total = source.count
        emit(.phaseStarted(phase: id, name: target, bytes: total, stage: .fastboot))
        let gate = ProgressGate(step: max(total / 100, 64 * 1024))
        let emit = self.emit
        var wire: Int64 = 0
        if sparse {
            let splitter: SparseSplitter
            do {
                splitter = try SparseSplitter(
                    source: source, maxPieceBytes: maxDownload, blockSize: blockSize(id), mappedBytes: mapped,
                    dataSource: dataSource)
            } catch {
                throw Failure(reason: .protocolError("\(error)"), phase: id)
            }
            var pieces = 0
            while let piece = try splitter.next() {
                pieces += 1
                let covered = min(total, piece.endBlock * Int64(piece.blockSize))
                try await download(piece, phase: id)
                _ = try await command(.flash(target), phase: id, timeout: flashTimeout(piece.rawBytes))
                wire += piece.count
                if gate.shouldReport(covered, total: total) { emit(.progress(phase: id, sent: covered, total: total)) }
            }
            let skipped = mapped.map { ranges in total - ranges.reduce(0) { $0 + Int64($1.count) } } ?? 0
            note(
                "\(target): \(pieces) sparse piece\(pieces == 1 ? "" : "s"), \(wire) bytes on the wire for \(total)"
                    + (skipped > 0 ? " (\(skipped) unmapped bytes sent as DONT_CARE)" : ""))
        } else {
            try await download(dataSource, phase: id)
            _ = try await command(.flash(target), phase: id, timeout: flashTimeout(total))
            wire = total
            emit(.progress(phase: id, sent: total, total: total))
        }
        let result = PhaseResult(
            phase: id, name: target, stage: .fastboot, bytes: total, duration: clock.now - started, controlTransfers: 0)
        emit(.phaseFinished(result))
        return result
    }

    /// The bytes of line `id`'s Binary as the board should get them: the file, or for a Binary
    /// read through ImageSources the uncompressed image as two forward-only readers (one plans
    /// the sparse pieces, one feeds them) and the byte ranges its map or holes select (the rest
    /// goes as DONT_CARE: the medium keeps what it had, as with `--bmap` over DFU).
    func sources(id: UInt8, path: String) throws -> (
        plan: any ByteSource, data: any ByteSource, mapped: [Range<Int64>]?
    ) {
        do {
            guard let image = images[id] else {
                let file = try FileByteSource(path: path)
                return (file, file, nil)
            }
            let planning = try ImageReader(path: image.path, compression: image.compression, size: image.size)
            // Pieces cut across map ranges: check them all before the first piece goes out.
            try image.checkMapChecksums(reader: planning)
            let sending = try ImageReader(path: image.path, compression: image.compression, size: image.size)
            let mapped = image.selection == .whole ? nil : image.extents.map { $0.offset..<$0.end }
            return (WholeImageSource(reader: planning), WholeImageSource(reader: sending), mapped)
        } catch let error as ImageSourceError {
            throw Failure(reason: .badImage(error), phase: id)
        } catch {
            throw Failure(reason: .protocolError("cannot read \(path): \(error)"), phase: id)
        }
    }

    /// The sparse block size: the block map's (a multiple of 512), else 4 KiB.
    func blockSize(_ id: UInt8) -> Int {
        guard let size = images[id]?.map?.blockSize, size >= 512, size % 512 == 0, size <= 1 << 20 else { return 4096 }
        return Int(size)
    }

    func download(_ data: any ByteSource, phase: UInt8) async throws {
        _ = try await command(.download(UInt32(data.count)), phase: phase, data: data, timeout: .seconds(30))
    }

    func flashTimeout(_ bytes: Int64) -> Duration {
        .seconds(30) + .seconds(bytes / Self.slowestStorageBytesPerSecond)
    }

    /// One exchange; INFO lines become notes, FAIL becomes a failure naming the command.
    func command(
        _ command: FastbootCommand, phase: UInt8?, data: (any ByteSource)? = nil, timeout: Duration? = nil
    ) async throws -> String {
        do {
            let note = self.note
            return try await client.run(command, data: data, replyTimeout: timeout, onMessage: { note("INFO \($0)") })
                .text
        } catch let failure as FastbootFailure {
            throw Failure(
                reason: .fastbootFailed(command: failure.command.description, reason: failure.reason), phase: phase)
        } catch let error as FastbootProtocolError {
            throw Failure(reason: .protocolError("\(error)"), phase: phase)
        }
    }

    /// `0x%08x` / `0x%016zx` answers.
    static func number(_ text: String) -> UInt64? {
        text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
    }
}
