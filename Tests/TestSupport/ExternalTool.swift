import Foundation

/// Runs a real command-line tool (sfdisk, sgdisk, mkimage, e2fsck…) so tests check our output
/// with the programs users trust, not with our own reader.
public struct ExternalTool: Sendable {
    public struct Result: Sendable {
        public let status: Int32
        public let standardOutput: String
        public let standardError: String
    }

    /// Where tools are looked up: PATH plus the sbin folders that PATH often lacks for non-root users.
    static let searchFolders: [String] = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        return path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
    }()

    public let executable: String

    /// Finds `name` on the search path; throws when it is not installed, naming the package to install.
    public init(_ name: String, package: String) throws {
        guard
            let found = Self.searchFolders.map({ $0 + "/" + name })
                .first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else { throw ToolMissing(name: name, package: package) }
        executable = found
    }

    /// A tool at a known path (e.g. one of our built products).
    public init(path: String) { executable = path }

    public func run(_ arguments: [String], workingDirectory: String? = nil) throws -> Result {
        let process = Process()
        if let workingDirectory { process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory) }
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        let error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        let errData = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus, standardOutput: String(decoding: outData, as: UTF8.self),
            standardError: String(decoding: errData, as: UTF8.self))
    }
}

public struct ToolMissing: Error, CustomStringConvertible {
    public let name: String
    public let package: String
    public var description: String { "\(name) is not installed; run `apt-get install -y \(package)`." }
}
