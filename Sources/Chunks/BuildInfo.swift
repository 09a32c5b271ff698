import CSys

/// What the build knows about itself: the commit it was made from (passed in by the Makefile as
/// FERRY_COMMIT; "unknown" for a plain `swift build`).
public enum BuildInfo {
    public static let commit = String(cString: csys_build_commit())
}
