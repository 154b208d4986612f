import Foundation
import NullEncoding
import Testing

/// The one helper behind "unknown values are null, never missing" (docs/json.md) for the
/// `check`, `plan`, `list` and `doctor` documents.
@Suite("KeepingNulls")
struct NullEncodingTests {
    struct Inner: Encodable {
        var name: String
        var size: Int64?
        var kind: Kind?
    }
    enum Kind: String, Encodable { case a }
    struct Outer: Encodable {
        var id: String
        var file: String?
        var count: UInt64?
        var inner: Inner?
        var items: [Inner]
        var byName: [String: Inner]
        var optionals: [String?]

        enum CodingKeys: String, CodingKey { case id, file, count, inner, items, byName, optionals }
    }

    func json(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    @Test("nil optionals are null at every depth; present values unchanged")
    func nulls() throws {
        let value = Outer(
            id: "0x01", file: nil, count: nil, inner: Inner(name: "x", size: nil, kind: nil),
            items: [Inner(name: "y", size: 3, kind: .a), Inner(name: "z", size: nil, kind: nil)],
            byName: ["k": Inner(name: "w", size: nil, kind: .a)], optionals: ["s", nil])
        #expect(
            try json(KeepingNulls(value))
                == #"{"byName":{"k":{"kind":"a","name":"w","size":null}},"count":null,"file":null,"id":"0x01","#
                + #""inner":{"kind":null,"name":"x","size":null},"items":[{"kind":"a","name":"y","size":3},"#
                + #"{"kind":null,"name":"z","size":null}],"optionals":["s",null]}"#)
        // Without the helper the synthesized encoders leave the keys out.
        #expect(try !json(value).contains("null,") && !json(value).contains(#""file""#))
    }
}
