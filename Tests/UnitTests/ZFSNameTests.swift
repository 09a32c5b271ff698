import XCTest
import ZFS

/// Where an image lives in ZFS, from what the system says: mountinfo lines, /dev/zvol links and
/// `zfs get` output. zvols cannot be made on the test machine (zfs-fuse has none), so their
/// names are checked here, and a real Proxmox host is checked by hand (see README, ZFS).
final class ZFSNameTests: XCTestCase {
    let mountinfo = """
        22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
        46 22 0:41 / /rpool rw,relatime shared:30 - zfs rpool rw,xattr,noacl
        47 46 0:42 / /rpool/data rw,relatime shared:31 - zfs rpool/data rw,xattr,noacl
        48 22 0:43 / /var/lib/vz rw,relatime shared:32 - zfs rpool/var-lib-vz rw,xattr,noacl
        49 22 0:44 / /tmp/zt/mnt\\040x rw,relatime - fuse.zfs tank/with\\040space rw,user_id=0
        50 22 0:45 / /srv/ext rw,relatime - ext4 /dev/sdb1 rw
        51 22 0:42 /images /mnt/img rw,relatime - zfs rpool/data rw,xattr,noacl
        """

    func testTheDatasetOfAFileIsTheLongestZFSMountHoldingIt() {
        XCTAssertEqual(ZFS.mountedDataset(containing: "/rpool/data/images/vm.raw", mountinfo: mountinfo)?.dataset, "rpool/data")
        XCTAssertEqual(ZFS.mountedDataset(containing: "/rpool/other.raw", mountinfo: mountinfo)?.dataset, "rpool")
        XCTAssertEqual(ZFS.mountedDataset(containing: "/var/lib/vz/images/100/vm-100-disk-0.raw", mountinfo: mountinfo)?.mountpoint, "/var/lib/vz")
        XCTAssertEqual(ZFS.mountedDataset(containing: "/tmp/zt/mnt x/a.raw", mountinfo: mountinfo)?.dataset, "tank/with space")
        XCTAssertNil(ZFS.mountedDataset(containing: "/srv/ext/a.raw", mountinfo: mountinfo), "ext4 is not ZFS")
        XCTAssertNil(ZFS.mountedDataset(containing: "/home/a.raw", mountinfo: mountinfo))
        XCTAssertNil(ZFS.mountedDataset(containing: "/rpoolx/a.raw", mountinfo: mountinfo), "a prefix of a name is not a parent folder")
        // A bind mount of a folder inside a dataset (an LXC mount point) mounts that folder.
        let bind = ZFS.mountedDataset(containing: "/mnt/img/vm.raw", mountinfo: mountinfo)
        XCTAssertEqual(bind?.dataset, "rpool/data")
        XCTAssertEqual(bind?.root, "/images")
        // Where a dataset itself is mounted (its top, not a bind mount of a folder).
        XCTAssertEqual(ZFS.mountpoint(of: "rpool/data", mountinfo: mountinfo), "/rpool/data")
        XCTAssertEqual(ZFS.mountpoint(of: "tank/with space", mountinfo: mountinfo), "/tmp/zt/mnt x")
        XCTAssertNil(ZFS.mountpoint(of: "rpool/data/vm-100-disk-0", mountinfo: mountinfo))
    }

    func testNamesThatCouldReadAsOptionsAreRefused() {
        XCTAssertNoThrow(try ZFS.checkName("rpool/data/vm-100-disk-0@ferry-ab12"))
        for bad in ["-o", "--help", "", " rpool", "rpool/a b", "rpool/a\nb"] {
            XCTAssertThrowsError(try ZFS.checkName(bad), bad)
        }
    }

    func testZvolNamesAndZdDevices() {
        let links = ["/dev/zvol/rpool/data/vm-100-disk-0": "/dev/zd0", "/dev/zvol/rpool/data/vm-100-disk-0-part1": "/dev/zd0p1",
                     "/dev/zvol/rpool/data/vm-101-disk-0": "/dev/zd16"]
        XCTAssertEqual(ZFS.zvolDataset(path: "/dev/zvol/rpool/data/vm-100-disk-0", real: "/dev/zd0", links: links), "rpool/data/vm-100-disk-0")
        XCTAssertEqual(ZFS.zvolDataset(path: "/dev/zd16", real: "/dev/zd16", links: links), "rpool/data/vm-101-disk-0")
        XCTAssertNil(ZFS.zvolDataset(path: "/dev/zvol/rpool/data/vm-100-disk-0-part1", real: "/dev/zd0p1", links: links), "a partition")
        XCTAssertNil(ZFS.zvolDataset(path: "/dev/zd0p1", real: "/dev/zd0p1", links: links), "a partition")
        XCTAssertNil(ZFS.zvolDataset(path: "/dev/zvol/rpool/data/vm-100-disk-0@ferry-1", real: "/dev/zd32", links: links), "a snapshot device")
        XCTAssertNil(ZFS.zvolDataset(path: "/dev/sda", real: "/dev/sda", links: links))
        XCTAssertEqual(ZFS.snapshotDevice("rpool/data/vm-100-disk-0@ferry-1"), "/dev/zvol/rpool/data/vm-100-disk-0@ferry-1")
    }

    func testSnapshotAndCloneNames() {
        XCTAssertEqual(ZFS.snapshotName(dataset: "rpool/data/vm-100-disk-0", transferId: "ab12"), "rpool/data/vm-100-disk-0@ferry-ab12")
        XCTAssertEqual(ZFS.cloneName(of: "rpool/data/vm-100-disk-0@ferry-ab12", pid: 7), "rpool/data/ferry-verify-7")
        XCTAssertEqual(ZFS.cloneName(of: "tank@ferry-ab12", pid: 7), "tank/ferry-verify-7")
        let s = ZFS.parseSnapshotProperties(name: "tank/vms@ferry-1", "guid\t2203693093201678881\ncreatetxg\t14\n")
        XCTAssertEqual(s, ZFS.Snapshot(name: "tank/vms@ferry-1", guid: "2203693093201678881", createtxg: 14))
        XCTAssertEqual(s?.dataset, "tank/vms")
        XCTAssertEqual(s?.shortName, "ferry-1")
        XCTAssertNil(ZFS.parseSnapshotProperties(name: "x@y", "guid\t-\ncreatetxg\t14\n"))
    }
}
