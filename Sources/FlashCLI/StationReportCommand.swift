import ArgumentParser
import FoundationEssentials
import Glibc
import StationRecords

/// `stm32mp-flash station report`: the attempt records, for a manufacturing execution system.
struct StationReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Export the attempt records as CSV or JSON (docs/json.md).",
        discussion: """
            One entry per attempt: chip serial, port, SoC, layout and its SHA-256, start and end, \
            result (done, failed, cancelled, or unfinished when the host died mid-flash), diagnosis \
            code and cause, tool version, host, and each partition sent with its SHA-256.
            """)

    @Option(
        help: ArgumentHelp(
            "The records database (default: the station's, under the XDG state folder).", valueName: "file"),
        completion: .file(extensions: ["sqlite", "db"]))
    var db: String?

    @Option(
        help: ArgumentHelp(
            "Only attempts started at or after this time: 2026-12-04, 2026-12-04T08:00:00Z.", valueName: "time"))
    var since: String?

    @Option(help: ArgumentHelp("csv or json.", valueName: "format"), completion: .list(["csv", "json"]))
    var format = "csv"

    func validate() throws {
        if let since, Timestamp.parse(since) == nil {
            throw ValidationError("--since takes an ISO 8601 date or time like 2026-12-04T08:00:00Z, got '\(since)'")
        }
        if RecordExport.Format(rawValue: format) == nil {
            throw ValidationError("--format takes csv or json, got '\(format)'")
        }
    }

    func run() async throws {
        let path = db ?? RecordLocation.defaultPath()
        guard access(path, R_OK) == 0 else {
            Terminal.error("error: \(path): no attempt records there: \(String(cString: strerror(errno)))")
            throw ExitCode.failure
        }
        do {
            let attempts = try await RecordStore(path: path).attempts(since: since.flatMap(Timestamp.parse))
            switch RecordExport.Format(rawValue: format) ?? .csv {
            case .csv: print(RecordExport.csv(attempts), terminator: "")
            case .json: print(try RecordExport.json(attempts), terminator: "")
            }
        } catch {
            Terminal.error("error: \(error)")
            throw ExitCode.failure
        }
    }
}
