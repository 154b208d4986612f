public import USBModel

/// Control-transfer timeouts of the DFU client.
public struct DFUTimeouts: Sendable, Hashable {
    /// Ordinary requests (descriptors, SET_INTERFACE, GetPhase, DETACH).
    public var control: Duration
    /// DNLOAD and GETSTATUS during a download: U-Boot may hold EP0 while it drains its 8 MiB
    /// buffer to storage or runs the final flush (reference §C.9).
    public var busyWrite: Duration

    public init(control: Duration = .seconds(5), busyWrite: Duration = .seconds(60)) {
        self.control = control
        self.busyWrite = busyWrite
    }
}

/// What one download cost.
public struct DownloadReport: Sendable, Hashable {
    public var bytes: Int64
    /// Data DNLOADs (the zero-length one not counted).
    public var blocks: Int
    public var controlTransfers: Int
    public var duration: Duration

    public init(bytes: Int64, blocks: Int, controlTransfers: Int, duration: Duration) {
        self.bytes = bytes
        self.blocks = blocks
        self.controlTransfers = controlTransfers
        self.duration = duration
    }
}

/// What one upload read.
public struct UploadReport: Sendable, Hashable {
    /// Bytes passed on (the skipped ones not counted).
    public var bytes: Int64
    public var blocks: Int
    /// The device ended the read with a short block (U-Boot closed the alternate's transaction).
    public var closed: Bool
    public var duration: Duration

    public init(bytes: Int64, blocks: Int, closed: Bool, duration: Duration) {
        self.bytes = bytes
        self.blocks = blocks
        self.closed = closed
        self.duration = duration
    }
}

/// A DFU operation failed.
public struct DFUError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// GETSTATUS reported dfuERROR (or another error state) with this bStatus.
        case deviceError(state: DFUState, status: UInt8)
        /// The USB transfer itself failed.
        case transport(USBTransferError)
        /// The device answered something that does not parse.
        case malformed(String)
        /// No alternate setting carries this phase ID.
        case noAlternate(phase: UInt8)
        /// GETSTATUS reported a state the host rules of §1.2 do not allow here.
        case unexpectedState(DFUState)
    }

    public var kind: Kind
    /// What the client was doing (`DFU_DNLOAD block 12 to phase 0x03`, …).
    public var operation: String

    public init(_ kind: Kind, operation: String) {
        self.kind = kind
        self.operation = operation
    }

    /// The transfer error, when the failure is one.
    public var transferError: USBTransferError? {
        if case .transport(let error) = kind { return error }
        return nil
    }

    public var description: String {
        switch kind {
        case .deviceError(let state, let status):
            return
                "\(operation): the device reports an error (state \(state), status 0x\(hex2(status, uppercase: true)))"
        case .transport(let error): return "\(operation): \(error)"
        case .malformed(let text): return "\(operation): malformed answer: \(text)"
        case .noAlternate(let phase):
            return "\(operation): the device offers no alternate setting for phase 0x\(hex2(phase, uppercase: true))"
        case .unexpectedState(let state): return "\(operation): unexpected DFU state \(state)"
        }
    }
}
