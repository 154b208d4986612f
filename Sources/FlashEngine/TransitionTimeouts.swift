public import BoardTracking

/// How long the engine waits for the board to come back after each kind of DFU_DETACH. All
/// configurable (`flash --timeout-…`); the defaults follow ST's tools and the protocol reference
/// §C.9, with room for erases between U-Boot's two enumerations.
public struct TransitionTimeouts: Sendable, Hashable, Codable {
    /// ROM → TF-A (MP13/MP2 re-enumerate after the FSBL starts; ST's toolbox waits 3 s).
    public var romToTFA: Duration
    /// TF-A → TF-A after the DDR firmware (MP2).
    public var tfaReconnect: Duration
    /// TF-A → U-Boot: TF-A loads the FIP, U-Boot boots (CubeProgrammer gives up after ~30 s).
    public var tfaToUBoot: Duration
    /// U-Boot enumeration 1 → 2: device init, erases and GPT writing happen in between.
    public var ubootReenumeration: Duration
    /// Waiting for a board to appear at all before the first phase (`--wait-timeout`).
    public var boardArrival: Duration
    /// After a reconnect wait ran out, how long to keep listening, only to tell whether the board
    /// would have come with a longer wait (`--late-grace`); the run fails either way.
    public var lateArrivalGrace: Duration

    public init(
        romToTFA: Duration = .seconds(5), tfaReconnect: Duration = .seconds(5), tfaToUBoot: Duration = .seconds(30),
        ubootReenumeration: Duration = .seconds(120), boardArrival: Duration = .seconds(30),
        lateArrivalGrace: Duration = .seconds(10)
    ) {
        self.lateArrivalGrace = lateArrivalGrace
        self.romToTFA = romToTFA
        self.tfaReconnect = tfaReconnect
        self.tfaToUBoot = tfaToUBoot
        self.ubootReenumeration = ubootReenumeration
        self.boardArrival = boardArrival
    }

    /// The `flash` option that sets the wait after a DETACH from `stage` that expects `expecting`.
    public static func option(from stage: BoardStage, expecting: BoardStage) -> String {
        switch (stage, expecting) {
        case (.rom, _), (.tfa, .tfa): "--tfa-timeout"
        case (.tfa, _): "--uboot-timeout"
        default: "--reenumeration-timeout"
        }
    }
}
