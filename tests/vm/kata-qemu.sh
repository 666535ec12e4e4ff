#!/usr/bin/env bash
# Runs QEMU with the arguments Kata's runtime gives it (all of them, after
# the binary's name), changed only where this machine lacks what they
# need; every other argument goes through as it is. The changes, each for
# the reason given where it is made:
#
#   -machine ...accel=kvm...      accel=tcg            (ACCEL=tcg: no KVM here)
#   -cpu host,...                 -cpu max,...         (ACCEL=tcg)
#   -global kvm-pit.*             dropped              (ACCEL=tcg)
#   -device vhost-vsock-pci,...   vhost-user-vsock-pci (no vhost-vsock fd: vhost-device-vsock)
#   -netdev tap,...fds=...        -netdev user         (no tap fds)
#   -daemonize                    dropped              (the caller waits for QEMU by PID)
#
# QEMU is exec'd: the PID of this script is QEMU's.
#
# Environment (defaults in brackets):
#   QEMU          [qemu-system-x86_64]
#   ACCEL         tcg or kvm [tcg]; with kvm the KVM arguments stay
#   VSOCK_SOCKET  vhost-user socket of vhost-device-vsock, which holds the
#                 guest's CID (its --vm guest-cid=) [required]
#   KATA_QEMU_LOG file to write the resulting command line to, one argument
#                 a line []
set -euo pipefail

QEMU="${QEMU:-qemu-system-x86_64}"
ACCEL="${ACCEL:-tcg}"
VSOCK_SOCKET="${VSOCK_SOCKET:-}"
KATA_QEMU_LOG="${KATA_QEMU_LOG:-}"

die() {
    echo "kata-qemu.sh: $*" >&2
    exit 1
}

case "$ACCEL" in
tcg | kvm) ;;
*) die "ACCEL=$ACCEL: expected tcg or kvm" ;;
esac

# `drop_opt LIST NAME`: the comma-separated LIST without NAME=... entries.
drop_opt() {
    local list="$1" name="$2" item items out=()
    IFS=, read -r -a items <<<"$list"
    for item in "${items[@]}"; do
        [[ "$item" == "$name="* ]] || out+=("$item")
    done
    local IFS=,
    echo "${out[*]}"
}

# `opt_value LIST NAME`: the value of NAME=... in LIST.
opt_value() {
    local item items
    IFS=, read -r -a items <<<"$1"
    for item in "${items[@]}"; do
        if [[ "$item" == "$2="* ]]; then
            echo "${item#*=}"
            return 0
        fi
    done
    return 1
}

out=()
while (($#)); do
    arg="$1"
    shift
    case "$arg" in
    -machine | -cpu | -device | -netdev | -global)
        (($#)) || die "$arg: no value"
        value="$1"
        shift
        ;;
    -daemonize)
        # Kata's runtime lets QEMU fork into the background and reads its
        # PID from -pidfile; the test keeps it in the foreground, to wait
        # for it and end it by PID. -pidfile stays.
        continue
        ;;
    *)
        out+=("$arg")
        continue
        ;;
    esac
    case "$arg:$value" in
    -machine:*accel=kvm*)
        # No /dev/kvm here: QEMU's TCG emulates the CPU. The machine's
        # other properties (kernel_irqchip= is accepted and unused by TCG,
        # nvdimm=on) stay.
        if [[ "$ACCEL" == tcg ]]; then value="${value//accel=kvm/accel=tcg}"; fi
        ;;
    -cpu:host*)
        # The host CPU model is KVM's; TCG's fullest model is max. The
        # properties after it (pmu=off) stay.
        if [[ "$ACCEL" == tcg ]]; then value="max${value#host}"; fi
        ;;
    -global:kvm-pit.*)
        # The in-kernel PIT of KVM: under TCG there is none for the setting
        # to apply to.
        if [[ "$ACCEL" == tcg ]]; then continue; fi
        ;;
    -device:vhost-vsock-pci,*)
        # The runtime opens /dev/vhost-vsock and hands QEMU the fd
        # (vhostfd=3), with the guest's CID; here the vsock device is
        # served by vhost-device-vsock over vhost-user (hybrid vsock on a
        # Unix socket for the host side) and the CID is its --vm guest-cid.
        # The device's other properties (id=, disable-modern=) stay.
        [[ -n "$VSOCK_SOCKET" ]] || die "VSOCK_SOCKET: not set (the vhost-device-vsock socket for $value)"
        id="$(opt_value "$value" id)" || id=vsock0
        props="$(drop_opt "$(drop_opt "${value#vhost-vsock-pci,}" vhostfd)" guest-cid)"
        out+=(-chardev "socket,id=char-$id,path=$VSOCK_SOCKET")
        value="vhost-user-vsock-pci,chardev=char-$id${props:+,$props}"
        ;;
    -netdev:tap,*)
        # The runtime opens the tap device in the pod's network namespace
        # and passes its fds (fds=, vhostfds=); without them, QEMU's user
        # networking. The id= the NIC's -device names stays.
        id="$(opt_value "${value#tap,}" id)" || die "-netdev $value: no id="
        value="user,id=$id"
        ;;
    esac
    out+=("$arg" "$value")
done

[[ -z "$KATA_QEMU_LOG" ]] || printf '%s\n' "$QEMU" "${out[@]}" >"$KATA_QEMU_LOG"
exec "$QEMU" "${out[@]}"
