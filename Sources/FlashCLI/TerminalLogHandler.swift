import Logging

/// swift-log handler for `--verbose`: one line per message on stderr, written through the flash
/// output so that it never lands in the middle of the progress bar.
struct TerminalLogHandler: LogHandler {
    let output: FlashOutput
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        let time = merged["t"].map { "t=\($0)s " } ?? ""
        output.logLine("\(event.level): \(time)\(event.message)")
    }
}
