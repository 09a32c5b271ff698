#!/bin/sh
# A remote shell for ferry's tests: runs the far command on this host, as `ssh HOST CMD` would.
# Used as: ferry ... -e "sh /path/lsh.sh" localhost:/path
shift
exec sh -c "$*"
