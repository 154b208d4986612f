import BoardTracking
import BootImages
import DFU
import USBModel

extension Flasher.Run {
    /// TF-A asked for phase `id`; its GetPhase address says how much of it TF-A already holds.
    ///
    /// A run interrupted in the middle of a TF-A phase (Ctrl-C, SIGTERM, a killed host) leaves TF-A
    /// idle with its write address past the bytes it received, and nothing but a board reset moves
    /// it back (see `TFADownloadBuffer`). Sending the phase again from its start would put a second
    /// copy after the first part, and BL2 would load a torn FIP (U-Boot never comes). So the run
    /// continues the phase from the byte TF-A is at: the buffer then holds the file whole, as long
    /// as the interrupted run sent this same file. More bytes than the file has cannot be ours: the
    /// run stops at once with `other-session`.
    mutating func continueTFAPhase(_ id: UInt8, reply: GetPhaseReply) throws {
        guard machine.stage == .tfa, reply.phase == id, reply.address != GetPhaseReply.undefinedAddress,
            let buffer = TFADownloadBuffer.standard(phase: id, family: ChipFamily.fromProduct(board?.product))
        else { return }
        guard case .received(let held) = buffer.progress(address: reply.address) else { return }
        let total = try contentSource(id).count
        let at =
            "GetPhase address 0x\(String(reply.address, radix: 16, uppercase: true)), buffer from "
            + "0x\(String(buffer.start, radix: 16, uppercase: true))"
        guard held <= total else {
            throw failure(
                .otherSession(
                    "TF-A already holds \(held) bytes of phase \(phaseHex(id)) (\(at)), more than this file's \(total): "
                        + "an earlier run sent another file, and TF-A's write address only moves forward"))
        }
        restartOffsets[id] = held
        recorder.add(
            .note(
                "TF-A already holds bytes 0..<\(held) of phase \(phaseHex(id)) from an earlier run (\(at)); its write "
                    + "address only moves forward, so this run continues from byte \(held)",
                stage: .tfa))
        let report = ResumeReport(skipped: [], skippedBytes: 0, restartPhase: id, restartOffset: held)
        resumeReport = report
        recorder.add(.resumed(report))
        flasher.emit(.resumed(report))
    }
}
