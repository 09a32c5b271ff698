// swift-tools-version:6.0
// ferry: move and audit very large disk images with a per-chunk SHA-256 ledger.
import PackageDescription

let package = Package(
    name: "ferry",
    products: [
        .executable(name: "ferry", targets: ["ferry"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // C libraries, each behind one module map and imported by exactly one Swift target.
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CNBD", pkgConfig: "libnbd", providers: [.apt(["libnbd-dev"])]),
        // Syscalls and ioctls that Glibc does not import (O_DIRECT, fallocate, BLK*).
        .target(name: "CSys", cSettings: [.unsafeFlags(["-O3"])]),

        // Chunk engine: file/block I/O, SHA-256, zero detection, the pipelined chunk pump.
        .target(name: "Chunks", dependencies: ["CCrypto", "CSys"]),
        // The SQLite ledger: the only importer of CSQLite.
        .target(name: "Ledger", dependencies: ["CSQLite", "Chunks"]),
        // ZFS: where an image lives in a pool, and the snapshots and clones ferry takes (the zfs command).
        .target(name: "ZFS", dependencies: ["Chunks"]),
        // NBD: the guest disk inside a VDI/qcow2/VMDK/VHD/VHDX (a private qemu-nbd) or an NBD
        // export, read with libnbd, zero extents skipped; the only importer of CNBD.
        .target(name: "NBD", dependencies: ["Chunks", "CNBD"]),
        // Wire protocol: frames, codec, handshake; the only importer of CZstd.
        .target(name: "Wire", dependencies: ["Chunks", "CZstd"]),
        // Copy engine: read once, hash, send or write, record; resume points; both wire ends.
        .target(name: "Copy", dependencies: ["Chunks", "Ledger", "Wire", "ZFS", "NBD"]),
        // Verify engine: re-read, compare with the ledger, coalesce bad ranges.
        .target(name: "Verify", dependencies: ["Chunks", "Ledger", "ZFS", "NBD"]),
        // Resend: plan from a verify, move only the differing sub-blocks, read the repair back.
        .target(name: "Resend", dependencies: ["Chunks", "Ledger", "Wire", "Copy", "Verify", "ZFS", "NBD"]),
        // The ssh peer: Transport (the remote shell), Client (one call per operation), Server
        // (`ferry serve` and its dispatch).
        .target(name: "Peer", dependencies: ["Chunks", "Ledger", "Wire", "Copy", "Verify", "Resend"]),
        // Command-line commands (a library so tests can import it).
        .target(name: "FerryCommands", dependencies: [
            "Chunks", "Ledger", "Copy", "Verify", "Resend", "Peer", "ZFS",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "ferry", dependencies: ["FerryCommands"]),
        // Behaviour tests: the real binary against real files, devices, sshd and ledgers.
        .testTarget(name: "FerryTests", dependencies: ["Chunks", "Ledger", "Wire", "Peer", "FerryCommands"]),
        // Unit tests of the pure parts: the frame parser (from fixtures), codecs, plans, parsing.
        .testTarget(name: "UnitTests", dependencies: ["Chunks", "Wire", "Copy", "Verify", "Resend", "Peer", "ZFS", "NBD"]),
    ]
)
