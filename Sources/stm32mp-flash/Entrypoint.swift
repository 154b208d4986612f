import ArgumentParser
import FlashCLI

/// The whole executable: every command lives in the FlashCLI library.
@main
struct Entrypoint {
    static func main() async {
        await RootCommand.main()
    }
}
