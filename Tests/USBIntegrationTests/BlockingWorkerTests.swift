import Foundation
import Synchronization
import Testing

@testable import USBHost

/// Blocking libusb calls run on their own queues: even more of them than the cooperative pool has
/// threads do not stop other tasks from running.
@Suite struct BlockingWorkerTests {
    @Test func blockingCallsLeaveTheCooperativePoolFree() async throws {
        let order = CompletionOrder()
        let blockingCalls = ProcessInfo.processInfo.activeProcessorCount * 2 + 2
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<blockingCalls {
                group.addTask {
                    let worker = BlockingWorker(label: "test.blocking.\(index)")
                    try await worker.run {
                        usleep(400_000)  // A libusb transfer waiting for its device.
                        order.append("blocking")
                    }
                }
            }
            // Give the blocking calls time to start; a blocked pool would also block this sleep.
            try await Task.sleep(for: .milliseconds(50))
            group.addTask { order.append("cooperative") }
            try await group.waitForAll()
        }
        let finished = order.names
        #expect(finished.count == blockingCalls + 1)
        #expect(finished.first == "cooperative", "the cooperative task ran while every blocking call was still blocked")
    }
}

/// Names in the order their tasks finished.
private final class CompletionOrder: Sendable {
    private let storage = Mutex<[String]>([])

    func append(_ name: String) { storage.withLock { $0.append(name) } }
    var names: [String] { storage.withLock { $0 } }
}
