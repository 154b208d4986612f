public import DFU
public import TestSupport
public import Timekeeping
public import USBModel
public import VirtualBoard

/// A virtual board on an in-memory bus, on a simulated clock, with its storage in a temporary
/// folder: the rig shared by the DFU, virtual-board and engine tests. Test targets add their own
/// helpers in extensions.
public struct VirtualBoardBench: Sendable {
    public let clock = SimulatedClock()
    public let directory: TemporaryDirectory
    public let board: VirtualBoard
    public let bus: VirtualUSBBus

    /// - Parameter configure: changes to the default configuration (storage goes to `directory`).
    /// - Parameter listLag: how long a new device stays out of the bus's device list after its add
    ///   event (the udev/libusb race).
    public init(listLag: Duration = .zero, _ configure: (inout BoardConfiguration) -> Void = { _ in }) throws {
        directory = try TemporaryDirectory()
        var configuration = BoardConfiguration(storageDirectory: directory.path)
        configure(&configuration)
        board = VirtualBoard(configuration: configuration)
        bus = VirtualUSBBus(clock: clock, boards: [board], listLag: listLag)
        events = bus.subscribeNow()
    }

    /// Hot-plug events since the bench was made.
    public let events: any HotplugSubscription

    /// Opens the device on the board's port as a DFU device.
    public func open() async throws -> DFUDevice { try await bus.openDFU(port: board.port) }

    /// The next device on the board's port within `timeout`, or nil.
    public func next(within timeout: Duration = .seconds(60)) async throws -> DFUDevice? {
        try await bus.waitForDFU(port: board.port, timeout: timeout, events: events)
    }
}
