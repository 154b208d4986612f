/// One download through U-Boot's command alternate: set phase + offset, send `length` bytes of
/// the image from `offset`, zero-length DNLOAD. It covers one or more map extents.
public struct SendSegment: Sendable, Hashable, Codable {
    /// Offset in the image, which is the offset in the partition.
    public var offset: Int64
    public var length: Int64
    /// The map extents inside this segment (their checksums are checked before it is sent).
    public var extents: [ImageExtent]

    public init(offset: Int64, length: Int64, extents: [ImageExtent]) {
        self.offset = offset
        self.length = length
        self.extents = extents
    }

    public var end: Int64 { offset + length }
}

/// Turns a prepared image's extents into the downloads that carry them.
public enum RangeSchedule {
    /// The command alternate's offset is 32 bits (reference §4.4): a download can start at most
    /// this many bytes into a partition.
    public static let addressLimit: Int64 = 1 << 32

    /// The segments, and how many extents lie beyond `addressLimit`. Those cannot be addressed:
    /// they are sent as one contiguous segment from the last addressable block boundary (or from
    /// the start of the extent that crosses it), holes included, up to the end of the last extent.
    public static func segments(
        _ extents: [ImageExtent], blockSize: Int64, addressLimit: Int64 = addressLimit
    ) -> (segments: [SendSegment], beyondLimit: Int) {
        let lastAddressable = (addressLimit - 1) / blockSize * blockSize
        var segments: [SendSegment] = []
        var tail: [ImageExtent] = []
        for extent in extents {
            if extent.offset <= lastAddressable {
                segments.append(SendSegment(offset: extent.offset, length: extent.length, extents: [extent]))
            } else {
                tail.append(extent)
            }
        }
        guard let lastTail = tail.last else { return (segments, 0) }
        var start = lastAddressable
        var covered = tail
        if let previous = segments.last, previous.end > lastAddressable {
            // The extent crossing the boundary starts the contiguous run.
            segments.removeLast()
            start = previous.offset
            covered = previous.extents + tail
        }
        segments.append(SendSegment(offset: start, length: lastTail.end - start, extents: covered))
        return (segments, tail.count)
    }
}
