#!/usr/bin/env python3
"""A FUSE file system for ferry's tests that stands in for a disk with unreadable sectors.

    python3 badsectors.py IMAGE MOUNTPOINT [START:END ...] [flip:OFFSET ...]

exposes IMAGE as MOUNTPOINT/disk.raw (read and write, same size); reading any byte in
[START, END) fails with EIO until that range is written again, as a remapped sector would be.
The byte at each flip OFFSET comes back inverted on the 1st, 3rd, 5th... read that covers it and
right on the others (a weak sector, a flaky cable), until a write covers it.
Writing IMAGE.bad (START:END ranges, space-separated; empty for none) replaces the failing
ranges from the next read on: a disk that reads again after cooling, or fails elsewhere.
Every read that fails is counted in IMAGE.failed-reads (one line each: OFFSET SIZE).
Runs in the foreground until unmounted.
"""
import errno
import os
import sys
import threading

try:  # Debian's python3-fusepy names the module fusepy; pip's fusepy names it fuse
    from fusepy import FUSE, FuseOSError, Operations
except ImportError:
    from fuse import FUSE, FuseOSError, Operations


class BadSectors(Operations):
    def __init__(self, image, bad, flips):
        self.image = image
        self.bad = bad          # list of [start, end) ranges that fail reads
        self.flips = flips      # offset -> reads of it so far
        self.mutex = threading.Lock()
        self.control = image + ".bad"
        self.control_mtime = None
        self.failed_log = image + ".failed-reads"

    def reload(self):
        try:
            mtime = os.stat(self.control).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != self.control_mtime:
            self.control_mtime = mtime
            with open(self.control) as f:
                self.bad = [tuple(int(x) for x in r.split(":")) for r in f.read().split()]

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": 0o40755, "st_nlink": 2}
        if path != "/disk.raw":
            raise FuseOSError(errno.ENOENT)
        st = os.stat(self.image)
        return {"st_mode": 0o100644, "st_nlink": 1, "st_size": st.st_size,
                "st_mtime": st.st_mtime, "st_ctime": st.st_ctime, "st_atime": st.st_atime}

    def readdir(self, path, fh):
        return [".", "..", "disk.raw"]

    def open(self, path, flags):
        if path != "/disk.raw":
            raise FuseOSError(errno.ENOENT)
        return os.open(self.image, os.O_RDWR)

    def read(self, path, size, offset, fh):
        with self.mutex:
            self.reload()
            for start, end in self.bad:
                if offset < end and offset + size > start:
                    with open(self.failed_log, "a") as log:
                        log.write("%d %d\n" % (offset, size))
                    raise FuseOSError(errno.EIO)
            data = bytearray(os.pread(fh, size, offset))
            for at in self.flips:
                if offset <= at < offset + len(data):
                    self.flips[at] += 1
                    if self.flips[at] % 2 == 1:
                        data[at - offset] ^= 0xFF
        return bytes(data)

    def write(self, path, data, offset, fh):
        with self.mutex:
            # A rewritten range reads again (the drive remapped the sector).
            self.bad = [(s, e) for s, e in self.bad if not (offset <= s and e <= offset + len(data))]
            self.flips = {at: n for at, n in self.flips.items() if not (offset <= at < offset + len(data))}
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        os.truncate(self.image, length)

    def fsync(self, path, datasync, fh):
        os.fsync(fh)
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0


if __name__ == "__main__":
    image, mountpoint = sys.argv[1], sys.argv[2]
    bad = [tuple(int(x) for x in r.split(":")) for r in sys.argv[3:] if not r.startswith("flip:")]
    flips = {int(r[5:]): 0 for r in sys.argv[3:] if r.startswith("flip:")}
    FUSE(BadSectors(image, bad, flips), mountpoint, foreground=True, nothreads=True, direct_io=True)
