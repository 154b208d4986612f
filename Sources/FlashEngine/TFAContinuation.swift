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
    ///
    /// The buffer is TF-A's default one unless `--tfa-buffer-base` names another FIP buffer. An
    /// address outside the buffer that is not on a MiB boundary cannot be a buffer's start: TF-A
    /// holds part of a phase at a place this run cannot tell, so nothing is sent and the run says
    /// which option continues it. One on a MiB boundary is taken as the start of a buffer this TF-A
    /// was built with (a fresh phase), and remembered for the command that continues.
    mutating func continueTFAPhase(_ id: UInt8, reply: GetPhaseReply) throws {
        let custom = flasher.request.tfaBufferBase
        guard machine.stage == .tfa, reply.phase == id, reply.address != GetPhaseReply.undefinedAddress,
            let buffer = TFADownloadBuffer.of(
                phase: id, family: ChipFamily.fromProduct(board?.product), customBase: custom)
        else { return }
        let progress = buffer.progress(address: reply.address)
        if progress == .unknown { try placeUnknownAddress(id, reply: reply, buffer: buffer) }
        guard case .received(let held) = progress else { return }
        let total = try contentSource(id).count
        let at =
            "GetPhase address \(addressText(reply.address)), buffer from \(addressText(buffer.start))"
            + (id == 0x03 && custom != nil ? " (--tfa-buffer-base)" : "")
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

    /// TF-A's write address is outside the buffer this run knows for phase `id`.
    private mutating func placeUnknownAddress(_ id: UInt8, reply: GetPhaseReply, buffer: TFADownloadBuffer) throws {
        let address = addressText(reply.address)
        let known =
            "\(addressText(buffer.start)), \(buffer.size / 0x10_0000 > 0 ? "\(buffer.size >> 20) MiB" : "\(buffer.size) bytes")"
        let given = id == 0x03 && flasher.request.tfaBufferBase != nil
        if TFADownloadBuffer.looksLikeStart(reply.address) {
            guard id == 0x03, !given else { return }
            tfaBufferBase = reply.address
            flasher.emit(.tfaBuffer(start: reply.address))
            recorder.add(
                .note(
                    "TF-A's FIP buffer starts at \(address), not at its default \(addressText(buffer.start)): a TF-A built with "
                        + "another DWL_BUFFER_BASE; a run interrupted in this phase continues with --tfa-buffer-base \(address)",
                    stage: .tfa))
            return
        }
        let remedy =
            id == 0x03
            ? "Run again with --tfa-buffer-base set to this TF-A build's DWL_BUFFER_BASE"
                + (given ? " (the one given does not contain it)" : "")
                + " to continue the FIP from where TF-A is (or to start it, if the buffer starts at \(address)), "
                + "or reset the board and start from the ROM"
            : "Reset the board and start from the ROM"
        throw failure(
            .otherSession(
                "TF-A asks for phase \(phaseHex(id)) with its write address at \(address), inside no download buffer this run "
                    + "knows (\(given ? "--tfa-buffer-base" : "TF-A's default") \(known)) and not on a MiB boundary, where "
                    + "TF-A's buffers start: an earlier run most likely left part of the phase in TF-A, whose write address "
                    + "only moves forward, so sending it from its start would tear it. Nothing was sent. \(remedy)."))
    }
}

/// `0xC7000000` style (TF-A prints its addresses in hex).
func addressText(_ value: UInt32) -> String { "0x" + hex32(value) }
