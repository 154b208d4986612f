import ArgumentParser
import Glibc

/// The running child, for the signal handlers (set once before they are installed).
nonisolated(unsafe) private var childProcess: pid_t = 0

/// Starts `command` (searched in PATH) with this process's environment, which holds LD_PRELOAD
/// and UMOCKDEV_DIR, and waits for it. Returns its exit status (128 + signal when killed).
/// SIGINT, SIGTERM and SIGHUP are passed on to it.
func runChild(_ command: [String]) throws -> Int32 {
    var arguments = command.map { strdup($0) }
    arguments.append(nil)
    defer { for argument in arguments { free(argument) } }
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, command[0], nil, nil, arguments, environ)
    guard rc == 0 else { throw ValidationError("cannot run \(command[0]): \(String(cString: strerror(rc)))") }
    childProcess = pid
    for signalNumber in [SIGINT, SIGTERM, SIGHUP] {
        signal(signalNumber) { received in if childProcess > 0 { kill(childProcess, received) } }
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let signalled = status & 0x7F
    return signalled == 0 ? (status >> 8) & 0xFF : 128 + signalled
}

/// Serves until SIGINT or SIGTERM (no command given). Returns 0.
func serveUntilSignalled() -> Int32 {
    var signals = sigset_t()
    sigemptyset(&signals)
    sigaddset(&signals, SIGINT)
    sigaddset(&signals, SIGTERM)
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    var received: Int32 = 0
    sigwait(&signals, &received)
    return 0
}
