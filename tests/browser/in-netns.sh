#!/bin/sh
# Run a command in a private network namespace made for it (root, `unshare -n`): `lo`, plus a veth
# pair whose one end carries 198.18.0.1/24 (the benchmarking range). Firefox gathers no ICE
# candidates on loopback addresses, so its tests reach the daemon on 198.18.0.1; nothing can
# leave the namespace, which disappears with the command.
set -eu
if [ "${ROIPD_IN_NETNS:-}" != 1 ]; then
  command -v unshare >/dev/null || { echo "in-netns.sh: unshare missing: install Debian package util-linux" >&2; exit 1; }
  command -v ip >/dev/null || { echo "in-netns.sh: ip missing: install Debian package iproute2" >&2; exit 1; }
  ROIPD_IN_NETNS=1 exec unshare -n "$0" "$@"
fi
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 198.18.0.1/24 dev v0
ip link set v0 up
ip link set v1 up
export ROIPD_TEST_HOST=198.18.0.1
exec "$@"
