import Chunks
import Foundation
import Ledger
import Wire

/// What both ends of a session say first.
enum Session {
    static var binaryPath: String {
        DeviceIdentity.realPath("/proc/self/exe") ?? CommandLine.arguments.first ?? "ferry"
    }

    static func hello() -> Hello {
        Hello(ferryVersion: PeerVersion.string, binary: binaryPath, host: Ledger.hostname())
    }

    /// Lines from the far side, shown locally.
    static func remoteLog(_ line: String) {
        Console.err("remote: " + line + "\n")
    }

    /// Starts the far `ferry serve` and shakes hands.
    static func open(host: String, settings: RemoteSettings) throws -> RemoteShell {
        let shell = try RemoteShell(host: host, settings: settings)
        shell.connection.idleTimeout = settings.timeout
        do {
            _ = try Handshake.run(shell.connection, hello: hello(), log: remoteLog)
        } catch {
            shell.finish()
            throw error
        }
        return shell
    }
}

/// ferry's version: `ferry --version` and the Hello frame both report it.
public enum PeerVersion {
    public static let string = "0.1.0"

    /// `ferry --version`: the version, the protocol range this build speaks, and its commit.
    public static let long = """
        ferry \(string)
        protocol \(ProtocolVersion.current) (accepts \(ProtocolVersion.oldest)-\(ProtocolVersion.current))
        commit \(BuildInfo.commit)
        """
}
