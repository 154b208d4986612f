import FoundationEssentials

/// `station report`: attempts as CSV (one row per attempt, partitions in one column) or as one
/// JSON document (docs/json.md, "station report"), for a manufacturing execution system.
package enum RecordExport {
    package enum Format: String, Sendable, CaseIterable { case csv, json }

    package static let csvColumns = [
        "id", "serial", "port", "soc", "layout", "layout_sha256", "started", "ended", "result", "diagnosis_code",
        "diagnosis_cause", "tool_version", "host", "partitions",
    ]

    /// RFC 4180 CSV with a header line; `partitions` holds `0xID:name:bytes:sha256:verified`
    /// entries separated by `;`.
    package static func csv(_ attempts: [AttemptRecord]) -> String {
        var lines = [csvColumns.joined(separator: ",")]
        for attempt in attempts {
            let partitions = attempt.partitions.map {
                "\(hexID($0.id)):\($0.name):\($0.bytes):\($0.sha256):\($0.verified ? "verified" : "not-verified")"
            }
            let fields: [String] = [
                String(attempt.id), attempt.start.serial ?? "", attempt.start.port, attempt.start.soc ?? "",
                attempt.start.layoutPath, attempt.start.layoutSHA256, Timestamp.format(attempt.start.started),
                attempt.ended.map(Timestamp.format) ?? "", attempt.result.rawValue, attempt.diagnosisCode ?? "",
                attempt.diagnosisCause ?? "", attempt.start.toolVersion, attempt.start.hostName,
                partitions.joined(separator: ";"),
            ]
            lines.append(fields.map(quote).joined(separator: ","))
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }

    /// `{"attempts": [...]}` with stable key order.
    package static func json(_ attempts: [AttemptRecord]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let document = Document(attempts: attempts.map(Exported.init))
        return String(decoding: try encoder.encode(document), as: UTF8.self) + "\n"
    }

    static func hexID(_ id: UInt8) -> String {
        let text = String(id, radix: 16)
        return "0x" + (text.count == 1 ? "0" : "") + text
    }

    private static func quote(_ field: String) -> String {
        guard field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return field }
        return "\"" + field.replacing("\"", with: "\"\"") + "\""
    }

    private struct Document: Encodable { var attempts: [Exported] }

    private struct Exported: Encodable {
        struct Partition: Encodable {
            var id: String
            var name: String
            var bytes: Int64
            var sha256: String
            var verified: Bool
        }
        var id: Int64
        var serial: String?
        var port: String
        var soc: String?
        var layout: String
        var layoutSHA256: String
        var started: String
        var ended: String?
        var result: String
        var diagnosisCode: String?
        var diagnosisCause: String?
        var toolVersion: String
        var host: String
        var partitions: [Partition]

        init(_ record: AttemptRecord) {
            id = record.id
            serial = record.start.serial
            port = record.start.port
            soc = record.start.soc
            layout = record.start.layoutPath
            layoutSHA256 = record.start.layoutSHA256
            started = Timestamp.format(record.start.started)
            ended = record.ended.map(Timestamp.format)
            result = record.result.rawValue
            diagnosisCode = record.diagnosisCode
            diagnosisCause = record.diagnosisCause
            toolVersion = record.start.toolVersion
            host = record.start.hostName
            partitions = record.partitions.map {
                Partition(id: hexID($0.id), name: $0.name, bytes: $0.bytes, sha256: $0.sha256, verified: $0.verified)
            }
        }

        /// Nulls are written, not left out: every key is always present for a parser.
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Key.self)
            try container.encode(id, forKey: .id)
            try container.encode(serial, forKey: .serial)
            try container.encode(port, forKey: .port)
            try container.encode(soc, forKey: .soc)
            try container.encode(layout, forKey: .layout)
            try container.encode(layoutSHA256, forKey: .layoutSHA256)
            try container.encode(started, forKey: .started)
            try container.encode(ended, forKey: .ended)
            try container.encode(result, forKey: .result)
            try container.encode(diagnosisCode, forKey: .diagnosisCode)
            try container.encode(diagnosisCause, forKey: .diagnosisCause)
            try container.encode(toolVersion, forKey: .toolVersion)
            try container.encode(host, forKey: .host)
            try container.encode(partitions, forKey: .partitions)
        }

        enum Key: String, CodingKey {
            case id, serial, port, soc, layout, layoutSHA256, started, ended, result, diagnosisCode, diagnosisCause,
                toolVersion, host, partitions
        }
    }
}
