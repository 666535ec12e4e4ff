#!/usr/bin/env bash
# Prints the Debian packages `make test` needs, one a line: busybox for the
# container rootfs, iproute2 and util-linux (ip, nsenter, unshare, losetup)
# for the network, namespace, block and volume tests, e2fsprogs (mkfs.ext4,
# e2fsck) for the block storage and volume tests, iptables for
# GetIPTables/SetIPTables, make, and gcc as the linker. `make test-deps`
# installs them.
set -euo pipefail
printf '%s\n' busybox-static iproute2 util-linux e2fsprogs iptables make gcc libc6-dev
