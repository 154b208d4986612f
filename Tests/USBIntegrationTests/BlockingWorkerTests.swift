import Dispatch
import Testing

@testable import USBHost

/// Blocking libusb calls run on the worker's own serial queue, never on the caller's thread (a
/// thread of the cooperative pool); the caller suspends meanwhile.
@Suite struct BlockingWorkerTests {
    @Test func blockingCallsRunOnTheWorkersOwnQueue() async throws {
        let worker = BlockingWorker(label: "test.blocking")
        let onWorkerQueue = try await worker.run {
            DispatchQueue.getSpecific(key: BlockingWorker.queueKey) == "test.blocking"
        }
        #expect(onWorkerQueue)
        // Here, on the caller's side, it is some other thread.
        #expect(DispatchQueue.getSpecific(key: BlockingWorker.queueKey) == nil)
    }
}
