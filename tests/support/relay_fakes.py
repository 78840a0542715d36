"""Stand-ins for the two ends of a :class:`bastion.terminal.relay.Relay` in unit tests: the client's channel and
the target's endpoint, each remembering what reached it, so a test can say exactly what the relay passed on."""

from __future__ import annotations


class FakeChannel:
    """The client's side: every write the relay made to it, in order."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def write(self, data: bytes, datatype: int | None = None) -> None:
        self.got.append(data)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class FakeEndpoint:
    """The target's side: what it was given, in order (bytes, ``("signal", name)``, ``("break", msec)``, ``"eof"``),
    and whether the relay holds its reading paused (with how many pauses). ``echo`` is what it says of the
    target's echo (None: not known)."""

    def __init__(self, echo: bool | None = True) -> None:
        self.got: list[object] = []
        self.paused = False
        self.pauses = 0
        self.echo = echo

    def written(self) -> bytes:
        """The bytes it was given, joined (signals, breaks and the end of input left out)."""
        return b"".join(x for x in self.got if isinstance(x, bytes))

    def write(self, data: bytes) -> None:
        self.got.append(data)

    def resize(self, cols: int, rows: int) -> None:
        pass

    def signal(self, name: str) -> None:
        self.got.append(("signal", name))

    def send_break(self, msec: int) -> None:
        self.got.append(("break", msec))

    def eof(self) -> None:
        self.got.append("eof")

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def pending(self) -> int:
        return 0

    def echo_known(self) -> bool | None:
        return self.echo
