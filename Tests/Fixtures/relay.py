#!/usr/bin/env python3
"""A remote shell for ferry's tests that stands where ssh stands: a separate process relaying
the byte streams between ferry and the far `ferry serve` it starts on this host.

    ferry copy ... -e "python3 relay.py [--pidfile P] [--rate B/s] [--flip-up N] [--flip-down N]" localhost:/path

--pidfile P     write "RELAY_PID SERVE_PID" to P once the far command runs (so a test can kill
                either the transport or the far ferry)
--rate B        forward at most B bytes per second in each direction (so a copy lasts long
                enough to be interrupted)
--flip-up N     invert the byte at offset N of the client -> far stream (a damaged link)
--flip-down N   invert the byte at offset N of the far -> client stream
--drop-ready-key K
                remove key K from the far side's Ready frame (a far ferry that predates it)
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--pidfile")
ap.add_argument("--rate", type=int, default=0)
ap.add_argument("--flip-up", type=int, action="append", default=[])
ap.add_argument("--flip-down", type=int, action="append", default=[])
ap.add_argument("--drop-ready-key", action="append", default=[])
ap.add_argument("host")
ap.add_argument("command", nargs=argparse.REMAINDER)
args = ap.parse_args()

far = subprocess.Popen(["/bin/sh", "-c", "exec " + " ".join(args.command)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
if args.pidfile:
    tmp = args.pidfile + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d %d\n" % (os.getpid(), far.pid))
    os.rename(tmp, args.pidfile)


def pump(src, dst, flips, rate, rewriter=None):
    pos = 0
    started = time.monotonic()
    while True:
        try:
            data = os.read(src, 65536)
        except OSError:
            break
        if not data:
            break
        if flips:
            buf = bytearray(data)
            for off in flips:
                if pos <= off < pos + len(buf):
                    buf[off - pos] ^= 0xFF
            data = bytes(buf)
        pos += len(data)
        if rewriter:
            data = rewriter.feed(data)
        view = memoryview(data)
        try:
            while view:
                n = os.write(dst, view)
                view = view[n:]
        except OSError:
            break
        if rate:
            ahead = pos / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


class ReadyRewriter:
    """Parses the far -> client frames (u32 length, u8 type, body) and rewrites the Ready frame."""

    def __init__(self, keys):
        self.keys, self.pending = keys, b""

    def feed(self, data):
        self.pending += data
        out = b""
        while len(self.pending) >= 5:
            length = struct.unpack(">I", self.pending[:4])[0]
            if len(self.pending) < 4 + length:
                break
            kind, body = self.pending[4], self.pending[5:4 + length]
            self.pending = self.pending[4 + length:]
            if kind == 0x03:
                ready = json.loads(body)
                for k in self.keys:
                    ready.pop(k, None)
                body = json.dumps(ready).encode()
            out += struct.pack(">IB", len(body) + 1, kind) + body
        return out


def up():
    pump(0, far.stdin.fileno(), args.flip_up, args.rate)
    try:
        far.stdin.close()
    except OSError:
        pass


threading.Thread(target=up, daemon=True).start()
pump(far.stdout.fileno(), 1, args.flip_down, args.rate,
     ReadyRewriter(args.drop_ready_key) if args.drop_ready_key else None)
os.close(1)
code = far.wait()
os._exit(code if code >= 0 else 255)
