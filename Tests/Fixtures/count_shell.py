#!/usr/bin/env python3
"""A remote shell for ferry's tests that counts the bytes crossing it each way.

    ferry ... -e "python3 count_shell.py PREFIX" localhost:/path

runs the far command on this host and, when both streams end, writes the byte counts to
PREFIX.up (ferry -> far) and PREFIX.down (far -> ferry).
"""
import os
import subprocess
import sys
import threading

prefix, _host, command = sys.argv[1], sys.argv[2], sys.argv[3:]
far = subprocess.Popen(["/bin/sh", "-c", "exec " + " ".join(command)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
counts = {}


def pump(name, src, dst):
    n = 0
    while True:
        data = os.read(src, 1 << 16)
        if not data:
            break
        n += len(data)
        try:
            os.write(dst, data) if isinstance(dst, int) else dst.write(data)
        except BrokenPipeError:
            break
    counts[name] = n
    try:
        os.close(dst) if isinstance(dst, int) else dst.close()
    except OSError:
        pass


up = threading.Thread(target=pump, args=("up", 0, far.stdin))
down = threading.Thread(target=pump, args=("down", far.stdout.fileno(), 1))
up.start()
down.start()
down.join()
up.join(timeout=5)
status = far.wait()
for name in ("up", "down"):
    with open(prefix + "." + name + ".tmp", "w") as f:
        f.write(str(counts.get(name, -1)))
    os.rename(prefix + "." + name + ".tmp", prefix + "." + name)
sys.exit(status)
