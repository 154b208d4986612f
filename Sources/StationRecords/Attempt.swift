package import FoundationEssentials

/// How an attempt ended. `unfinished` is what the row says from the moment a board is taken
/// until the attempt completes, so a host that dies mid-flash leaves exactly that behind.
package enum AttemptResult: String, Sendable, Hashable, Codable, CaseIterable {
    case unfinished, done, failed, cancelled
}

/// What is known when a board is taken: written at once, before the first byte goes out.
package struct AttemptStart: Sendable, Hashable {
    package var serial: String?
    package var port: String
    package var soc: String?
    package var layoutPath: String
    package var layoutSHA256: String
    package var started: Date
    package var toolVersion: String
    package var hostName: String

    package init(
        serial: String?, port: String, soc: String?, layoutPath: String, layoutSHA256: String, started: Date,
        toolVersion: String, hostName: String
    ) {
        self.serial = serial
        self.port = port
        self.soc = soc
        self.layoutPath = layoutPath
        self.layoutSHA256 = layoutSHA256
        self.started = started
        self.toolVersion = toolVersion
        self.hostName = hostName
    }
}

/// One partition sent during an attempt.
package struct PartitionRecord: Sendable, Hashable, Codable {
    /// The layout Id, `0x00`–`0xFF`.
    package var id: UInt8
    package var name: String
    package var bytes: Int64
    /// SHA-256 of the bytes sent (the partition's file), lowercase hex.
    package var sha256: String
    /// Whether the partition was read back and compared.
    package var verified: Bool

    package init(id: UInt8, name: String, bytes: Int64, sha256: String, verified: Bool) {
        self.id = id
        self.name = name
        self.bytes = bytes
        self.sha256 = sha256
        self.verified = verified
    }
}

/// What is known when the attempt ends; written in one transaction with its partitions.
package struct AttemptEnd: Sendable, Hashable {
    package var result: AttemptResult
    package var ended: Date
    /// The serial as last seen (U-Boot may report the UID where the ROM did not).
    package var serial: String?
    package var soc: String?
    /// The port, when the attempt started before the board was found (`flash` without `--port`).
    package var port: String?
    package var diagnosisCode: String?
    package var diagnosisCause: String?
    package var partitions: [PartitionRecord]

    package init(
        result: AttemptResult, ended: Date, serial: String? = nil, soc: String? = nil, port: String? = nil,
        diagnosisCode: String? = nil, diagnosisCause: String? = nil, partitions: [PartitionRecord] = []
    ) {
        self.result = result
        self.ended = ended
        self.serial = serial
        self.soc = soc
        self.port = port
        self.diagnosisCode = diagnosisCode
        self.diagnosisCause = diagnosisCause
        self.partitions = partitions
    }
}

/// One stored attempt, as `station report` exports it.
package struct AttemptRecord: Sendable, Hashable {
    package var id: Int64
    package var start: AttemptStart
    package var result: AttemptResult
    package var ended: Date?
    package var diagnosisCode: String?
    package var diagnosisCause: String?
    package var partitions: [PartitionRecord]
}
