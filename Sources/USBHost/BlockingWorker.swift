import Dispatch
import USBModel

/// A serial queue that runs blocking libusb calls, so they never occupy a thread of Swift's
/// cooperative pool (it has only as many threads as cores).
///
/// `@unchecked Sendable`: the only stored property is a DispatchQueue, which is thread-safe but
/// not annotated on Linux.
final class BlockingWorker: @unchecked Sendable {
    private let queue: DispatchQueue
    /// Holds the worker's label on its queue, so code can tell it runs there (tests check it).
    static let queueKey = DispatchSpecificKey<String>()

    init(label: String) {
        queue = DispatchQueue(label: label)
        queue.setSpecific(key: Self.queueKey, value: label)
    }

    /// Runs `body` on the queue and suspends the caller until it returns.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws(USBTransferError) -> T) async throws(USBTransferError)
        -> T
    {
        try await runCatching(body).get()
    }

    /// Like `run`, with the outcome as a value (retry loops branch on it without catch clauses).
    func runCatching<T: Sendable>(_ body: @escaping @Sendable () throws(USBTransferError) -> T) async -> Result<
        T, USBTransferError
    > {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: Result { () throws(USBTransferError) -> T in try body() }) }
        }
    }
}
