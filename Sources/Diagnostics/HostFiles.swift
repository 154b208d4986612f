import Glibc
import USBModel

/// Read-only access to the host's files below a root folder, so that every probe can run against
/// a fake `/sys`, `/proc`, `/etc`, `/run` tree built by a test.
struct HostFiles: Sendable {
    /// The folder that stands for `/` (no trailing slash; "" for the real root).
    let prefix: String

    init(root: String) {
        var trimmed = root
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        prefix = trimmed
    }

    /// True when this is the live system (its answers may use the kernel, not just files).
    var isLiveSystem: Bool { prefix.isEmpty }

    /// The real path of `path` (absolute, as seen from inside the root).
    func resolve(_ path: String) -> String { prefix + path }

    func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(resolve(path), &info) == 0
    }

    func fileStatus(_ path: String) -> stat? {
        var info = stat()
        return stat(resolve(path), &info) == 0 ? info : nil
    }

    /// The whole file, or nil when it cannot be read. Stops at `limit` bytes (sysfs and procfs
    /// files report size 0, so the size is never trusted).
    func read(_ path: String, limit: Int = 1 << 20) -> String? {
        guard let bytes = readBytes(path, limit: limit) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The file's first line without surrounding white space (the shape of sysfs attributes).
    func attribute(_ path: String) -> String? {
        guard let text = read(path, limit: 4096) else { return nil }
        let value = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return value.trimmingWhitespace
    }

    func readBytes(_ path: String, limit: Int) -> [UInt8]? {
        let fd = open(resolve(path), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 8192)
        while result.count < limit {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return count == 0 ? result : (result.isEmpty ? nil : result) }
            result.append(contentsOf: chunk[0..<count])
        }
        return Array(result.prefix(limit))
    }

    /// The path with every link resolved, or nil when it does not exist.
    func realPath(_ path: String) -> String? {
        guard let resolved = realpath(resolve(path), nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Names in a folder, sorted, without `.` and `..`; empty when it cannot be read.
    func list(_ path: String) -> [String] {
        guard let dir = opendir(resolve(path)) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}

extension String {
    /// True when `needle` occurs in the string, ignoring ASCII case (no Foundation needed).
    func containsIgnoringCase(_ needle: String) -> Bool {
        let haystack = Array(lowercased().utf8)
        let target = Array(needle.lowercased().utf8)
        guard !target.isEmpty else { return true }
        guard haystack.count >= target.count else { return false }
        for start in 0...(haystack.count - target.count)
        where haystack[start..<(start + target.count)].elementsEqual(target) {
            return true
        }
        return false
    }

    func hasPrefixIgnoringCase(_ prefix: String) -> Bool {
        lowercased().hasPrefix(prefix.lowercased())
    }
}
