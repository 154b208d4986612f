import ArgumentParser
import Dispatch
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
    // The emulator ignores SIGUSR1 (it handles it through a dispatch source); the child must not.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var defaults = sigset_t()
    sigemptyset(&defaults)
    sigaddset(&defaults, SIGUSR1)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF))
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, command[0], nil, &attributes, arguments, environ)
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
    let stop = DispatchSemaphore(value: 0)
    let sources = [SIGINT, SIGTERM].map { signalNumber in
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler { stop.signal() }
        source.activate()
        return source
    }
    stop.wait()
    for source in sources { source.cancel() }
    return 0
}
