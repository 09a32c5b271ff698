#!/usr/bin/env python3
"""Prints a file's chunk list as `ferry ledger export` should: OFFSET LENGTH SHA256, one chunk a line.

    python3 chunksums.py FILE CHUNK_SIZE
"""
import hashlib
import sys

path, size = sys.argv[1], int(sys.argv[2])
offset = 0
out = []
with open(path, "rb") as f:
    while True:
        data = f.read(size)
        if not data:
            break
        out.append("%d %d %s" % (offset, len(data), hashlib.sha256(data).hexdigest()))
        offset += len(data)
sys.stdout.write("".join(line + "\n" for line in out))
