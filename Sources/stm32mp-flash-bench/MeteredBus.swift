import Glibc
import Synchronization
import Timekeeping
import USBModel

/// A `USBBus` in front of another that adds up the thread CPU time spent inside its transports'
/// calls. In front of `VirtualUSBBus` that is the in-process board's share (the bus lock, the
/// device model, U-Boot's storage writes, the trace): what a real host would not pay. Calls
/// that ended on another thread than they started (an async hop) are not counted, only tallied.
final class MeteredBus: USBBus {
    let inner: any USBBus
    let meter = CPUMeter()

    init(_ inner: any USBBus) { self.inner = inner }

    var clock: any FlashClock { inner.clock }
    func subscribe() async throws -> any HotplugSubscription { try await inner.subscribe() }
    func dfuDevices(skipping: Set<PortPath>) async throws -> [DFUDeviceListing] {
        try await inner.dfuDevices(skipping: skipping)
    }
    func open(port: PortPath) async throws -> any USBControlTransport {
        MeteredTransport(inner: try await inner.open(port: port), meter: meter)
    }
}

/// Thread CPU nanoseconds spent inside metered calls.
final class CPUMeter: Sendable {
    private let inside = Atomic<Int64>(0)
    private let hops = Atomic<Int>(0)

    var seconds: Double { Double(inside.load(ordering: .relaxed)) / 1e9 }
    var skippedCalls: Int { hops.load(ordering: .relaxed) }

    func measure<T>(_ body: () async throws -> T) async rethrows -> T {
        let thread = pthread_self()
        let start = Self.threadNanoseconds()
        defer {
            if pthread_equal(thread, pthread_self()) != 0 {
                inside.add(Self.threadNanoseconds() - start, ordering: .relaxed)
            } else {
                hops.add(1, ordering: .relaxed)
            }
        }
        return try await body()
    }

    static func threadNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}

final class MeteredTransport: USBControlTransport {
    let inner: any USBControlTransport
    let meter: CPUMeter

    init(inner: any USBControlTransport, meter: CPUMeter) {
        self.inner = inner
        self.meter = meter
    }

    var identity: USBDeviceIdentity { inner.identity }
    func deviceDescriptor() async throws -> DeviceDescriptor {
        try await meter.measure { try await inner.deviceDescriptor() }
    }
    func configurationDescriptor() async throws -> ConfigurationDescriptor {
        try await meter.measure { try await inner.configurationDescriptor() }
    }
    func string(index: UInt8) async throws -> String {
        try await meter.measure { try await inner.string(index: index) }
    }
    func setAlternate(interface: UInt8, alternate: UInt8) async throws {
        try await meter.measure { try await inner.setAlternate(interface: interface, alternate: alternate) }
    }
    func controlIn(_ setup: SetupPacket, timeout: Duration) async throws -> [UInt8] {
        try await meter.measure { try await inner.controlIn(setup, timeout: timeout) }
    }
    func controlOut(_ setup: SetupPacket, data: [UInt8], timeout: Duration) async throws {
        try await meter.measure { try await inner.controlOut(setup, data: data, timeout: timeout) }
    }
    func close() async { await inner.close() }
}
