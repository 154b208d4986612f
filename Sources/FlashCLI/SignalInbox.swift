import Dispatch
import Glibc

/// The write end of the pipe the C handler writes to; set once before any handler is installed
/// (a constant-initialised global, so the handler reads it without any lazy initialisation).
nonisolated(unsafe) private var signalWriteDescriptor: Int32 = -1
/// The read end, for the inbox's dispatch source.
nonisolated(unsafe) private var signalReadDescriptor: Int32 = -1

/// The C signal handler: writes the signal's number to the pipe (async-signal-safe) and nothing
/// else. A full pipe drops the byte rather than block.
private func forwardSignal(_ number: Int32) {
    let saved = errno
    var byte = UInt8(truncatingIfNeeded: number)
    _ = write(signalWriteDescriptor, &byte, 1)
    errno = saved
}

/// Signals delivered as calls of `handler` on `queue`, with no window in which one is lost: the C
/// handler is installed synchronously (sigaction) before `init` returns and only writes the
/// signal's number to a pipe, which a dispatch read source drains. A dispatch signal source alone
/// is registered asynchronously on libdispatch's manager thread after `resume()`, and a signal
/// that arrives before that (e.g. right after a command printed `start` or READY) is discarded
/// under SIG_IGN. One inbox at a time per process; `stop()` gives the signals their default
/// action back.
final class SignalInbox: @unchecked Sendable {  // `source` and `numbers` are set once in init.
    private let numbers: [Int32]
    private let source: any DispatchSourceRead

    init(_ numbers: [Int32], queue: DispatchQueue, handler: @escaping @Sendable (Int32) -> Void) {
        if signalReadDescriptor < 0 {
            var descriptors: [Int32] = [-1, -1]
            if pipe(&descriptors) == 0 {
                for descriptor in descriptors {
                    _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
                    _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
                }
                signalReadDescriptor = descriptors[0]
                signalWriteDescriptor = descriptors[1]
            }
        }
        self.numbers = numbers
        let reading = signalReadDescriptor
        source = DispatchSource.makeReadSource(fileDescriptor: reading, queue: queue)
        source.setEventHandler {
            var bytes = [UInt8](repeating: 0, count: 32)
            let count = read(reading, &bytes, bytes.count)
            for byte in bytes.prefix(max(count, 0)) { handler(Int32(byte)) }
        }
        source.resume()
        for number in numbers {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = forwardSignal
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(number, &action, nil)
        }
    }

    /// The signals get their default action back; nothing more is delivered.
    func stop() {
        for number in numbers { signal(number, SIG_DFL) }
        source.cancel()
    }
}
