import Glibc
import SystemPackage

/// A program of the host (mke2fs…) run with posix_spawn, since sources avoid Foundation's Process.
public struct HostProgram: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// Looks `name` up in `PATH` and the sbin folders, which a non-root user's PATH often lacks.
    public static func find(_ name: String) -> String? {
        let path = getenv("PATH").map { String(cString: $0) } ?? ""
        let folders = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        return folders.map { $0 + "/" + name }.first { access($0, X_OK) == 0 }
    }

    /// Runs the program to completion with a minimal environment; its output goes to a log file
    /// that is quoted in the error when it fails.
    func run(_ arguments: [String]) throws(ExampleGenerationError) {
        let commandLine = ([path] + arguments).joined(separator: " ")
        var logTemplate = Array("/tmp/stm32mp-flash-tool.XXXXXX".utf8CString)
        let logDescriptor = logTemplate.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard logDescriptor >= 0 else {
            throw ExampleGenerationError(description: "Cannot create a log file for \(commandLine).")
        }
        let logPath = String(decoding: logTemplate.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer {
            close(logDescriptor)
            unlink(logPath)
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, logDescriptor, 1)
        posix_spawn_file_actions_adddup2(&actions, logDescriptor, 2)

        let argumentText: [String] = [path] + arguments
        let argv = argumentText.map { strdup($0) } + [nil]
        let environmentText: [String] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"]
        let environment = environmentText.map { strdup($0) } + [nil]
        defer { (argv + environment).forEach { free($0) } }

        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, nil, argv, environment)
        guard spawned == 0 else {
            throw ExampleGenerationError(description: "Cannot start \(path): \(Errno(rawValue: spawned)).")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exitedNormally = status & 0x7F == 0
        let exitCode = (status >> 8) & 0xFF
        guard exitedNormally, exitCode == 0 else {
            let output = (try? FileTree.read(logPath)) ?? []
            throw ExampleGenerationError(
                description:
                    "\(commandLine) failed (\(exitedNormally ? "exit status \(exitCode)" : "killed by signal \(status & 0x7F)")): "
                    + String(decoding: output, as: UTF8.self).trimmingTrailingNewlines() + ".")
        }
    }
}

extension String {
    fileprivate func trimmingTrailingNewlines() -> String {
        var text = self
        while text.last?.isNewline == true { text.removeLast() }
        return text
    }
}

/// Small file-system helpers over swift-system and libc.
enum FileTree {
    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// `mkdir -p`.
    static func makeDirectories(_ path: String) throws(ExampleGenerationError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") where component != "." {
            prefix += "/" + component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw ExampleGenerationError(
                    description: "Cannot create the folder \(prefix): \(Errno(rawValue: errno)).")
            }
        }
    }

    /// Creates or replaces `path` with `bytes`.
    static func write(_ bytes: [UInt8], to path: String) throws(ExampleGenerationError) {
        do {
            let file = try FileDescriptor.open(
                FilePath(path), .writeOnly, options: [.create, .truncate],
                permissions: [.ownerReadWrite, .groupRead, .otherRead])
            try file.closeAfter { _ = try bytes.withUnsafeBytes { try file.writeAll($0) } }
        } catch {
            throw ExampleGenerationError(description: "Cannot write \(path): \(error).")
        }
    }

    static func read(_ path: String) throws -> [UInt8] {
        let file = try FileDescriptor.open(FilePath(path), .readOnly)
        return try file.closeAfter {
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let count = try chunk.withUnsafeMutableBytes { try file.read(into: $0) }
                if count == 0 { return bytes }
                bytes += chunk[..<count]
            }
        }
    }

    /// `rm -rf` for the staging folders this command made (regular files and folders only).
    static func removeTree(_ path: String) {
        guard let directory = opendir(path) else {
            _ = unlink(path)
            return
        }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            removeTree(path + "/" + name)
        }
        closedir(directory)
        _ = rmdir(path)
    }
}
