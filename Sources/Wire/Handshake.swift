import Chunks

/// The first exchange on every connection: each side sends its Hello, then checks the other's.
public enum Handshake {
    public static func run(_ c: Connection, hello: Hello, log: (String) -> Void) throws -> Hello {
        try c.sendJSON(.hello, hello)
        let body = try c.expect(.hello, log: log)
        let peer = try JSONBody.decode(Hello.self, body, what: "hello")
        try check(ours: hello, theirs: peer)
        return peer
    }

    /// Two ends are compatible when each one's version is at least the other's oldest.
    public static func check(ours: Hello, theirs: Hello) throws {
        guard theirs.magic == "ferry" else { throw FerryError(.wire, "the peer is not ferry") }
        if theirs.protocolVersion < ours.oldestProtocol || ours.protocolVersion < theirs.oldestProtocol {
            throw FerryError(.wire, """
                incompatible ferry versions: this side (\(ours.binary) \(ours.ferryVersion) on \(ours.host)) speaks \
                protocol \(ours.protocolVersion) (accepts \(ours.oldestProtocol)-\(ours.protocolVersion)), the other side \
                (\(theirs.binary) \(theirs.ferryVersion) on \(theirs.host)) speaks protocol \(theirs.protocolVersion) \
                (accepts \(theirs.oldestProtocol)-\(theirs.protocolVersion))
                """, hint: "install the same ferry version on both hosts, or point --remote-ferry at a compatible binary")
        }
    }
}
