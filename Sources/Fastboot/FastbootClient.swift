public import DFU
public import USBModel

/// Runs fastboot exchanges over bulk endpoints. The protocol logic is `FastbootExchange`; this
/// type only moves bytes and checks cancellation between transfers.
public struct FastbootClient: Sendable {
    public let transport: any USBBulkTransport
    /// How long a short command may take to answer.
    public var commandTimeout: Duration
    /// Bytes per bulk OUT transfer while downloading: 256 KiB is one URB where the kernel
    /// scatter-gathers (libusb splits any size into 16 KiB URBs where it does not), about 10 ms
    /// at 25 MB/s, so the gap between synchronous transfers costs well under 1 %; each MiB more
    /// costs about 4 MiB of peak memory (the buffer, plus libusb's and umockdev's copies under
    /// the emulator), measured with VmHWM.
    public var transferSize: Int

    public init(transport: any USBBulkTransport, commandTimeout: Duration = .seconds(5), transferSize: Int = 256 << 10)
    {
        self.transport = transport
        self.commandTimeout = commandTimeout
        self.transferSize = transferSize
    }

    /// What a command ended with.
    public struct Outcome: Sendable, Hashable {
        /// OKAY's text.
        public var text: String
        /// INFO/TEXT lines the device sent before it.
        public var messages: [String]
    }

    /// Runs `command`; `data` is the download payload (required for `download`). `replyTimeout`
    /// bounds the wait for the final answer (a `flash` answers only after the storage write).
    /// Throws `FastbootFailure` for FAIL, `FastbootProtocolError` for a broken protocol.
    public func run(
        _ command: FastbootCommand, data: (any ByteSource)? = nil, replyTimeout: Duration? = nil,
        onMessage: @Sendable (String) -> Void = { _ in }, onProgress: @Sendable (Int64) -> Void = { _ in }
    ) async throws -> Outcome {
        var exchange = FastbootExchange(command)
        var action = exchange.start()
        var reported = 0
        while true {
            try Task.checkCancellation()
            switch action {
            case .sendCommand(let bytes):
                try await transport.bulkOut(bytes, timeout: commandTimeout)
                action = .readReply
                continue
            case .readReply:
                let bytes = try await transport.bulkIn(maxLength: 64, timeout: replyTimeout ?? commandTimeout)
                action = exchange.handle(.reply(try FastbootReply(bytes)))
                while reported < exchange.messages.count {
                    onMessage(exchange.messages[reported])
                    reported += 1
                }
            case .sendData(let size):
                guard let data, data.count == Int64(size) else {
                    preconditionFailure("download needs exactly \(size) bytes of data")
                }
                var offset: Int64 = 0
                while offset < data.count {
                    try Task.checkCancellation()
                    let piece = try data.read(offset: offset, length: transferSize)
                    try await transport.bulkOut(piece, timeout: max(commandTimeout, .seconds(10)))
                    offset += Int64(piece.count)
                    onProgress(offset)
                }
                action = exchange.handle(.dataSent)
            case .finished(let text):
                return Outcome(text: text, messages: exchange.messages)
            case .failed(let reason):
                throw FastbootFailure(command: command, reason: reason, messages: exchange.messages)
            case .violation(let error):
                throw error
            }
        }
    }

    /// `getvar:NAME`'s value.
    public func getvar(_ name: String) async throws -> String {
        try await run(.getvar(name)).text
    }
}

/// The device answered FAIL.
public struct FastbootFailure: Error, Sendable, Hashable, CustomStringConvertible {
    public var command: FastbootCommand
    /// The text after FAIL, verbatim.
    public var reason: String
    public var messages: [String]

    public init(command: FastbootCommand, reason: String, messages: [String] = []) {
        self.command = command
        self.reason = reason
        self.messages = messages
    }

    public var description: String { "\(command) failed: FAIL\(reason)" }
}
