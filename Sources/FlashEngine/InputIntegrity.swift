import Crypto
public import DFU
public import Glibc

/// What identifies a file's content on this host without reading it: device, inode, size and
/// modification time. A Binary whose identity differs after it was sent was replaced or rewritten
/// while the board was taking it (a torn image), so the run must not report success.
public struct FileIdentity: Sendable, Hashable, CustomStringConvertible {
    public var device: UInt64
    public var inode: UInt64
    public var size: Int64
    public var modified: timespec

    /// The identity of `path` now.
    /// - Throws: `FlashFailure.Reason.hostFile` with the OS reason.
    public static func of(path: String) throws(FlashFailure) -> FileIdentity {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw FlashFailure(.hostFile(path: path, reason: String(cString: strerror(errno))))
        }
        return FileIdentity(
            device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size), modified: info.st_mtim)
    }

    public static func == (a: FileIdentity, b: FileIdentity) -> Bool {
        a.device == b.device && a.inode == b.inode && a.size == b.size && a.modified.tv_sec == b.modified.tv_sec
            && a.modified.tv_nsec == b.modified.tv_nsec
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(device)
        hasher.combine(inode)
        hasher.combine(size)
    }

    public var description: String {
        "device \(device), inode \(inode), \(size) bytes, modified \(modified.tv_sec).\(modified.tv_nsec)"
    }

    /// What differs between `self` (before) and `after`, in words.
    public func change(to after: FileIdentity) -> String? {
        var changes: [String] = []
        if after.device != device || after.inode != inode { changes.append("replaced by another file") }
        if after.size != size { changes.append("size \(size) → \(after.size) bytes") }
        if after.modified.tv_sec != modified.tv_sec || after.modified.tv_nsec != modified.tv_nsec {
            changes.append("modification time changed")
        }
        return changes.isEmpty ? nil : changes.joined(separator: ", ")
    }
}

/// Hashes a source's bytes with SHA-256 as the DFU client reads them, in order. A read that does
/// not continue where the last one ended (a range sent from an offset) is hashed only if the
/// bytes before it were fed with `prefix(_:)`.
public final class HashingByteSource: ByteSource, @unchecked Sendable {
    // One task drives a download at a time (the DFU client's contract); `state` is only touched
    // from that task's reads, so no lock is needed beyond that invariant.
    private let base: any ByteSource
    private var hasher = SHA256()
    private var next: Int64 = 0
    private var broken = false

    public init(_ base: any ByteSource) { self.base = base }

    public var count: Int64 { base.count }

    /// Feeds bytes `[next, offset)` by reading them from the base source (a resumed partition's
    /// part already on the board), so the digest still covers the whole Binary.
    public func hashPrefix(upTo offset: Int64) throws {
        while next < offset {
            let data = try base.read(offset: next, length: Int(min(1 << 20, offset - next)))
            guard !data.isEmpty else { break }
            hasher.update(data: data)
            next += Int64(data.count)
        }
    }

    public func read(offset: Int64, length: Int) throws -> [UInt8] {
        let data = try base.read(offset: offset, length: length)
        if offset == next, !broken {
            hasher.update(data: data)
            next += Int64(data.count)
        } else if offset > next || offset + Int64(data.count) > next {
            broken = true
        }
        return data
    }

    /// The SHA-256 (lower-case hex) of the whole source, once every byte went through in order.
    public var digest: String? {
        guard !broken, next == base.count else { return nil }
        return hexDigest(hasher.finalize())
    }
}

/// Lower-case hex of a digest.
func hexDigest(_ digest: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in digest {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
}
