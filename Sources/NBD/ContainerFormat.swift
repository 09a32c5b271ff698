import Chunks

/// Disk-image *containers* that users copy by mistake instead of the raw disk inside them.
public enum DiskImageFormat: String, Sendable {
    case vdi = "VirtualBox VDI"
    case qcow2 = "QEMU qcow2"
    case qed = "QEMU QED"
    case vmdk = "VMware VMDK"
    case vhd = "Microsoft VHD"
    case vhdx = "Microsoft VHDX"

    /// Recognises a container from the first bytes of an image (at least 512 are looked at).
    public static func detect(_ head: UnsafeRawBufferPointer) -> DiskImageFormat? {
        func starts(_ s: String, at offset: Int = 0) -> Bool {
            let b = Array(s.utf8)
            guard head.count >= offset + b.count else { return false }
            return b.indices.allSatisfy { head[offset + $0] == b[$0] }
        }
        if head.count >= 0x44 {
            let magic = head.loadUnaligned(fromByteOffset: 0x40, as: UInt32.self)
            if UInt32(littleEndian: magic) == 0xBEDA_107F { return .vdi }
        }
        if starts("<<< Oracle VM VirtualBox Disk Image >>>") || starts("<<< Sun VirtualBox Disk Image >>>") { return .vdi }
        if head.count >= 4 && head[0] == 0x51 && head[1] == 0x46 && head[2] == 0x49 && head[3] == 0xFB { return .qcow2 }
        if starts("QED\0") { return .qed }
        if starts("KDMV") || starts("# Disk DescriptorFile") { return .vmdk }
        if starts("vhdxfile") { return .vhdx }
        if starts("conectix") { return .vhd }
        return nil
    }

    /// The container `file` starts with, from its first 4 KiB (a read error is thrown: a header
    /// that cannot be read says nothing about the format).
    public static func detect(in file: ImageFile) throws -> DiskImageFormat? {
        guard let size = file.size, size > 0 else { return nil }
        let head = AlignedBuffer(capacity: 4096)
        let n = try file.readExact(into: head.pointer, count: Int(min(4096, size)), at: 0).get()
        return detect(head.bytes(n))
    }

    /// Whether `name` is a format ferry reads containers in (qemu's driver names).
    public static func isContainerFormat(_ name: String) -> Bool {
        sourceFormatNames.contains(name) && name != "raw"
    }

    /// qemu's name for the format (`qemu-nbd --format`, `qemu-img -f`).
    public var qemuName: String {
        switch self {
        case .vdi: "vdi"
        case .qcow2: "qcow2"
        case .qed: "qed"
        case .vmdk: "vmdk"
        case .vhd: "vpc"
        case .vhdx: "vhdx"
        }
    }

    /// The formats `--source-format` accepts: `raw` (the bytes as they are) and qemu's names.
    public static let sourceFormatNames = ["raw", "vdi", "qcow2", "vmdk", "vpc", "vhdx", "qed"]

    /// The refusal a user sees when a stream holds a container: ferry reads the disk inside a
    /// container from a file or device, not from a pipe.
    public func refusal(path: String) -> String {
        """
        \(path == "-" ? "the stream on stdin" : path) holds a \(rawValue) container, not a raw disk; copying it \
        would put the container itself on the destination. Save it to a file and `ferry copy FILE ...` \
        copies the disk inside it, or pass --as-is if the container itself is what you want
        """
    }
}
