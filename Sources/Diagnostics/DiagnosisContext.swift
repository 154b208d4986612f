import BoardTracking
import FlashEngine

extension Diagnoser {
    /// The evidence plus what every rule derives from it.
    struct Context {
        let failure: FlashFailure
        let facts: TimelineFacts
        let kernelLog: [String]
        let consoleLog: [String]
        let environment: HostEnvironment

        init(_ evidence: Evidence) {
            failure = evidence.failure
            facts = TimelineFacts(evidence.failure)
            kernelLog = evidence.kernelLog
            consoleLog = evidence.consoleLog
            environment = evidence.environment
        }

        /// "this VirtualBox VM", "WSL 2", "this Docker container"…
        var placeName: String {
            if let container = environment.container { return "this \(container.rawValue) container" }
            if environment.wsl == .wsl2 { return "WSL 2" }
            if let hypervisor = environment.hypervisor { return "this \(hypervisor.displayName) VM" }
            return "this system"
        }

        /// The full-speed link as a second explanation, when the timeline shows one.
        var fullSpeedAlternative: AlternativeCause? {
            guard let entry = facts.fullSpeedEntry else { return nil }
            return AlternativeCause(
                code: .fullSpeedLink,
                cause:
                    "The board was on a full-speed (12 Mbit/s) link (\(entry.description)); TF-A declares high speed only.",
                howToTell:
                    "move it to a port where `speed` in sysfs reads 480; if it then works, the link was the cause.")
        }

        /// A bad link as a second explanation: full speed if seen, else kernel enumeration errors.
        var linkAlternative: AlternativeCause? {
            if let fullSpeed = fullSpeedAlternative { return fullSpeed }
            let errors = KernelLog.enumerationErrors(in: kernelLog)
            guard let last = errors.last else { return nil }
            return AlternativeCause(
                code: .enumerationErrors, cause: "The kernel reported USB link errors (\(last)).",
                howToTell: "if the errors stop on a USB 2 port without hubs and the run passes, the link was the cause."
            )
        }

        /// Facts shown for every diagnosis: the failure, the last timeline entries, the layers USB
        /// goes through, over-current reports.
        func commonEvidence(for code: DiagnosisCode) -> [String] {
            var lines = ["failure: \(failure)"]
            lines += facts.recent(6).map { "timeline: " + $0 }
            if environment.isPassthrough {
                lines.append("running in \(placeName) (" + environment.detectionEvidence.joined(separator: "; ") + ")")
            }
            lines += KernelLog.overCurrent(in: kernelLog).suffix(2).map { "kernel: " + $0 }
            return lines
        }
    }
}
