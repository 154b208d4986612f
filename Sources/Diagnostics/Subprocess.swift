import Glibc

/// Runs the few host commands the diagnostics need (`udevadm`, `dmesg`): found on PATH, no shell.
enum Subprocess {
    /// Runs a command and waits for it; 127 when it cannot be started.
    static func run(_ arguments: [String]) -> Int32 {
        spawn(arguments, stdoutFD: nil).map(wait) ?? 127
    }

    /// Runs a command and collects its standard output (at most 4 MiB); nil when it cannot start.
    static func capture(_ arguments: [String]) -> (status: Int32, text: String)? {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return nil }
        defer { close(fds[0]) }
        let pid = spawn(arguments, stdoutFD: fds[1])
        close(fds[1])
        guard let pid else { return nil }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while output.count < 4 << 20 {
            let count = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            output += chunk[0..<count]
        }
        return (wait(pid), String(decoding: output, as: UTF8.self))
    }

    static func spawn(_ arguments: [String], stdoutFD: Int32?) -> pid_t? {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdoutFD {
            posix_spawn_file_actions_adddup2(&actions, stdoutFD, 1)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        return posix_spawnp(&pid, arguments[0], &actions, nil, argv, environ) == 0 ? pid : nil
    }

    /// The exit status (WIFEXITED/WEXITSTATUS are C macros: exited when the low 7 bits are 0;
    /// a signal gives 128 + its number, as shells report it).
    static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return 127 }
        }
        return status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    }
}
