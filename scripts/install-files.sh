#!/bin/sh
# Lays out ferry's installed files under DESTDIR/PREFIX: the binary, the man pages, bash, zsh and
# fish completions and the documentation. `make install` and scripts/build-deb.sh both use it, so
# a source install and the Debian package hold the same set.
#
#   sh scripts/install-files.sh [--strip] BIN DESTDIR PREFIX
#
#   PREFIX/bin/ferry
#   PREFIX/share/man/man1/ferry.1.gz, ferry-copy.1.gz, ...    (man/*.1, gzip -9n)
#   PREFIX/share/bash-completion/completions/ferry
#   PREFIX/share/zsh/vendor-completions/_ferry                (PREFIX /usr; else zsh/site-functions)
#   PREFIX/share/fish/vendor_completions.d/ferry.fish
#   PREFIX/share/doc/ferry/README.md.gz, copyright
#   PREFIX/share/doc/ferry/examples/systemd/ferry-audit.service, .timer (contrib/systemd)
#
# The completions come from BIN itself (swift-argument-parser's --generate-completion-script), so
# they always match its options. --strip strips BIN's copy the way Debian packages do; without it
# the binary keeps its symbols for crash backtraces.
set -eu
umask 022

strip=no
if [ "${1:-}" = --strip ]; then strip=yes; shift; fi
BIN=${1:?usage: install-files.sh [--strip] BIN DESTDIR PREFIX}
DEST=${2?usage: install-files.sh [--strip] BIN DESTDIR PREFIX}
PREFIX=${3:?usage: install-files.sh [--strip] BIN DESTDIR PREFIX}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

[ -x "$BIN" ] || { echo "install-files: no ferry binary at $BIN (make build)" >&2; exit 1; }

base=$DEST$PREFIX
# Debian's zsh searches vendor-completions for packages; for /usr/local and other prefixes its
# fpath has PREFIX/share/zsh/site-functions.
if [ "$PREFIX" = /usr ]; then zshdir=share/zsh/vendor-completions; else zshdir=share/zsh/site-functions; fi

# mkdir, not install -d -m: directories that exist (/usr/local/bin) keep their modes.
mkdir -p "$base/bin" "$base/share/man/man1" "$base/share/bash-completion/completions" \
    "$base/$zshdir" "$base/share/fish/vendor_completions.d" "$base/share/doc/ferry/examples/systemd"

if [ "$strip" = yes ]; then
    # What dh_strip does for a program: keep the build id, drop symbols, .comment and .note.
    strip --strip-unneeded --remove-section=.comment --remove-section=.note -o "$base/bin/ferry" "$BIN"
    chmod 0755 "$base/bin/ferry"
else
    install -m 0755 "$BIN" "$base/bin/ferry"
fi

for page in "$ROOT"/man/*.1; do
    gzip -9n <"$page" >"$base/share/man/man1/${page##*/}.gz"
done

# bash-completion sources its files, so the generated #!/bin/bash line would only mislead.
"$BIN" --generate-completion-script bash | sed '1{/^#!/d}' >"$base/share/bash-completion/completions/ferry"
"$BIN" --generate-completion-script zsh >"$base/$zshdir/_ferry"
"$BIN" --generate-completion-script fish >"$base/share/fish/vendor_completions.d/ferry.fish"

gzip -9n <"$ROOT/README.md" >"$base/share/doc/ferry/README.md.gz"
install -m 0644 "$ROOT/packaging/debian/copyright" "$base/share/doc/ferry/copyright"
# The monthly audit, to copy to /etc/systemd/system and enable (see the README). The unit names
# PREFIX/bin/ferry.
for unit in "$ROOT"/contrib/systemd/ferry-audit.*; do
    sed "s|/usr/bin/ferry|$PREFIX/bin/ferry|" "$unit" >"$base/share/doc/ferry/examples/systemd/${unit##*/}"
done

# New files get 0644 from the umask; a reinstall over older files gets it here.
chmod 0644 "$base"/share/man/man1/ferry*.1.gz "$base/share/bash-completion/completions/ferry" "$base/$zshdir/_ferry" \
    "$base/share/fish/vendor_completions.d/ferry.fish" "$base/share/doc/ferry/README.md.gz" \
    "$base"/share/doc/ferry/examples/systemd/ferry-audit.*
