#!/bin/sh
# The ferry demo (`make demo`): copy a generated 256 MiB disk image, look at the ledger, damage
# one byte, let verify find it and resend repair it. Usage: sh scripts/demo.sh /abs/path/to/ferry
# Everything happens in a scratch folder that is removed on exit; the user's ledger is not touched.
set -eu

BIN=${1:?usage: demo.sh /path/to/ferry}
[ -x "$BIN" ] || { echo "demo: $BIN is not an executable" >&2; exit 2; }

# /var/tmp rather than /tmp: /tmp is often tmpfs, which refuses O_DIRECT, and the demo should
# show ferry reading back from a real disk.
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/ferry-demo.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
export FERRY_LEDGER="$WORK/ledger.db"
cd "$WORK"

step() { printf '\n== %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

MiB=1048576

# Deterministic bytes that look like encrypted or compressed data: AES-CTR of zeros with a fixed
# key. Without the openssl command, gzip of a counting sequence (slower, still deterministic).
noise() { # noise SEED BYTES
    if command -v openssl >/dev/null 2>&1; then
        openssl enc -aes-128-ctr -pbkdf2 -nosalt -pass "pass:$1" </dev/zero 2>/dev/null | head -c "$2"
    else
        seq "$1" 99999999 | gzip -1n | head -c "$2"
    fi
}
# Text that differs in every chunk, like logs or source files inside a guest file system.
text() { # text BYTES
    seq -f 'line %09g: the quick brown fox jumps over the lazy dog; fsck found nothing to fix' 1 99999999 \
        | head -c "$1"
}
zeros() { head -c "$1" /dev/zero; }

step "making a 256 MiB sample disk image: data, zeros, text, data, zeros and a short tail"
{
    noise 1 $((64 * MiB))
    zeros $((64 * MiB))
    text $((64 * MiB))
    noise 2 $((32 * MiB))
    zeros $((32 * MiB))
    text 12345
} >vm-disk.raw
ls -l vm-disk.raw

step "copying it in one pass: every 1 MiB chunk is hashed, both ends go into the ledger"
show "$BIN" copy --progress plain vm-disk.raw copy.raw

step "the ledger ($FERRY_LEDGER) now holds both ends"
show "$BIN" ledger list
ID=$("$BIN" ledger list | awk '$2 == "destination" { id = $1 } END { print id }')
show "$BIN" ledger show "$ID"

step "the whole-image SHA-256 in the ledger is what sha256sum computes"
show sha256sum vm-disk.raw copy.raw

SIZE=$(wc -c <vm-disk.raw)
AT=$((SIZE / 2))
step "weeks later one byte of the copy has rotted: byte $AT becomes 0xff"
printf '\377' | dd of=copy.raw bs=1 seek="$AT" conv=notrunc 2>/dev/null
echo "damaged copy.raw at offset $AT"

step "verify re-reads the copy from the disk and pinpoints the damage (exit status 1)"
rc=0
show "$BIN" verify copy.raw || rc=$?
echo "exit status $rc"
[ "$rc" = 1 ] || { echo "demo: expected verify to exit 1, got $rc" >&2; exit 1; }

step "resend repairs only the damaged chunk; only its differing 64K sub-block is rewritten"
show "$BIN" resend vm-disk.raw copy.raw

step "verify again: clean (exit status 0)"
show "$BIN" verify copy.raw
show sha256sum copy.raw

step "the ledger keeps the whole story: the copy, the finding, the repair, the clean verify"
show "$BIN" ledger show "$ID"

printf '\ndemo finished; %s is removed on exit\n' "$WORK"
