import Testing

@testable import Fastboot

@Suite struct FastbootExchangeTests {
    typealias Step = (event: FastbootExchange.Event, action: FastbootExchange.Action)

    /// Each row: a command, the events that arrive in order, and the action expected after each.
    static let table: [(FastbootCommand, [Step])] = [
        (.getvar("max-download-size"), [(.reply(.okay("0x02000000")), .finished("0x02000000"))]),
        (
            .flash("rootfs"),
            [(.reply(.info("writing")), .readReply), (.reply(.okay("")), .finished(""))]
        ),
        (.erase("fip-b"), [(.reply(.fail("no such partition")), .failed("no such partition"))]),
        (
            .download(0x1000),
            [(.reply(.data(0x1000)), .sendData(0x1000)), (.dataSent, .readReply), (.reply(.okay("")), .finished(""))]
        ),
        (
            .download(0x1000),
            [(.reply(.data(0x2000)), .violation(.dataSizeMismatch(asked: 0x1000, offered: 0x2000)))]
        ),
        (
            .download(0x1000),
            [(.reply(.okay("")), .violation(.unexpected(.okay(""), expecting: "waiting for DATA")))]
        ),
        (
            .getvar("serialno"),
            [
                (
                    .reply(.data(4)),
                    .violation(.unexpected(.data(4), expecting: "waiting for the answer to getvar:serialno"))
                )
            ]
        ),
        (.oem("partconf: 1 1"), [(.reply(.text("x")), .readReply), (.reply(.okay("")), .finished(""))]),
    ]

    @Test(arguments: table.indices) func exchange(_ row: Int) {
        let (command, steps) = Self.table[row]
        var exchange = FastbootExchange(command)
        #expect(exchange.start() == .sendCommand(Array(command.description.utf8)))
        for step in steps { #expect(exchange.handle(step.event) == step.action) }
    }

    @Test func commandsAreAtMost64Bytes() {
        #expect(FastbootCommand.download(0x0200_0000).description == "download:02000000")
        #expect(FastbootCommand.oem("bootbus: 0 0 0").description == "oem bootbus: 0 0 0")
        let long = FastbootCommand.getvar("partition-size:" + String(repeating: "x", count: 50))
        var exchange = FastbootExchange(long)
        #expect(exchange.start() == .violation(.commandTooLong(long.description)))
    }

    @Test func repliesParse() throws {
        #expect(try FastbootReply(Array("OKAY0x02000000".utf8)) == .okay("0x02000000"))
        #expect(try FastbootReply(Array("DATA00001000".utf8)) == .data(0x1000))
        #expect(try FastbootReply(Array("FAILno such partition\0junk".utf8)) == .fail("no such partition"))
        #expect(try FastbootReply(Array("INFO".utf8)) == .info(""))
        #expect(throws: FastbootProtocolError.self) { try FastbootReply(Array("DATAxyz".utf8)) }
        #expect(throws: FastbootProtocolError.self) { try FastbootReply(Array("HELLO".utf8)) }
        #expect(FastbootReply.data(0x20).bytes == Array("DATA00000020".utf8))
    }
}
