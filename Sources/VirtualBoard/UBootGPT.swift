import FlashLayout

/// The GPT U-Boot writes on a full-update MMC device (`gpt write mmc …`, §C.11).
enum UBootGPT {
    static func write(_ plan: DevicePlan, board: VirtualBoard) throws {
        throw UBootFailure(message: "GPT partitionning fail: GPT writer not available")
    }
}
