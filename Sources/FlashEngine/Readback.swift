import Crypto
import DFU

/// Which bytes of a Binary `--verify` reads back.
public enum ReadbackRanges {
    public static let mebibyte: Int64 = 1 << 20

    /// `full`: everything; `sampled`: the first and the last MiB and 1 MiB at every 16 MiB
    /// boundary, merged and in order (the same ranges on every run).
    public static func ranges(length: Int64, mode: VerifyMode) -> [Range<Int64>] {
        guard length > 0 else { return [] }
        switch mode {
        case .none: return []
        case .full: return [0..<length]
        case .sampled:
            var ranges: [Range<Int64>] = [0..<min(mebibyte, length)]
            var start = 16 * mebibyte
            while start < length {
                ranges.append(start..<min(start + mebibyte, length))
                start += 16 * mebibyte
            }
            ranges.append(max(0, length - mebibyte)..<length)
            return merge(ranges)
        }
    }

    /// Sorted, overlapping or touching ranges joined.
    static func merge(_ ranges: [Range<Int64>]) -> [Range<Int64>] {
        var merged: [Range<Int64>] = []
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = merged.last, range.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        return merged
    }

    /// Where to start U-Boot's read to get `range` of a partition of `partitionSize` bytes.
    ///
    /// U-Boot's read transaction fetches the alternate's whole size from the stored offset, in fills
    /// of its DFU buffer, and the medium refuses a fill that passes the partition end
    /// (`dfu_read_buffer_fill()`, `dfu_mmc.c`). A read from offset `s` that reaches `range`'s end
    /// therefore needs `s + roundUp(end - s, buffer) <= partitionSize`; from offset 0 any read is
    /// fine. The start is kept on a 512-byte boundary (MMC reads whole blocks from `offset / 512`).
    public static func readStart(for range: Range<Int64>, partitionSize: Int64?, buffer: Int64) -> Int64 {
        guard let partitionSize, range.lowerBound > 0 else { return range.lowerBound }
        let fills = (range.upperBound - range.lowerBound + buffer - 1) / buffer * buffer
        var start = min(range.lowerBound, partitionSize - fills)
        start = start / 512 * 512
        while start > 0, start + (range.upperBound - start + buffer - 1) / buffer * buffer > partitionSize {
            start = max(0, start - buffer)
        }
        return max(0, start)
    }
}

/// Reads ranges of an enumeration-2 partition back from U-Boot `stm32prog` and compares them with
/// the Binary, then puts U-Boot's phase back where it was (reference §4.4):
///
/// 1. the command alternate makes the partition current with the range's start as stored offset
///    (`stm32prog_set_phase()`), because only the current partition's alternate reads from an offset;
/// 2. DFU_UPLOAD blocks of 4096 bytes until the range's end;
/// 3. a read that stops before the alternate's end leaves U-Boot's transaction open: another
///    partition is made current and the transaction closed (`DFUDevice.closeTransaction`);
/// 4. at the end the phase U-Boot was at is set again with offset 0 — or, when that was END, the
///    highest selected partition's first block is written again from its Binary so that its flush
///    runs `stm32prog_next_phase()` to END (the command alternate cannot select END).
struct PartitionReadback {
    let device: DFUDevice
    let buffer: Int64
    /// The enumeration-2 partition IDs the board offers (to park the current phase on).
    let partitionIDs: [UInt8]

    struct Outcome {
        var bytesRead: Int64
        /// SHA-256 over the compared bytes as expected (from the Binary) and as read.
        var expected: String
        var actual: String
        /// First differing offset, nil when equal.
        var firstDifference: Int64?
    }

    /// Reads `ranges` of partition `id` and compares them with `source` at the same offsets.
    func compare(
        _ id: UInt8, ranges: [Range<Int64>], partitionSize: Int64?, source: any ByteSource
    ) async throws -> Outcome {
        var expectedHash = SHA256()
        var actualHash = SHA256()
        var firstDifference: Int64?
        var total: Int64 = 0
        for range in ranges where range.upperBound <= Int64(UInt32.max) {
            try Task.checkCancellation()
            let start = ReadbackRanges.readStart(for: range, partitionSize: partitionSize, buffer: buffer)
            try await device.setPhase(id, offset: UInt32(start))
            var position = range.lowerBound
            let report = try await device.upload(
                phase: id, length: range.upperBound - range.lowerBound, skip: range.lowerBound - start
            ) { chunk in
                let expected = try source.read(offset: position, length: chunk.count)
                expectedHash.update(data: expected)
                actualHash.update(data: Array(chunk))
                if firstDifference == nil, !chunk.elementsEqual(expected) {
                    let index = zip(chunk, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                    firstDifference = position + Int64(index ?? min(chunk.count, expected.count))
                }
                position += Int64(chunk.count)
            }
            total += report.bytes
            if position < range.upperBound, firstDifference == nil {
                // The alternate ended early: the partition is shorter than the Binary.
                firstDifference = position
            }
            if !report.closed { try await closeRead(id) }
        }
        return Outcome(
            bytesRead: total, expected: hexDigest(expectedHash.finalize()), actual: hexDigest(actualHash.finalize()),
            firstDifference: firstDifference)
    }

    /// Closes the read transaction left open on `id`'s alternate without reporting an error to
    /// `stm32prog`: park the phase on another partition first when there is one.
    private func closeRead(_ id: UInt8) async throws {
        if let park = partitionIDs.first(where: { $0 != id }) { try await device.setPhase(park, offset: 0) }
        try await device.closeTransaction(phase: id)
    }

    /// Puts U-Boot back at `phase` with offset 0. For END, `last` is the highest selected partition
    /// and `firstBlock` its Binary's first bytes (written again, unchanged).
    func restore(phase: UInt8, last: UInt8?, firstBlock: () throws -> [UInt8]) async throws {
        if phase == 0xFE, let last {
            _ = try await device.download(MemoryByteSource(try firstBlock()), phase: last, offset: 0)
        } else if phase != 0xFF {
            try await device.setPhase(phase, offset: 0)
        }
    }
}
