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

    /// The refusal a user sees, with the qemu-nbd step that exposes the raw disk.
    public func refusal(path: String) -> String {
        """
        \(path) is a \(rawValue) container, not a raw disk; copying it would put the container \
        itself on the destination. Expose its raw contents first, e.g. \
        `modprobe nbd && qemu-nbd --read-only -c /dev/nbd0 \(path)`, then `ferry copy /dev/nbd0 ...` \
        (or pass --as-is if the container file itself is what you want)
        """
    }
}
