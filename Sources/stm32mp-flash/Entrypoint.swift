import FlashCLI
import Glibc

/// The whole executable: every command lives in the FlashCLI library.
@main
struct Entrypoint {
    static func main() async {
        exit(await RootCommand.runMain())
    }
}
