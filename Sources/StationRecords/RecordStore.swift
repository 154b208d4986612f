package import FoundationEssentials
import GRDB

/// The attempt records in one SQLite file (GRDB). Safe to share between the station's tasks and
/// with another process reading it (`station report`): SQLite locks the file, writers wait up to
/// ten seconds for each other.
///
/// Durability is SQLite's: a row is inserted as `unfinished` when a board is taken, and its end
/// (result, diagnosis, every partition) is one transaction, so a power loss or SIGKILL leaves
/// either the unfinished row or the complete one, never a half-written attempt.
/// All database work runs on GRDB's own serial queue, never on the cooperative pool.
package final class RecordStore: Sendable {
    package let path: String
    private let database: DatabaseQueue

    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// - Throws: `RecordStoreError` naming the file and SQLite's reason.
    package init(path: String) throws(RecordStoreError) {
        self.path = path
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.label = "stm32mp-flash.records"
        do {
            database = try DatabaseQueue(path: path, configuration: configuration)
            try Self.migrator.migrate(database)
        } catch {
            throw RecordStoreError(path: path, reason: "\(error)")
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("attempts-v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE attempt (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        serial TEXT,
                        port TEXT NOT NULL,
                        soc TEXT,
                        layout_path TEXT NOT NULL,
                        layout_sha256 TEXT NOT NULL,
                        started_at TEXT NOT NULL,
                        ended_at TEXT,
                        result TEXT NOT NULL DEFAULT 'unfinished'
                            CHECK (result IN ('unfinished', 'done', 'failed', 'cancelled')),
                        diagnosis_code TEXT,
                        diagnosis_cause TEXT,
                        tool_version TEXT NOT NULL,
                        host_name TEXT NOT NULL
                    );
                    CREATE INDEX attempt_started ON attempt(started_at);
                    CREATE TABLE partition (
                        attempt_id INTEGER NOT NULL REFERENCES attempt(id) ON DELETE CASCADE,
                        partition_id INTEGER NOT NULL CHECK (partition_id BETWEEN 0 AND 255),
                        name TEXT NOT NULL,
                        bytes INTEGER NOT NULL,
                        sha256 TEXT NOT NULL,
                        verified INTEGER NOT NULL,
                        PRIMARY KEY (attempt_id, partition_id)
                    );
                    """)
        }
        return migrator
    }

    /// Stores the start of an attempt, marked unfinished, and returns its id.
    package func begin(_ start: AttemptStart) async throws(RecordStoreError) -> Int64 {
        try await writing { db in
            try db.execute(
                sql: """
                    INSERT INTO attempt (serial, port, soc, layout_path, layout_sha256, started_at, tool_version, host_name)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    start.serial, start.port, start.soc, start.layoutPath, start.layoutSHA256,
                    Timestamp.format(start.started), start.toolVersion, start.hostName,
                ])
            return db.lastInsertedRowID
        }
    }

    /// Completes attempt `id`: its result, diagnosis and partitions, in one transaction.
    package func finish(_ id: Int64, _ end: AttemptEnd) async throws(RecordStoreError) {
        precondition(end.result != .unfinished, "an attempt is finished with a final result")
        try await writing { db in
            try db.execute(
                sql: """
                    UPDATE attempt SET result = ?, ended_at = ?, serial = coalesce(?, serial), soc = coalesce(?, soc),
                        port = coalesce(?, port), diagnosis_code = ?, diagnosis_cause = ?
                    WHERE id = ? AND result = 'unfinished'
                    """,
                arguments: [
                    end.result.rawValue, Timestamp.format(end.ended), end.serial, end.soc, end.port, end.diagnosisCode,
                    end.diagnosisCause, id,
                ])
            guard db.changesCount == 1 else {
                throw RecordStoreError(path: self.path, reason: "attempt \(id) is not an unfinished attempt")
            }
            for partition in end.partitions {
                try db.execute(
                    sql:
                        "INSERT INTO partition (attempt_id, partition_id, name, bytes, sha256, verified) VALUES (?, ?, ?, ?, ?, ?)",
                    arguments: [
                        id, Int(partition.id), partition.name, partition.bytes, partition.sha256, partition.verified,
                    ])
            }
        }
    }

    /// Attempts started at or after `since` (all when nil), oldest first, with their partitions.
    package func attempts(since: Date? = nil) async throws(RecordStoreError) -> [AttemptRecord] {
        do {
            return try await database.read { db in
                let rows = try Row.fetchAll(
                    db, sql: "SELECT * FROM attempt WHERE started_at >= ? ORDER BY started_at, id",
                    arguments: [since.map(Timestamp.format) ?? ""])
                let partitionRows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT p.* FROM partition p JOIN attempt a ON a.id = p.attempt_id
                        WHERE a.started_at >= ? ORDER BY p.attempt_id, p.partition_id
                        """,
                    arguments: [since.map(Timestamp.format) ?? ""])
                var partitions: [Int64: [PartitionRecord]] = [:]
                for row in partitionRows {
                    let id: Int64 = row["attempt_id"]
                    let partitionID: Int = row["partition_id"]
                    partitions[id, default: []].append(
                        PartitionRecord(
                            id: UInt8(partitionID), name: row["name"], bytes: row["bytes"], sha256: row["sha256"],
                            verified: row["verified"]))
                }
                return rows.map { row in
                    let id: Int64 = row["id"]
                    let started: String = row["started_at"]
                    let ended: String? = row["ended_at"]
                    let result: String = row["result"]
                    return AttemptRecord(
                        id: id,
                        start: AttemptStart(
                            serial: row["serial"], port: row["port"], soc: row["soc"], layoutPath: row["layout_path"],
                            layoutSHA256: row["layout_sha256"], started: Timestamp.parse(started) ?? .distantPast,
                            toolVersion: row["tool_version"], hostName: row["host_name"]),
                        result: AttemptResult(rawValue: result) ?? .unfinished, ended: ended.flatMap(Timestamp.parse),
                        diagnosisCode: row["diagnosis_code"], diagnosisCause: row["diagnosis_cause"],
                        partitions: partitions[id] ?? [])
                }
            }
        } catch {
            throw RecordStoreError(path: path, reason: "\(error)")
        }
    }

    private func writing<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws(RecordStoreError)
        -> T
    {
        do {
            return try await database.write(body)
        } catch let error as RecordStoreError {
            throw error
        } catch {
            throw RecordStoreError(path: path, reason: "\(error)")
        }
    }
}

/// The database could not be opened, read or written.
package struct RecordStoreError: Error, Sendable, Hashable, CustomStringConvertible {
    package var path: String
    package var reason: String

    package init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    package var description: String { "\(path): attempt records: \(reason)" }
}

/// Times as ISO 8601 UTC text with milliseconds (`2026-12-04T15:30:00.123Z`): readable in the
/// database and in exports, and ordered as text, so `--since` is a plain comparison.
package enum Timestamp {
    private static let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    package static func format(_ date: Date) -> String { style.format(date) }

    /// Accepts the stored form, whole seconds, and a bare date (midnight UTC).
    package static func parse(_ text: String) -> Date? {
        if let date = try? style.parse(text) { return date }
        if let date = try? Date.ISO8601FormatStyle().parse(text) { return date }
        if let date = try? Date.ISO8601FormatStyle().year().month().day().parse(text) { return date }
        return nil
    }
}
