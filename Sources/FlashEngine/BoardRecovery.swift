public import DFU

/// The cleanup and recovery that U-Boot's DFU and `stm32prog` code allow for a board in
/// enumeration 2 (reference §4.4; checked against U-Boot 6073c36b2c8d `drivers/dfu/dfu.c`
/// `dfu_write()`/`dfu_read()`/`dfu_transaction_initiate()`, `drivers/usb/gadget/f_dfu.c`
/// `dfu_set_alt()` and the ABORT/CLRSTATUS handlers, `cmd_stm32prog/stm32prog.c`
/// `dfu_initiated_callback()`/`dfu_error_callback()`/`stm32prog_next_phase()`,
/// `stm32prog_usb.c` `stm32prog_set_phase()`/`stm32prog_cmd_read()`).
///
/// U-Boot keeps one DFU transaction per alternate. SET_INTERFACE, ABORT, CLRSTATUS and a USB reset
/// leave it open; only a flush, a short read or a failing DNLOAD closes it. A host that died in the
/// middle of a partition therefore leaves a transaction that makes the next run's block 0 fail
/// ("Wrong sequence number", GetPhase `FF`). What closes it without writing anything is a DNLOAD
/// block 0 of one byte (refused, or buffered and refused on the second one) and CLRSTATUS; the
/// command alternate then sets the phase (which also replaces an error and disarms the reset that
/// reading it armed).
public enum BoardRecovery {
    /// The partition IDs (0x01–0xF0) a U-Boot enumeration-2 device offers alternates for.
    public static func partitionIDs(_ device: DFUDevice) -> [UInt8] {
        device.alternates.compactMap { $0.name?.phaseID }.filter { (0x01...0xF0).contains($0) }
    }

    /// Closes every partition alternate's transaction (stale or not); returns the IDs that had one
    /// open. Each is closed while another partition is current, so `stm32prog` records no error;
    /// the caller sets the phase afterwards.
    public static func closeStaleTransactions(_ device: DFUDevice) async throws -> [UInt8] {
        let ids = partitionIDs(device)
        guard let park = ids.last, let other = ids.first else { return [] }
        var stale: [UInt8] = []
        try await device.setPhase(park, offset: 0)
        for id in ids where id != park {
            if try await device.closeTransaction(phase: id) { stale.append(id) }
        }
        if other != park { try await device.setPhase(other, offset: 0) }
        if try await device.closeTransaction(phase: park) { stale.append(park) }
        return stale.sorted()
    }

    /// After a download of partition `id` stopped in the middle: closes its transaction (with
    /// another partition current, so `stm32prog` records no error) and sets `id` back as the
    /// current phase at offset 0. The board then takes the partition again from block 0.
    public static func abandonPartition(_ device: DFUDevice, id: UInt8) async throws {
        if let park = partitionIDs(device).first(where: { $0 != id }) { try await device.setPhase(park, offset: 0) }
        try await device.closeTransaction(phase: id)
        try await device.setPhase(id, offset: 0)
    }
}
