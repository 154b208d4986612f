import Glibc

/// CPU time and peak memory of this process (or of a child) from `getrusage` / `wait4`.
struct ProcessUsage {
    /// User + system CPU seconds.
    var cpuSeconds: Double
    var userSeconds: Double
    var systemSeconds: Double
    /// Peak resident set size in KiB (Linux `ru_maxrss`).
    var maxRSSKiB: Int

    init(_ usage: rusage) {
        userSeconds = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        systemSeconds = Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
        cpuSeconds = userSeconds + systemSeconds
        maxRSSKiB = Int(usage.ru_maxrss)
    }

    /// Every thread of this process so far (the cooperative pool included).
    static func current() -> ProcessUsage {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return ProcessUsage(usage)
    }

    /// The current resident set in KiB (`VmRSS` of /proc/self/status), 0 if unreadable.
    static func residentKiB() -> Int { statusKiB("VmRSS:") }

    /// The peak resident set of this process image in KiB (`VmHWM`). Unlike `ru_maxrss`, which
    /// Linux carries across `exec` (a spawned child starts with its parent's peak), it belongs to
    /// the current address space only.
    static func peakResidentKiB() -> Int { statusKiB("VmHWM:") }

    private static func statusKiB(_ field: String) -> Int {
        guard let file = fopen("/proc/self/status", "r") else { return 0 }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if text.hasPrefix(field) { return Int(text.dropFirst(field.count).filter(\.isNumber)) ?? 0 }
        }
        return 0
    }

    /// Runs this executable again with `arguments` (stdout/stderr inherited) and returns the
    /// child's exit status and resource usage (CPU; see `peakResidentKiB` for its memory).
    /// `standardOutput` names a file for the child's stdout instead.
    static func runSelf(_ arguments: [String], standardOutput: String? = nil) throws -> (
        status: Int32, usage: ProcessUsage
    ) {
        let executable = "/proc/self/exe"
        var argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let standardOutput {
            posix_spawn_file_actions_addopen(&actions, 1, standardOutput, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, nil, &argv, environ)
        guard spawned == 0 else { throw BenchError("posix_spawn \(executable): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 {
            guard errno == EINTR else { throw BenchError("wait4: \(String(cString: strerror(errno)))") }
        }
        let exitStatus = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return (exitStatus, ProcessUsage(usage))
    }
}
