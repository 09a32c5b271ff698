#!/usr/bin/env python3
"""Stands in for a far `ferry serve` of another protocol version: sends a Hello frame claiming
protocol PROTO (accepting OLDEST..PROTO), then reads until the client hangs up.

    ferry copy ... -e "python3 fake_serve.py PROTO OLDEST" host:/path
(the remote shell's host and command arguments that follow are ignored)
"""
import json
import os
import struct
import sys

proto, oldest = int(sys.argv[1]), int(sys.argv[2])
hello = json.dumps({
    "magic": "ferry", "protocolVersion": proto, "oldestProtocol": oldest,
    "ferryVersion": "%d.0.0" % proto, "binary": "/opt/ferry-%d/bin/ferry" % proto,
    "host": "farhost", "capabilities": [],
}, sort_keys=True).encode()
os.write(1, struct.pack(">IB", len(hello) + 1, 0x01) + hello)
while os.read(0, 65536):
    pass
