import Crypto
import FileAccess
import SystemPackage

/// SHA-256 of a host file, streamed in 1 MiB blocks so an image of any size costs constant memory.
package enum FileDigest {
    /// Lowercase hex SHA-256 of the file at `path`.
    /// - Throws: `FileDigestError` with the path and the OS reason.
    package static func sha256(path: String) throws(FileDigestError) -> String {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(FilePath(path), .readOnly)
        } catch {
            throw FileDigestError(path: path, reason: "\(error)")
        }
        defer { try? descriptor.close() }
        var hasher = SHA256()
        var offset: Int64 = 0
        while true {
            let block: [UInt8]
            do {
                block = try descriptor.read(count: 1 << 20, atAbsoluteOffset: offset)
            } catch {
                throw FileDigestError(path: path, reason: "\(error)")
            }
            if block.isEmpty { break }
            hasher.update(data: block)
            offset += Int64(block.count)
        }
        return hex(hasher.finalize())
    }

    /// Lowercase hex SHA-256 of `bytes`.
    package static func sha256(bytes: [UInt8]) -> String { hex(SHA256.hash(data: bytes)) }

    private static func hex(_ digest: SHA256.Digest) -> String {
        digest.map { byte in
            let text = String(byte, radix: 16)
            return text.count == 1 ? "0" + text : text
        }.joined()
    }
}

/// A file could not be hashed.
package struct FileDigestError: Error, Sendable, Hashable, CustomStringConvertible {
    package var path: String
    package var reason: String
    package var description: String { "\(path): cannot read to hash it: \(reason)" }
}
