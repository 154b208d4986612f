/// DFU 1.1 class request codes (bRequest) as used by every STM32MP firmware (reference §1.1).
public enum DFURequest {
    public static let detach: UInt8 = 0
    public static let download: UInt8 = 1
    public static let upload: UInt8 = 2
    public static let getStatus: UInt8 = 3
    public static let clearStatus: UInt8 = 4
    public static let getState: UInt8 = 5
    public static let abort: UInt8 = 6

    /// A human name for traces and errors (`DFU_DNLOAD`, …).
    public static func name(_ request: UInt8) -> String {
        switch request {
        case detach: "DFU_DETACH"
        case download: "DFU_DNLOAD"
        case upload: "DFU_UPLOAD"
        case getStatus: "DFU_GETSTATUS"
        case clearStatus: "DFU_CLRSTATUS"
        case getState: "DFU_GETSTATE"
        case abort: "DFU_ABORT"
        default: "DFU request \(request)"
        }
    }
}

/// DFU status codes (bStatus) that the STM32MP firmwares report.
public enum DFUStatusCode {
    public static let ok: UInt8 = 0x00
    public static let errTarget: UInt8 = 0x01
    public static let errFile: UInt8 = 0x02
    public static let errWrite: UInt8 = 0x03
    /// "Programmed memory failed verification": the STM32MP ROM's answer to an FSBL it refuses.
    public static let errVerify: UInt8 = 0x07
    public static let errAddress: UInt8 = 0x08
    public static let errNotDone: UInt8 = 0x09
    public static let errVendor: UInt8 = 0x0B
    public static let errUnknown: UInt8 = 0x0E
    public static let errStalledPacket: UInt8 = 0x0F

    /// The DFU 1.1 name of a bStatus (`errVERIFY`), for messages.
    public static func name(_ status: UInt8) -> String {
        let names = [
            "OK", "errTARGET", "errFILE", "errWRITE", "errERASE", "errCHECK_ERASED", "errPROG", "errVERIFY",
            "errADDRESS", "errNOTDONE", "errFIRMWARE", "errVENDOR", "errUSBR", "errPOR", "errUNKNOWN", "errSTALLEDPKT",
        ]
        return Int(status) < names.count ? names[Int(status)] : "status 0x" + String(status, radix: 16)
    }
}

/// The device states of DFU 1.1 (bState).
public enum DFUState: UInt8, Sendable, Hashable, CaseIterable, Codable {
    case appIdle = 0, appDetach, dfuIdle, dnloadSync, dnBusy, dnloadIdle, manifestSync, manifest,
        manifestWaitReset, uploadIdle, error
}

/// The 6-byte answer to DFU_GETSTATUS.
public struct DFUStatusReply: Sendable, Hashable {
    public var status: UInt8
    /// How long the host must wait before the next GETSTATUS (3 bytes of milliseconds on the wire).
    public var pollTimeout: Duration
    public var state: DFUState
    public var stringIndex: UInt8

    public init(
        status: UInt8 = DFUStatusCode.ok, pollTimeout: Duration = .zero, state: DFUState, stringIndex: UInt8 = 0
    ) {
        self.status = status
        self.pollTimeout = pollTimeout
        self.state = state
        self.stringIndex = stringIndex
    }

    /// Decodes the wire form; nil when shorter than 6 bytes or the state is not a DFU state.
    public init?(bytes: [UInt8]) {
        guard bytes.count >= 6, let state = DFUState(rawValue: bytes[4]) else { return nil }
        status = bytes[0]
        let milliseconds = Int(bytes[1]) | Int(bytes[2]) << 8 | Int(bytes[3]) << 16
        pollTimeout = .milliseconds(milliseconds)
        self.state = state
        stringIndex = bytes[5]
    }

    /// The wire form; the poll timeout is rounded down to whole milliseconds and capped at 24 bits.
    public var bytes: [UInt8] {
        let milliseconds = min(Int(pollTimeout.inMilliseconds), 0xFF_FFFF)
        return [
            status, UInt8(milliseconds & 0xFF), UInt8((milliseconds >> 8) & 0xFF), UInt8(milliseconds >> 16),
            state.rawValue, stringIndex,
        ]
    }
}

extension Duration {
    /// Whole milliseconds, truncated (negative durations give 0).
    var inMilliseconds: Int64 {
        let parts = components
        return max(0, parts.seconds * 1000 + parts.attoseconds / 1_000_000_000_000_000)
    }
}

/// The DFU functional descriptor (type 0x21), which follows the last alternate setting.
public struct DFUFunctionalDescriptor: Sendable, Hashable {
    /// bmAttributes: bit 0 CanDnload, 1 CanUpload, 2 ManifestationTolerant, 3 WillDetach.
    public var attributes: UInt8
    public var detachTimeoutMS: UInt16
    /// The largest DNLOAD/UPLOAD data stage the device accepts.
    public var transferSize: UInt16
    /// bcdDFUVersion: 0x0110 for DFU 1.1, 0x011A for ST's DfuSe extension.
    public var dfuVersion: UInt16

    public init(attributes: UInt8, detachTimeoutMS: UInt16, transferSize: UInt16, dfuVersion: UInt16) {
        self.attributes = attributes
        self.detachTimeoutMS = detachTimeoutMS
        self.transferSize = transferSize
        self.dfuVersion = dfuVersion
    }

    /// Decodes the wire form. DFU 1.0 devices send 7 bytes without bcdDFUVersion (taken as 0x0100).
    public init?(bytes: [UInt8]) {
        guard bytes.count >= 7, bytes[0] >= 7, bytes[1] == 0x21 else { return nil }
        attributes = bytes[2]
        detachTimeoutMS = UInt16(bytes[3]) | UInt16(bytes[4]) << 8
        transferSize = UInt16(bytes[5]) | UInt16(bytes[6]) << 8
        dfuVersion = bytes.count >= 9 && bytes[0] >= 9 ? UInt16(bytes[7]) | UInt16(bytes[8]) << 8 : 0x0100
    }

    public var bytes: [UInt8] {
        [
            9, 0x21, attributes, UInt8(detachTimeoutMS & 0xFF), UInt8(detachTimeoutMS >> 8),
            UInt8(transferSize & 0xFF), UInt8(transferSize >> 8), UInt8(dfuVersion & 0xFF), UInt8(dfuVersion >> 8),
        ]
    }

    /// True when the device announces ST's DfuSe numbering (data blocks start at 2).
    public var isDfuSe: Bool { dfuVersion == 0x011A }
}
