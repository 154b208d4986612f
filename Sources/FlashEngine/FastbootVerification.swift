import AndroidSparse
import DFU
import Decompression
import FlashLayout
import ImageSources
import UBootScript

/// How `--verify` is honoured over fastboot, where ST's U-Boot has no readback (docs/flashing.md).
public enum FastbootVerifyMethod: String, Sendable, Hashable, CaseIterable, Codable {
    /// The hand-off script reads every written range back after `continue` and computes its
    /// CRC-32 on the board; the host reads the results over a second fastboot session.
    case crc32
    /// Trust the OKAY of every `download`/`flash` (no readback).
    case none
}

/// The ranges the board checks after a fastboot flash, and the host's side of the comparison.
enum FastbootVerification {
    /// The CRC stage for `plan`: per flashed line the bytes it writes (the file, or its map's or
    /// holes' data ranges), cut to the `--verify` mode's ranges and to `chunk`-byte reads. Nil
    /// when nothing is checked.
    static func stage(
        _ fastboot: FastbootPlan, files: [UInt8: (path: String, size: Int64)], images: [UInt8: PreparedImage],
        mode: VerifyMode, chunk: Int64, bufferAddress: UInt64
    ) -> CRCReadbackStage? {
        guard mode != .none else { return nil }
        var checks: [CRCReadbackStage.Check] = []
        for step in fastboot.steps {
            let id: UInt8
            let hardwarePartition: Int
            let deviceOffset: UInt64
            switch step {
            case .flash(let line, _):
                id = line
                hardwarePartition = 0
                guard let partition = fastboot.device.partitions.first(where: { $0.line.id == line }) else { continue }
                deviceOffset = partition.offset
            case .flashBoot(let line, _, let part):
                (id, hardwarePartition, deviceOffset) = (line, part, 0)
            case .erase, .selectBoot:
                continue
            }
            guard let size = images[id]?.size ?? files[id]?.size, size > 0 else { continue }
            let written: [Range<Int64>] =
                images[id].flatMap { image in
                    image.selection == .whole ? nil : image.extents.map { $0.offset..<$0.end }
                } ?? [0..<size]
            for range in checkedRanges(written: written, length: size, mode: mode, chunk: chunk) {
                checks.append(
                    CRCReadbackStage.Check(
                        lineID: id, hardwarePartition: hardwarePartition, start: range.lowerBound,
                        length: range.upperBound - range.lowerBound, deviceOffset: deviceOffset))
            }
        }
        return checks.isEmpty
            ? nil
            : CRCReadbackStage(mmcIndex: fastboot.device.target.index, bufferAddress: bufferAddress, checks: checks)
    }

    /// `mode`'s ranges inside what was written, each starting on a 512-byte block (`mmc read`
    /// reads whole blocks; written ranges start on one) and at most `chunk` long.
    static func checkedRanges(written: [Range<Int64>], length: Int64, mode: VerifyMode, chunk: Int64) -> [Range<Int64>]
    {
        let wanted = ReadbackRanges.ranges(length: length, mode: mode)
        var result: [Range<Int64>] = []
        for area in written {
            for sample in wanted {
                var start = max(area.lowerBound, sample.lowerBound)
                let end = min(area.upperBound, sample.upperBound, length)
                guard start < end else { continue }
                let aligned = start / 512 * 512
                start = aligned >= area.lowerBound ? aligned : (start + 511) / 512 * 512
                while start < end {
                    let stop = min(end, start + chunk)
                    if let last = result.last, last.upperBound >= start, stop - last.lowerBound <= chunk {
                        result[result.count - 1] = last.lowerBound..<max(last.upperBound, stop)
                    } else {
                        result.append(start..<stop)
                    }
                    start = stop
                }
            }
        }
        return result
    }

    /// CRC-32 of `range` of `source`, read in 256 KiB pieces (as the download reads it).
    static func crc(of source: any ByteSource, _ range: Range<Int64>) throws -> UInt32 {
        var crc = ZlibCRC32()
        var offset = range.lowerBound
        while offset < range.upperBound {
            try Task.checkCancellation()
            let bytes = try source.read(offset: offset, length: Int(min(256 << 10, range.upperBound - offset)))
            guard !bytes.isEmpty else { break }
            crc.update(bytes)
            offset += Int64(bytes.count)
        }
        return crc.value
    }
}
