"""Input paused (a moderated session without its moderators, bastion/terminal/relay.py): every kind of input the
client can send -- keys, an SSH signal, a break, the end of input -- is dropped and reported, never delivered and
never queued for later; what was typed while the opening was held can be discarded."""

from __future__ import annotations

from bastion.terminal.relay import Relay


class Chan:
    def write(self, data: bytes, datatype: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Ep:
    def __init__(self) -> None:
        self.got: list[object] = []

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
        pass

    def resume_reading(self) -> None:
        pass

    def pending(self) -> int:
        return 0

    def echo_known(self) -> bool | None:
        return True


def test_every_kind_of_input_is_dropped_while_paused_and_flows_again_after() -> None:
    relay, ep, dropped = Relay(Chan()), Ep(), []
    relay.attach(ep, None)
    relay.release()
    relay.input_paused = lambda: dropped.append(1)
    relay.from_client(b"rm -rf /\r")
    relay.signal("INT")
    relay.send_break(500)
    relay.eof()
    assert ep.got == [] and len(dropped) == 4
    relay.input_paused = None
    relay.from_client(b"ls\r")
    relay.eof()
    assert ep.got == [b"ls\r", "eof"]  # nothing of what was dropped comes back


def test_keys_held_during_the_opening_can_be_discarded() -> None:
    relay, ep = Relay(Chan()), Ep()
    relay.hold()
    relay.from_client(b"typed while nobody watched\r")
    relay.attach(ep, None)
    relay.discard_held()
    relay.release()
    relay.from_client(b"after\r")
    assert ep.got == [b"after\r"]
