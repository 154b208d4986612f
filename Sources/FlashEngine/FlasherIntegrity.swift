import BoardTracking
import DFU
import FlashLayout
import ImageSources
import USBModel

/// A Binary being sent: hashed as it goes, with its identity taken before.
struct FlashInput {
    var source: HashingByteSource
    var name: String
    /// nil for the layout payload (built in memory).
    var path: String?
    var identity: FileIdentity?
    /// A Binary read through ImageSources (compressed, mapped or sparse): what is sent is the
    /// uncompressed image, or only its ranges.
    var image: (prepared: PreparedImage, reader: ImageReader)?
}

/// A read of a Binary failed on the host (not a board fault).
struct FileReadError: Error {
    var path: String
    var reason: String
}

/// A file whose read errors name the file and the OS reason.
struct HostFileSource: ByteSource {
    let file: FileByteSource

    var count: Int64 { file.count }

    func read(offset: Int64, length: Int) throws -> [UInt8] {
        do {
            return try file.read(offset: offset, length: length)
        } catch {
            throw FileReadError(path: file.path, reason: "\(error)")
        }
    }
}

/// Bytes `[from, count)` of another source, at offsets from 0 (a partition resumed mid-way).
struct SliceByteSource: ByteSource {
    let base: any ByteSource
    let from: Int64

    init(_ base: any ByteSource, from: Int64) {
        self.base = base
        self.from = from
    }

    var count: Int64 { max(0, base.count - from) }

    func read(offset: Int64, length: Int) throws -> [UInt8] { try base.read(offset: from + offset, length: length) }
}

extension Flasher.Run {
    /// Where the board is now: stage, the phase being sent and how far it got.
    var position: BoardPosition {
        BoardPosition(
            stage: machine.stage, phase: sending?.id, name: sending?.name,
            offset: sending == nil ? 0 : accepted.withLock { $0 }, total: sending?.total,
            port: board?.port ?? lease.port, tfaBufferBase: tfaBufferBase)
    }

    // MARK: Input integrity

    /// Opens what phase `id` sends: the layout payload, or the Binary (identity taken first).
    func openInput(_ id: UInt8) throws -> FlashInput {
        if id == 0 {
            return FlashInput(source: HashingByteSource(MemoryByteSource(plan.payload.bytes)), name: "flashlayout")
        }
        guard let file = plan.files[id] else { throw failure(.phaseWithoutFile(id)) }
        let name =
            plan.bootStages.first { $0.line.id == id }?.line.name ?? plan.partition(id: id)?.partition.line.name
            ?? phaseHex(id)
        let identity: FileIdentity
        do {
            identity = try FileIdentity.of(path: file.path)
        } catch {
            throw failure(error.reason)
        }
        if let prepared = flasher.request.images[id] {
            let reader: ImageReader
            do {
                reader = try ImageReader(path: prepared.path, compression: prepared.compression, size: prepared.size)
            } catch {
                throw failure(.badImage(error))
            }
            return FlashInput(
                source: HashingByteSource(WholeImageSource(reader: reader)), name: name, path: file.path,
                identity: identity, image: (prepared, reader))
        }
        let opened: FileByteSource
        do {
            opened = try FileByteSource(path: file.path)
        } catch {
            throw failure(.hostFile(path: file.path, reason: "cannot be opened: \(error)"))
        }
        return FlashInput(
            source: HashingByteSource(HostFileSource(file: opened)), name: name, path: file.path, identity: identity)
    }

    /// What a Binary holds as the board should hold it: the uncompressed image for a Binary read
    /// through ImageSources, else the file.
    func contentSource(_ id: UInt8) throws -> any ByteSource {
        if let prepared = flasher.request.images[id] {
            do {
                return WholeImageSource(
                    reader: try ImageReader(path: prepared.path, compression: prepared.compression, size: prepared.size)
                )
            } catch {
                throw failure(.badImage(error))
            }
        }
        guard let path = plan.files[id]?.path else { throw failure(.phaseWithoutFile(id)) }
        return HostFileSource(file: try openFile(path))
    }

    /// The byte ranges of phase `id` worth reading back: `ranges` of the whole Binary, cut to what
    /// a mapped or sparse image really sends (the rest of the partition keeps the medium's bytes).
    func sentRanges(_ id: UInt8, _ ranges: [Range<Int64>], stage: BoardStage) -> [Range<Int64>] {
        guard let image = flasher.request.images[id],
            ImageSending.usesRanges(image, stage: stage, plan: plan, phase: id)
        else { return ranges }
        let sent = RangeSchedule.segments(image.extents, blockSize: image.map?.blockSize ?? 4096).segments.map {
            $0.offset..<$0.end
        }
        var cut: [Range<Int64>] = []
        for range in ranges {
            for segment in sent where segment.overlaps(range) {
                cut.append(max(range.lowerBound, segment.lowerBound)..<min(range.upperBound, segment.upperBound))
            }
        }
        if cut.isEmpty, let first = sent.first {
            cut = [first.lowerBound..<min(first.upperBound, first.lowerBound + ReadbackRanges.mebibyte)]
        }
        return cut
    }

    /// The Binary's identity must be what it was before it was sent.
    func verifyUnchanged(_ input: FlashInput) throws {
        guard let path = input.path, let before = input.identity else { return }
        let after: FileIdentity
        do {
            after = try FileIdentity.of(path: path)
        } catch {
            throw failure(.fileChanged(path: path, detail: "it can no longer be read"))
        }
        if let change = before.change(to: after) { throw failure(.fileChanged(path: path, detail: change)) }
    }

    /// Before reporting success: every Binary sent is still the file it was.
    func checkFilesUnchanged() throws {
        for (id, before) in identities {
            guard let path = plan.files[id]?.path else { continue }
            guard let after = try? FileIdentity.of(path: path) else {
                throw failure(.fileChanged(path: path, detail: "it can no longer be read"))
            }
            if let change = before.change(to: after) { throw failure(.fileChanged(path: path, detail: change)) }
        }
    }

    // MARK: Readback

    /// After phase `id` was sent: the file must be unchanged; a U-Boot partition is read back as
    /// `--verify` says before the next phase is asked for, and U-Boot's phase and offset are put
    /// back.
    mutating func check(_ id: UInt8, input: FlashInput, stage: BoardStage) async throws {
        try verifyUnchanged(input)
        let total = input.source.count
        let mode = flasher.request.verify
        let partition = stage == .uboot && id != 0
        var record = PartitionCheck(
            phase: id, name: input.name, bytes: total, sha256: input.source.digest,
            method: partition ? (mode == .none ? .none : .sampled) : .notReadable, bytesRead: 0)
        identities[id] = input.identity
        defer { checks.append(record) }
        guard partition else { return }
        let device = try current()
        let next = try await device.getPhase()
        recorder.add(.phase(next, stage: stage))
        guard next.phase != 0xFF else { return }  // the state machine reads and reports it
        let reader = readback(device)
        if mode == .none || input.path == nil {
            if next.offset != 0 { try await reader.restore(phase: next.phase, last: nil) { [] } }
            return
        }
        let ranges = sentRanges(id, ReadbackRanges.ranges(length: total, mode: mode), stage: stage)
        let outcome = try await reader.compare(
            id, ranges: ranges, partitionSize: partitionSize(device, id), source: try contentSource(id)
        )
        try await restore(reader, to: next.phase)
        try verifyUnchanged(input)
        recorder.add(
            .readBack(phase: id, bytesRead: outcome.bytesRead, mode: mode, firstDifference: outcome.firstDifference))
        if let offset = outcome.firstDifference {
            throw failure(
                .verifyMismatch(
                    VerifyMismatch(
                        phase: id, name: input.name, offset: offset, expectedSHA256: outcome.expected,
                        actualSHA256: outcome.actual, method: mode)))
        }
        record.method = mode == VerifyMode.full ? PartitionCheck.Method.full : .sampled
        record.bytesRead = outcome.bytesRead
        flasher.emit(.verified(record))
    }

    func readback(_ device: DFUDevice) -> PartitionReadback {
        PartitionReadback(
            device: device, buffer: flasher.request.ubootBufferSize, partitionIDs: BoardRecovery.partitionIDs(device))
    }

    /// The partition's size as U-Boot announces it (a lower bound: the unit is truncated).
    func partitionSize(_ device: DFUDevice, _ id: UInt8) -> Int64? {
        device.alternate(forPhase: id)?.name.map { Int64($0.size) }
    }

    func reopen(_ input: FlashInput) throws -> FileByteSource {
        guard let path = input.path else { throw failure(.protocolError("no file to compare with")) }
        return try openFile(path)
    }

    func openFile(_ path: String) throws -> FileByteSource {
        do {
            return try FileByteSource(path: path)
        } catch {
            throw failure(.hostFile(path: path, reason: "cannot be opened: \(error)"))
        }
    }

    /// Puts U-Boot back at `phase` (END: by writing the last selected partition's first block
    /// again, see `PartitionReadback`).
    func restore(_ reader: PartitionReadback, to phase: UInt8) async throws {
        let last = plan.requestOrder.max()
        try await reader.restore(phase: phase, last: last) {
            guard let last else { return [] }
            // The image's first block as the board holds it (decompressed for .gz/.xz/.zst).
            let content = try contentSource(last)
            return try content.read(offset: 0, length: Int(min(4096, content.count)))
        }
    }

    // MARK: Interruption and recovery

    /// A cancelled run in the middle of a U-Boot partition: close the transaction U-Boot keeps
    /// open and set the phase back to the partition's start, so a new run (or a resume) can use
    /// the board (reference §4.4). Runs outside the cancelled task, best effort.
    mutating func leaveUsable() async {
        guard let sending, let device else { return }
        let id = sending.id
        let stage = machine.stage
        let cleanup: CancelCleanup = stage == .uboot ? .closedTransaction : .aborted
        let error = await Task { () -> String? in
            do {
                switch cleanup {
                case .closedTransaction:
                    if id == 0 {
                        try await device.closeTransaction(phase: 0)
                    } else {
                        try await BoardRecovery.abandonPartition(device, id: id)
                    }
                case .aborted:
                    try await device.abort()
                }
                return nil
            } catch {
                return "\(error)"
            }
        }.value
        recorder.add(.leftUsable(phase: id, stage: stage, cleanup: cleanup, error: error))
    }

    /// The first board found is already in U-Boot enumeration 2 (an earlier run was interrupted,
    /// or failed): close stale transactions, then continue where the board's content stops matching
    /// the Binaries (unless `--no-resume`), with the command alternate (reference §4.4).
    mutating func startInEnumeration2(_ device: DFUDevice) async throws {
        let reply = try await device.getPhase()
        recorder.add(.phase(reply, stage: .uboot))
        try checkSessionMatchesPlan(device)
        let stale = try await BoardRecovery.closeStaleTransactions(device)
        if !stale.isEmpty || reply.phase == 0xFF {
            let event = TimelineEvent.recovered(
                closedTransactions: stale, clearedError: reply.phase == 0xFF ? reply.message ?? "" : nil)
            recorder.add(event)
            flasher.emit(.recovered(detail: event.detail ?? ""))
        }
        let reader = readback(device)
        var skipped: [UInt8] = []
        var skippedBytes: Int64 = 0
        var restart: (id: UInt8, offset: Int64)?
        for id in plan.requestOrder {
            guard flasher.request.resume, plan.files[id] != nil else {
                restart = (id, 0)
                break
            }
            let source = try contentSource(id)
            let outcome = try await reader.compare(
                id, ranges: sentRanges(id, ReadbackRanges.ranges(length: source.count, mode: .sampled), stage: .uboot),
                partitionSize: partitionSize(device, id), source: source)
            guard let difference = outcome.firstDifference else {
                skipped.append(id)
                skippedBytes += source.count
                continue
            }
            // A mapped or sparse image is sent again whole range by range (each range sets its offset).
            let ranged =
                flasher.request.images[id].map {
                    ImageSending.usesRanges($0, stage: .uboot, plan: plan, phase: id)
                } ?? false
            restart = (
                id, ranged ? 0 : try await restartOffset(id, source: source, before: difference, reader: reader)
            )
            break
        }
        if let restart {
            try await device.setPhase(restart.id, offset: UInt32(restart.offset))
            if restart.offset > 0 { restartOffsets[restart.id] = restart.offset }
        } else {
            try await restore(reader, to: 0xFE)
        }
        machine.partitionsAlreadyOnBoard(skipped)
        for id in skipped {
            let name = plan.partition(id: id)?.partition.line.name ?? phaseHex(id)
            checks.append(
                PartitionCheck(
                    phase: id, name: name, bytes: plan.files[id]?.size ?? 0, sha256: nil, method: .resumedSkip,
                    bytesRead: 0))
        }
        let report = ResumeReport(
            skipped: skipped, skippedBytes: skippedBytes, restartPhase: restart?.id, restartOffset: restart?.offset ?? 0
        )
        resumeReport = report
        recorder.add(.resumed(report))
        flasher.emit(.resumed(report))
    }

    /// The largest multiple of U-Boot's buffer below `before` (the first sampled difference) whose
    /// last 4 KiB already hold the Binary's bytes: U-Boot writes a partition in whole buffers, so
    /// an interrupted one holds a prefix of such multiples (binary search, a few 4 KiB reads).
    func restartOffset(_ id: UInt8, source: any ByteSource, before: Int64, reader: PartitionReadback) async throws
        -> Int64
    {
        let buffer = flasher.request.ubootBufferSize
        var low: Int64 = 0
        var high = min(before, source.count - 1) / buffer
        let size = partitionSize(try current(), id)
        while low < high {
            let middle = (low + high + 1) / 2
            let end = middle * buffer
            let probe = try await reader.compare(
                id, ranges: [end - 4096..<end], partitionSize: size, source: source)
            if probe.firstDifference == nil { low = middle } else { high = middle - 1 }
        }
        return min(low * buffer, Int64(UInt32.max) / buffer * buffer)
    }

    /// A session left by another layout cannot be continued: its partitions are not ours.
    func checkSessionMatchesPlan(_ device: DFUDevice) throws {
        let offered = Set(
            device.alternates.compactMap { $0.name }.filter { (0x01...0xF0).contains($0.phaseID) }.map {
                "\(phaseHex($0.phaseID)) \($0.name)"
            })
        let planned = Set(
            plan.devices.flatMap(\.partitions).map { "\(phaseHex($0.line.id)) \($0.line.name)" })
        guard offered == planned else {
            throw failure(
                .otherSession(
                    "the board is in U-Boot stm32prog with partitions " + offered.sorted().joined(separator: ", ")
                        + "; this layout has " + planned.sorted().joined(separator: ", ")))
        }
    }
}
