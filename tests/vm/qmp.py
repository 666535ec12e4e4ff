#!/usr/bin/env python3
"""One QMP command to a running QEMU, optionally followed by a wait for an event.

    qmp.py [--timeout SECS] [--wait EVENT[:KEY=VALUE]...] SOCKET COMMAND [ARGUMENTS_JSON]

Connects to QEMU's QMP socket (-qmp unix:SOCKET,server=on,wait=off),
negotiates capabilities, runs COMMAND with ARGUMENTS_JSON (an object;
default none) and prints its "return" value as one line of JSON. With
--wait, it then waits, on the same connection, for the event EVENT whose
data fields KEY equal VALUE (several KEY=VALUE: all of them) and prints it
as a second line. The wait uses the same connection because QEMU sends
events only to the clients connected when they happen: a DEVICE_DELETED
that follows a device_del would be lost between two connections, and it
may even come before the command's answer.

Every read is bounded by one deadline, SECS after the start [30].
Exit status: 0 done, 1 QMP error (class and description on stderr),
2 bad usage or no connection, 3 deadline passed.

Python 3 standard library only: the tests run on a bare Debian host, and
the protocol is one JSON object a line over a Unix socket.
"""

import argparse
import json
import socket
import sys
import time


class Deadline(Exception):
    pass


class Qmp:
    def __init__(self, path, deadline):
        self.deadline = deadline
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self._left())
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.next_id = 0

    def _left(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Deadline()
        return left

    def _read(self):
        """The next JSON object from QEMU."""
        while b"\n" not in self.buf:
            self.sock.settimeout(self._left())
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise Deadline() from None
            if not chunk:
                raise ConnectionError("QEMU closed the QMP connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.strip()
        return json.loads(line) if line else self._read()

    def greet(self):
        msg = self._read()
        if "QMP" not in msg:
            raise ConnectionError(f"not a QMP greeting: {msg}")
        self.execute("qmp_capabilities")

    def execute(self, command, arguments=None):
        """Runs COMMAND; returns the "return" value or raises QmpError.
        Events that arrive meanwhile are kept for wait_event."""
        self.next_id += 1
        req = {"execute": command, "id": self.next_id}
        if arguments:
            req["arguments"] = arguments
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == self.next_id:
                if "error" in msg:
                    raise QmpError(command, msg["error"])
                return msg.get("return")

    def wait_event(self, name, match):
        def matches(ev):
            data = ev.get("data") or {}
            return ev.get("event") == name and all(str(data.get(k)) == v for k, v in match.items())

        for ev in self.events:
            if matches(ev):
                return ev
        while True:
            msg = self._read()
            if "event" in msg and matches(msg):
                return msg


class QmpError(Exception):
    def __init__(self, command, err):
        super().__init__(f"{command}: {err.get('class', '?')}: {err.get('desc', err)}")


def parse_wait(spec):
    name, _, rest = spec.partition(":")
    match = {}
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--wait {spec}: expected KEY=VALUE, got {pair!r}")
        match[key] = value
    return name, match


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--wait", type=parse_wait, metavar="EVENT[:KEY=VALUE,...]")
    p.add_argument("socket")
    p.add_argument("command")
    p.add_argument("arguments", nargs="?", default=None)
    a = p.parse_args()
    try:
        args = json.loads(a.arguments) if a.arguments else None
    except json.JSONDecodeError as e:
        print(f"qmp.py: {a.command}: arguments are not JSON: {e}", file=sys.stderr)
        return 2
    if args is not None and not isinstance(args, dict):
        print(f"qmp.py: {a.command}: arguments must be a JSON object", file=sys.stderr)
        return 2

    deadline = time.monotonic() + a.timeout
    what = a.command
    try:
        q = Qmp(a.socket, deadline)
        q.greet()
        ret = q.execute(a.command, args)
        print(json.dumps(ret, separators=(",", ":")), flush=True)
        if a.wait:
            what = f"{a.command}: event {a.wait[0]} {a.wait[1]}"
            ev = q.wait_event(*a.wait)
            print(json.dumps(ev, separators=(",", ":")), flush=True)
    except QmpError as e:
        print(f"qmp.py: {e}", file=sys.stderr)
        return 1
    except Deadline:
        print(f"qmp.py: {what}: no answer within {a.timeout:g} s", file=sys.stderr)
        return 3
    except (OSError, ConnectionError, ValueError) as e:
        print(f"qmp.py: {what}: {a.socket}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
