import FlashEngine

/// Diagnoses of what the board stored and of the host's own files: readback, input integrity,
/// host paths, a session left by another layout.
enum IntegrityRules {
    static func verifyMismatch(_ mismatch: VerifyMismatch, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .verifyMismatch,
            cause:
                "Partition \(phaseHex(mismatch.phase)) \(mismatch.name) reads back different from its Binary, first \(mismatch.place): the storage did not keep what U-Boot accepted.",
            evidence: [
                "\(mismatch.method.rawValue) readback of \(phaseHex(mismatch.phase)) \(mismatch.name): first difference \(mismatch.place)",
                "\(mismatch.digest) of the compared bytes as sent: \(mismatch.expectedSHA256)",
                "\(mismatch.digest) of the same bytes read back: \(mismatch.actualSHA256)",
            ],
            nextSteps: [
                mismatch.length == nil
                    ? "Run the same command again: the board is still in U-Boot and the run continues with this partition."
                    : "The board waits in U-Boot's fastboot: reset it (boot pins still on USB) and run the same command again.",
                "If it differs again at the same place, the medium is failing or write-protected in part (worn SD card, eMMC in read-only mode): replace the card or check the eMMC.",
                "If the offset changes between runs, suspect power (a 5 V/3 A supply) or the board's storage interface.",
            ])
    }

    static func fileChanged(path: String, detail: String, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .fileChanged, cause: DiagnosisCode.fileChanged.summary,
            evidence: ["\(path): \(detail) between the start and the end of its transfer"],
            nextSteps: [
                "Let whatever writes \(path) (a build, a copy, a sync) finish, then run the same command again; the board is still in U-Boot and the run continues.",
                "Flash from a copy that nothing else writes to.",
            ])
    }

    static func hostFile(path: String, reason: String, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .hostFile, cause: "\(path) could not be used on this computer: \(reason). The board is not at fault.",
            evidence: ["\(path): \(reason)"],
            nextSteps: [
                "Fix the path or its permissions (`ls -l \(path)`), or free space on its file system (`df -h`), then run again."
            ])
    }

    static func otherSession(_ detail: String, _ context: Diagnoser.Context) -> Diagnosis {
        Diagnosis(
            code: .otherSession, cause: DiagnosisCode.otherSession.summary, evidence: [detail],
            nextSteps: [
                "Run the command that started that session (its FlashLayout and files) to finish it, or",
                "reset the board (power cycle or reset button, boot pins still on USB) and run this layout again from the ROM.",
            ])
    }
}
