/// What a board's console (UART) log says about why USB went quiet. Only a console tells apart
/// the causes of "TF-A detached and nothing came back" (protocol reference §E row 4).
struct ConsoleFinding: Sendable, Hashable {
    enum Kind: Sendable, Hashable {
        /// TF-A built for a storage boot, fed over USB (§B).
        case tfaNotUSBBuild
        /// A signature check failed (`-80` = EAUTH).
        case authentication
        /// U-Boot has no USB peripheral (node disabled or `dr_mode = "host"`).
        case ubootNoGadget
        /// The USB PHY or VBUS detector regulator is missing from the device tree.
        case missingRegulator
        /// TF-A or U-Boot crashed or panicked.
        case crash
        /// U-Boot stopped at its prompt instead of running `stm32prog`.
        case ubootPrompt
    }

    var kind: Kind
    var line: String

    /// The markers, checked case-sensitively as the firmwares print them.
    static let markers: [(text: String, kind: Kind)] = [
        ("Boot interface 6 not supported", .tfaNotUSBBuild),
        ("(-80)", .authentication),
        ("authentication failed", .authentication),
        ("No USB device found", .ubootNoGadget),
        ("udc_device_get_by_index failed", .ubootNoGadget),
        ("vdda1v1-supply", .missingRegulator),
        ("vdda1v8-supply", .missingRegulator),
        ("phy-supply", .missingRegulator),
        ("voltage level detector supply", .missingRegulator),
        ("PANIC", .crash),
        ("panic", .crash),
        ("data abort", .crash),
        ("undefined instruction", .crash),
        ("Unknown command 'stm32prog'", .ubootPrompt),
    ]

    /// Every console line that matches a marker, in log order.
    static func scan(_ lines: [String]) -> [ConsoleFinding] {
        var findings: [ConsoleFinding] = []
        for line in lines {
            if let marker = markers.first(where: { line.contains($0.text) }) {
                findings.append(ConsoleFinding(kind: marker.kind, line: line.trimmingCharacters))
            } else if line.trimmingCharacters == "STM32MP>" || line.trimmingCharacters == "=>" {
                findings.append(ConsoleFinding(kind: .ubootPrompt, line: line.trimmingCharacters))
            }
        }
        return findings
    }

    /// What this line means, for the evidence list.
    var meaning: String {
        switch kind {
        case .tfaNotUSBBuild: "TF-A was built for a storage boot, not as a USB programmer (STM32MP_USB_PROGRAMMER=1)"
        case .authentication: "a signature check failed (-80 is EAUTH): TF-A stops"
        case .ubootNoGadget:
            "U-Boot found no USB peripheral controller (usbotg_hs disabled or dr_mode is not peripheral/otg)"
        case .missingRegulator: "a USB PHY or VBUS detector supply is missing from U-Boot's device tree"
        case .crash: "the firmware crashed"
        case .ubootPrompt: "U-Boot stopped at its prompt instead of running stm32prog"
        }
    }
}
