#!/usr/bin/env bash
# Starts kata-agent on a Unix socket in a temporary directory and drives it
# with agent-ctl: the methods it lists, Check, Version, and an unimplemented
# method's status. Inputs: BIN_DIR (default target/debug).
set -euo pipefail

BIN_DIR=${BIN_DIR:-target/debug}
AGENT="$BIN_DIR/kata-agent"
CTL="$BIN_DIR/agent-ctl"
WORK=$(mktemp -d)
SOCK="$WORK/agent.sock"
AGENT_PID=""

cleanup() {
    if [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null; then
        kill -TERM "$AGENT_PID"
        wait "$AGENT_PID" || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

: >"$WORK/cmdline"
"$AGENT" --server-addr "unix://$SOCK" --cmdline "$WORK/cmdline" --log-level debug 2>"$WORK/agent.log" &
AGENT_PID=$!

ADDR="unix://$SOCK"
echo "== agent-ctl list (first lines)"
"$CTL" list | head -n 5
echo "== Check"
"$CTL" --addr "$ADDR" --timeout 10s call Check
echo "== Version"
"$CTL" --addr "$ADDR" call Version
echo "== MemAgentCompactSet (not provided: expect an UNIMPLEMENTED status and why)"
if "$CTL" --addr "$ADDR" call MemAgentCompactSet; then
    echo "unexpected success" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ] && [ -x /bin/busybox ]; then
    echo "== a container: busybox rootfs, echo, exit code"
    ROOTFS="$WORK/rootfs"
    mkdir -p "$ROOTFS/bin" "$ROOTFS/proc" "$ROOTFS/dev" "$ROOTFS/etc"
    cp /bin/busybox "$ROOTFS/bin/"
    for applet in sh echo uname id; do ln -s busybox "$ROOTFS/bin/$applet"; done
    CID="demo-$$"
    "$CTL" --addr "$ADDR" call CreateContainer "{
      \"container_id\": \"$CID\", \"exec_id\": \"$CID\",
      \"OCI\": {
        \"Version\": \"1.0.2\",
        \"Process\": {\"Args\": [\"sh\", \"-c\", \"echo hello from a container; uname -s; id\"],
                      \"Env\": [\"PATH=/bin\"], \"Cwd\": \"/\"},
        \"Root\": {\"Path\": \"$ROOTFS\"},
        \"Mounts\": [{\"destination\": \"/proc\", \"source\": \"proc\", \"type\": \"proc\"}],
        \"Linux\": {\"Namespaces\": [{\"Type\": \"mount\"}, {\"Type\": \"pid\"}, {\"Type\": \"ipc\"}, {\"Type\": \"uts\"}],
                    \"CgroupsPath\": \"/guest-agent-demo/$CID\"}
      }}"
    "$CTL" --addr "$ADDR" call StartContainer "{\"container_id\": \"$CID\"}"
    "$CTL" --addr "$ADDR" --emit-defaults call WaitProcess "{\"container_id\": \"$CID\", \"exec_id\": \"$CID\"}"
    "$CTL" --addr "$ADDR" call ReadStdout "{\"container_id\": \"$CID\", \"exec_id\": \"$CID\", \"len\": 4096}" \
        | sed -n 's/.*"data": "\(.*\)".*/\1/p' | base64 -d
    "$CTL" --addr "$ADDR" call RemoveContainer "{\"container_id\": \"$CID\"}"
else
    echo "== (skipping the container demo: it needs root and /bin/busybox)"
fi
echo "== 1000 Checks over 4 connections"
"$CTL" --addr "$ADDR" repeat -n 250 -c 4 Check
kill -TERM "$AGENT_PID"
wait "$AGENT_PID"
AGENT_PID=""
echo "== agent log"
cat "$WORK/agent.log"
