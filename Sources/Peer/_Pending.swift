import Chunks
import Copy
import Ledger
import Verify
enum FerryErrorShim { static func usage(_ m: String) -> FerryError { FerryError(.usage, m) } }
public enum RemoteCopy {
    public static func run(source: Location, destination: Location, options: CopyOptions, ledger: Ledger,
                           remote: RemoteSettings, progress: ProgressCounter) throws -> CopyReport { throw FerryError(.usage, "pending") }
}
public enum RemoteVerify {
    public static func run(host: String, path: String, imageId: Int64?, settings: RemoteSettings, progress: ProgressCounter) throws -> VerifyReport { throw FerryError(.usage, "pending") }
}
