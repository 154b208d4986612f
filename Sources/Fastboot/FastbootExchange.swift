/// One command's exchange as a pure state machine, like the DFU engine's GetPhase machine:
/// events in (a reply read, the data sent), actions out (write the command, read a reply, send
/// the download data, done). INFO and TEXT lines are collected and do not end the exchange.
public struct FastbootExchange: Sendable {
    public enum Action: Sendable, Hashable {
        case sendCommand([UInt8])
        case readReply
        /// Send exactly this many bytes on bulk OUT, then report `.dataSent`.
        case sendData(UInt32)
        /// OKAY with its text.
        case finished(String)
        /// FAIL with the device's reason.
        case failed(String)
        /// The device broke the protocol.
        case violation(FastbootProtocolError)
    }

    public enum Event: Sendable, Hashable {
        case reply(FastbootReply)
        case dataSent
    }

    enum State: Sendable, Hashable { case idle, awaitingReply, sendingData, done }

    public let command: FastbootCommand
    /// INFO and TEXT lines in arrival order.
    public private(set) var messages: [String] = []
    private var state = State.idle
    private var dataSent = false

    public init(_ command: FastbootCommand) { self.command = command }

    public mutating func start() -> Action {
        precondition(state == .idle, "start() called twice")
        guard let bytes = command.bytes else {
            state = .done
            return .violation(.commandTooLong(command.description))
        }
        state = .awaitingReply
        return .sendCommand(bytes)
    }

    public mutating func handle(_ event: Event) -> Action {
        switch (state, event) {
        case (.awaitingReply, .reply(.info(let text))), (.awaitingReply, .reply(.text(let text))):
            messages.append(text)
            return .readReply
        case (.awaitingReply, .reply(.data(let size))):
            guard case .download(let asked) = command, !dataSent else {
                state = .done
                return .violation(.unexpected(.data(size), expecting: "waiting for the answer to \(command)"))
            }
            guard size == asked else {
                state = .done
                return .violation(.dataSizeMismatch(asked: asked, offered: size))
            }
            state = .sendingData
            return .sendData(size)
        case (.sendingData, .dataSent):
            dataSent = true
            state = .awaitingReply
            return .readReply
        case (.awaitingReply, .reply(.okay(let text))):
            state = .done
            if case .download = command, !dataSent {
                return .violation(.unexpected(.okay(text), expecting: "waiting for DATA"))
            }
            return .finished(text)
        case (.awaitingReply, .reply(.fail(let text))):
            state = .done
            return .failed(text)
        case (_, .reply(let reply)):
            state = .done
            return .violation(.unexpected(reply, expecting: "not reading"))
        case (_, .dataSent):
            preconditionFailure("dataSent reported without a sendData action")
        }
    }
}
