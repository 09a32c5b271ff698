#!/bin/sh
# Starts a throwaway sshd on 127.0.0.1 for benchmarks: host and client keys live in DIR.
#   scripts/sshd-loopback.sh start DIR   prints the port; DIR/rsh is a ready --rsh command line
#   scripts/sshd-loopback.sh stop DIR
set -eu
cmd=$1; dir=$2
case "$cmd" in
start)
  mkdir -p "$dir" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key" </dev/null
  ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key" </dev/null
  cp "$dir/client_key.pub" "$dir/authorized_keys"
  chmod 600 "$dir/authorized_keys"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$dir/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd.pid
StrictModes no
UsePAM no
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
CONF
  /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
  i=0
  while ! python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; do
    i=$((i+1)); [ $i -lt 50 ] || { echo "sshd did not start; see $dir/sshd.log" >&2; exit 1; }; sleep 0.1
  done
  echo "ssh -o Compression=no -p $port -i $dir/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR" >"$dir/rsh"
  echo "$port"
  ;;
stop)
  [ -f "$dir/sshd.pid" ] && kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
  ;;
esac
