public import FlashEngine

/// Everything the diagnosis may look at: the engine's raw failure, the host's kernel USB lines,
/// the environment, and a console (UART) log when the user or the virtual board has one.
public struct Evidence: Sendable {
    public var failure: FlashFailure
    /// Kernel lines, already filtered to USB (`KernelLog.usbLines()`), oldest first.
    public var kernelLog: [String]
    public var environment: HostEnvironment
    /// The board's console, from the virtual board or a user-supplied UART log.
    public var consoleLog: [String]

    public init(
        failure: FlashFailure, kernelLog: [String] = [], environment: HostEnvironment = HostEnvironment(),
        consoleLog: [String] = []
    ) {
        self.failure = failure
        self.kernelLog = kernelLog
        self.environment = environment
        self.consoleLog = consoleLog
    }
}

/// A second explanation that fits the same evidence, and what would tell the two apart.
public struct AlternativeCause: Codable, Sendable, Hashable {
    public var code: DiagnosisCode
    public var cause: String
    /// The observation that separates this cause from the main one.
    public var howToTell: String

    public init(code: DiagnosisCode, cause: String, howToTell: String) {
        self.code = code
        self.cause = cause
        self.howToTell = howToTell
    }
}

/// The answer to "why did it fail and what do I do now".
public struct Diagnosis: Codable, Sendable, Hashable {
    public var code: DiagnosisCode
    /// One line.
    public var cause: String
    /// What was actually observed (timeline, USB errors, board message, kernel and console lines,
    /// environment), one fact per line.
    public var evidence: [String]
    /// Concrete actions, most likely to help first.
    public var nextSteps: [String]
    /// Other causes that fit, each with what tells it apart.
    public var alternatives: [AlternativeCause]

    public init(
        code: DiagnosisCode, cause: String, evidence: [String], nextSteps: [String],
        alternatives: [AlternativeCause] = []
    ) {
        self.code = code
        self.cause = cause
        self.evidence = evidence
        self.nextSteps = nextSteps
        self.alternatives = alternatives
    }

    /// Plain text for a terminal.
    public var text: String {
        var lines = ["\(code.rawValue): \(cause)"]
        if !evidence.isEmpty {
            lines.append("Seen:")
            lines += evidence.map { "  - " + $0 }
        }
        if !nextSteps.isEmpty {
            lines.append("Next steps:")
            lines += nextSteps.enumerated().map { "  \($0.offset + 1). " + $0.element }
        }
        for alternative in alternatives {
            lines.append("Could also be \(alternative.code.rawValue): \(alternative.cause)")
            lines.append("  To tell them apart: \(alternative.howToTell)")
        }
        lines.append("More: \(code.documentationAnchor)")
        return lines.joined(separator: "\n")
    }
}
