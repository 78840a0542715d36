"""Exec and attach streams: WebSocket framing (RFC 6455, server side) with the Kubernetes channel protocol
(``v5.channel.k8s.io``/``v4``), and a command or an interactive session of a :class:`PodShell` run over it."""

from __future__ import annotations

import shlex
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

from bastion.demo.kubesim.podshell import PodShell

MAX_BODY = 3 * 1024 * 1024  # the largest request body or WebSocket message accepted
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
PROMPT = "/ # "


class WebSocket:
    """Server side of one WebSocket over a (TLS) socket whose reads go through ``rfile``."""

    def __init__(self, rfile: Any, sock: socket.socket, v5: bool):
        self.rfile, self.sock, self.v5 = rfile, sock, v5
        self.lock = threading.Lock()

    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise EOFError
        return data

    def send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([n])
        elif n < 65536:
            head += bytes([126]) + struct.pack("!H", n)
        else:
            head += bytes([127]) + struct.pack("!Q", n)
        with self.lock:
            self.sock.sendall(head + payload)

    def channel(self, ch: int, data: bytes) -> None:
        """Send ``data`` on a k8s stream channel (binary frame, first byte the channel)."""
        self.send(0x2, bytes([ch]) + data)

    def recv(self) -> tuple[int, bytes]:
        """The next message (opcode, payload); pings answered; EOFError when the peer is gone or closed."""
        parts: list[bytes] = []
        first_op = 0
        while True:
            b0, b1 = self._read(2)
            op, fin, masked, n = b0 & 0x0F, b0 & 0x80, b1 & 0x80, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            if n > MAX_BODY:
                raise EOFError
            mask = self._read(4) if masked else b""
            data = self._read(n)
            if masked:
                data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
            if op == 0x8:
                raise EOFError
            if op == 0x9:
                self.send(0xA, data)
                continue
            if op == 0xA:
                continue
            if op:
                first_op = op
            parts.append(data)
            if fin:
                return first_op, b"".join(parts)

    def close(self, code: int = 1000) -> None:
        try:
            self.send(0x8, struct.pack("!H", code))
        except OSError:
            pass


def run_exec(ws: WebSocket, shell: PodShell, command: list[str], *, stdin: bool, tty: bool) -> int:
    """Run ``command`` in ``shell`` over the stream; the exit status."""
    out = (lambda s: ws.channel(STDOUT, s.replace("\n", "\r\n").encode())) if tty else \
        (lambda s: ws.channel(STDOUT, s.encode()))
    err = out if tty else (lambda s: ws.channel(STDERR, s.encode()))
    interactive = bool(command) and command[0].rsplit("/", 1)[-1] in ("sh", "bash", "ash") and len(command) == 1
    if len(command) >= 3 and command[0].rsplit("/", 1)[-1] in ("sh", "bash") and command[1] == "-c":
        o, e, rc = shell.run(command[2])
        out(o), err(e)
        return rc
    if not interactive:
        if not command:
            err("error: you must specify at least one command for the container\n")
            return 1
        o, e, rc = shell.run(shlex.join(command))
        out(o), err(e)
        return rc
    if not stdin:
        return 0
    line, rc = "", 0
    if tty:
        out(PROMPT)
    for data in _stdin(ws):
        for ch in data.decode("utf-8", "replace"):
            if tty and ch in "\x7f\b":
                if line:
                    line = line[:-1]
                    out("\b \b")
                continue
            if tty and ch == "\x03":
                out("^C\n" + PROMPT)
                line = ""
                continue
            if tty and ch == "\x04" and not line:
                return rc
            if ch in "\r\n":
                if tty:
                    out("\n")
                o, e, rc = shell.run(line)
                out(o), err(e)
                line = ""
                if shell.exited is not None:
                    return shell.exited
                if tty:
                    out(PROMPT)
                continue
            line += ch
            if tty:
                out(ch)
    if line:
        o, e, rc = shell.run(line)
        out(o), err(e)
    return shell.exited if shell.exited is not None else rc


def _stdin(ws: WebSocket) -> Iterator[bytes]:
    """stdin data from the stream until the client closes stdin (v5) or the connection."""
    while True:
        try:
            op, data = ws.recv()
        except EOFError:
            return
        if op not in (0x1, 0x2) or not data:
            continue
        ch, payload = data[0], data[1:]
        if ch == STDIN and payload:
            yield payload
        elif ch == CLOSE and ws.v5 and payload[:1] == bytes([STDIN]):
            return
