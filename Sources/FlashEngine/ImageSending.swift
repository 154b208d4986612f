import BoardTracking
import DFU
import FlashLayout
import ImageSources
import Timekeeping

/// A prepared image read whole (a compressed Binary without a map, or any Binary sent to a
/// firmware that cannot take ranges).
struct WholeImageSource: ByteSource {
    let reader: ImageReader

    var count: Int64 { reader.size }

    func read(offset: Int64, length: Int) throws -> [UInt8] { try reader.read(offset: offset, length: length) }
}

/// What sending a partition as ranges did.
public struct RangeSendReport: Sendable, Hashable {
    /// Bytes sent over DFU (the mapped bytes, plus holes inside a run past 4 GiB).
    public var bytes: Int64
    /// Downloads (one per range, each with its command write and zero-length DNLOAD).
    public var segments: Int
    /// Map ranges past the 4 GiB the command offset can address, sent in one contiguous run.
    public var beyondAddressLimit: Int
    /// Where that run starts, when there is one.
    public var contiguousFrom: Int64?
    public var controlTransfers: Int
    public var duration: Duration
}

/// Sends a partition's image as ranges through U-Boot's command alternate (reference §4.4): for
/// each range, the command alternate sets phase and offset (`stm32prog_set_phase()`), the range is
/// downloaded to the partition's alternate starting at that offset (`dfu_initiated_callback()`)
/// and ends with its zero-length DNLOAD. The flush moves U-Boot to the next phase but keeps the
/// stored offset, so every range sets both, and the next partition gets offset 0 at the end.
/// Bytes between ranges keep what the medium held.
enum ImageSending {
    /// Ranges only where U-Boot can take them: enumeration 2 and an MMC device (SD card, eMMC user
    /// area or boot partitions), whose `part`/`raw` alternates write whole 512-byte blocks at the
    /// offset. MTD alternates erase whole erase blocks around each write (NOR, NAND) or go through
    /// UBI, and RAM partitions take their size from the transfer: those are sent whole.
    static func usesRanges(_ image: PreparedImage, stage: BoardStage, plan: PartitionPlan, phase: UInt8) -> Bool {
        guard image.selection != .whole, !image.extents.isEmpty, stage == .uboot,
            let target = plan.partition(id: phase)?.device.target
        else { return false }
        return target.kind == .mmc
    }

    static func sendRanges(
        device: DFUDevice, phase: UInt8, image: PreparedImage, reader: ImageReader, clock: any FlashClock,
        progress: @escaping @Sendable (Int64) -> Void
    ) async throws -> RangeSendReport {
        let start = clock.now
        let transfersBefore = device.controlTransferCount
        let blockSize = image.map?.blockSize ?? 4096
        let (segments, beyond) = RangeSchedule.segments(image.extents, blockSize: blockSize)
        var sent: Int64 = 0
        for segment in segments {
            try Task.checkCancellation()
            let source = SegmentSource(segment: segment, image: reader, checksumType: image.map?.checksumType)
            // The range is checked (and decoded) before its first byte goes out.
            try source.prepare()
            let before = sent
            _ = try await device.download(source, phase: phase, offset: UInt32(segment.offset)) { done in
                progress(before + done)
            }
            sent += segment.length
        }
        // U-Boot moved on with our last offset still stored: the next partition starts at 0.
        let next = try await device.getPhase()
        if next.offset != 0, next.phase != 0xFE, next.phase != 0xFF, next.phase != 0x00 {
            try await device.setPhase(next.phase, offset: 0)
        }
        return RangeSendReport(
            bytes: sent, segments: segments.count, beyondAddressLimit: beyond,
            contiguousFrom: beyond > 0 ? segments.last?.offset : nil,
            controlTransfers: device.controlTransferCount - transfersBefore, duration: clock.now - start)
    }
}
