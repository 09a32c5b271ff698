#!/bin/sh
# Builds the Debian package of a built ferry binary, for a Debian or Proxmox host without a Swift
# toolchain. `make deb` runs it on .build/release/ferry; the package test on the binary under
# test, so neither builds ferry again.
#
#   sh scripts/build-deb.sh BIN OUTDIR      prints OUTDIR/ferry_VERSION_ARCH.deb
#
# VERSION is UPSTREAM-REVISION: UPSTREAM is the first version-looking word of `BIN --version`
# ("ferry 0.2.0" or "0.1.0"), REVISION comes from packaging/debian/changelog. The files are the
# set scripts/install-files.sh lays out under /usr, plus changelog.Debian.gz. Depends is what
# dpkg-shlibdeps finds in the binary, plus openssh-client. BIN must carry the Swift runtime
# (`make build` links it statically): a library under a toolchain belongs to no Debian package,
# and dpkg-shlibdeps stops on it. Needs dpkg-dev.
#
# dpkg-deb compresses with xz, Debian's default, which takes half a minute for ferry's binary;
# DPKG_DEB_COMPRESSOR_TYPE=gzip in the environment takes a few seconds (the package test uses it).
set -eu
umask 022

BIN=${1:?usage: build-deb.sh BIN OUTDIR}
OUT=${2:?usage: build-deb.sh BIN OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEB=$ROOT/packaging/debian

[ -x "$BIN" ] || { echo "build-deb: no ferry binary at $BIN (make build)" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
for tool in dpkg-shlibdeps dpkg-gencontrol dpkg-parsechangelog dpkg-deb strip; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool is missing (apt-get install dpkg-dev)" >&2; exit 1; }
done

# Swift runtime libraries the binary would load from a toolchain: a host without Swift has none.
toolchain_libs=$(LC_ALL=C readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' |
    grep -E '^lib(swift|Foundation|_Foundation|dispatch|BlocksRuntime)' || true)
if [ -n "$toolchain_libs" ]; then
    echo "build-deb: $BIN loads the Swift runtime from the toolchain ($(echo $toolchain_libs)); build it with" \
         "--static-swift-stdlib (make build)" >&2
    exit 1
fi

first=$("$BIN" --version | head -n 1)
upstream=$(echo "$first" | awk '{ for (i = 1; i <= NF; i++) { w = $i; sub(/^v/, "", w)
    if (w ~ /^[0-9]+(\.[0-9]+)+([~+][0-9A-Za-z.~+]*)?$/) { print w; exit } } }')
[ -n "$upstream" ] || { echo "build-deb: no version in the first line of '$BIN --version': $first" >&2; exit 1; }
commit=$("$BIN" --version | awk '$1 == "commit" { print $2; exit }')
arch=$(dpkg --print-architecture)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/debian"
cp "$DEB/control" "$work/debian/control"

# The packaging's own changelog names the revision. A binary whose version its top entry lacks
# still gets a package (revision 1, with an entry saying so), and a note to write the entry.
top=$(dpkg-parsechangelog -l "$DEB/changelog" -S Version)
if [ "${top%-*}" = "$upstream" ]; then
    cp "$DEB/changelog" "$work/debian/changelog"
else
    echo "build-deb: packaging/debian/changelog has no entry for ferry $upstream (top: $top); adding one" >&2
    {
        echo "ferry ($upstream-1) unstable; urgency=medium"
        echo
        echo "  * Package of ferry $upstream${commit:+ (commit $commit)}."
        echo
        echo " -- $(dpkg-parsechangelog -l "$DEB/changelog" -S Maintainer)  $(date -R -u)"
        echo
        cat "$DEB/changelog"
    } >"$work/debian/changelog"
fi
version=$(dpkg-parsechangelog -l "$work/debian/changelog" -S Version)
# File dates and the archive's own: the changelog's date, so that a rebuild gives the same bytes.
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$work/debian/changelog" -S Timestamp)
export SOURCE_DATE_EPOCH

pkg=$work/ferry
sh "$ROOT/scripts/install-files.sh" --strip "$BIN" "$pkg" /usr
gzip -9n <"$work/debian/changelog" >"$pkg/usr/share/doc/ferry/changelog.Debian.gz"
mkdir -p "$pkg/usr/share/lintian/overrides"
install -m 0644 "$DEB/lintian-overrides" "$pkg/usr/share/lintian/overrides/ferry"

# dpkg-shlibdeps and dpkg-gencontrol read debian/ in the current folder.
(
    cd "$work"
    mkdir -p ferry/DEBIAN
    dpkg-shlibdeps -Tdebian/substvars "ferry/usr/bin/ferry"
    dpkg-gencontrol -pferry -v"$version" -Tdebian/substvars -Pferry -fdebian/files
)
(cd "$pkg" && find usr -type f | LC_ALL=C sort | xargs md5sum) >"$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/md5sums"
find "$pkg" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$OUT"
deb=$(cd "$OUT" && pwd)/ferry_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
echo "$deb"
