import AndroidSparse
import BoardTracking
import DFU
import Fastboot
import FlashLayout
import Timekeeping

/// The fastboot part of a `--transport fastboot` run, once U-Boot shows 0483:0afb: probe
/// (`getvar`), check the board against the plan before anything is written, send every file as
/// Android sparse pieces no larger than `max-download-size`, erase, boot partitions last, reboot.
struct FastbootStage {
    let client: FastbootClient
    let plan: PartitionPlan
    let fastboot: FastbootPlan
    /// The serial U-Boot's DFU stage announced; fastboot must show the same (`serial#`).
    let expectedSerial: String?
    let clock: any FlashClock
    let emit: @Sendable (FlashEvent) -> Void
    let note: @Sendable (String) -> Void

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
        emit(.end)
        // The board resets after this OKAY; with the boot pins on USB the ROM comes back.
        _ = try await command(.reboot, phase: nil)
        note("reboot sent: the board restarts (the ROM's DFU reappears while the boot pins select USB)")
        return results
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
                if let size = plan.files[id]?.size, size > Int64(maxDownload) {
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
        if let file = plan.files[id], UInt64(file.size) > size {
            throw Failure(
                reason: .fastbootPartitions("'\(name)' holds \(size) bytes, its file has \(file.size)"), phase: id)
        }
    }

    /// Sends line `id`'s file to `target`: sparse pieces, or one raw download (boot partitions).
    func send(id: UInt8, target: String, maxDownload: Int, sparse: Bool) async throws -> PhaseResult {
        guard let file = plan.files[id] else { throw Failure(reason: .phaseWithoutFile(id), phase: id) }
        let source: FileByteSource
        do {
            source = try FileByteSource(path: file.path)
        } catch {
            throw Failure(reason: .protocolError("cannot read \(file.path): \(error)"), phase: id)
        }
        let started = clock.now
        let total = source.count
        emit(.phaseStarted(phase: id, name: target, bytes: total, stage: .fastboot))
        let gate = ProgressGate(step: max(total / 100, 64 * 1024))
        let emit = self.emit
        var wire: Int64 = 0
        if sparse {
            let splitter: SparseSplitter
            do {
                splitter = try SparseSplitter(source: source, maxPieceBytes: maxDownload)
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
            note("\(target): \(pieces) sparse piece\(pieces == 1 ? "" : "s"), \(wire) bytes on the wire for \(total)")
        } else {
            try await download(source, phase: id)
            _ = try await command(.flash(target), phase: id, timeout: flashTimeout(total))
            wire = total
            emit(.progress(phase: id, sent: total, total: total))
        }
        let result = PhaseResult(
            phase: id, name: target, stage: .fastboot, bytes: total, duration: clock.now - started, controlTransfers: 0)
        emit(.phaseFinished(result))
        return result
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
