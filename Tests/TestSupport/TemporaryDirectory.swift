import FoundationEssentials
import Glibc

/// A fresh directory under $TMPDIR (or /tmp), removed when `remove()` is called or at deinit.
public final class TemporaryDirectory: @unchecked Sendable {
    /// Immutable after init; the class is only a deinit hook.
    public let path: String

    public init(prefix: String = "stm32mp-flash-test") throws {
        let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array("\(base)/\(prefix).XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard let made else { throw CocoaError(.fileWriteUnknown) }
        path = String(cString: made)
    }

    public func file(_ name: String) -> String { path + "/" + name }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }

    deinit { remove() }
}
