"""Input paused (a moderated session without its moderators, bastion/terminal/relay.py): every kind of input the
client can send -- keys, an SSH signal, a break, the end of input -- is dropped and reported, never delivered and
never queued for later; what was typed while the opening was held can be discarded."""

from __future__ import annotations

from bastion.terminal.relay import Relay
from tests.support.relay_fakes import FakeChannel, FakeEndpoint


def test_every_kind_of_input_is_dropped_while_paused_and_flows_again_after() -> None:
    relay, ep, dropped = Relay(FakeChannel()), FakeEndpoint(), []
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
    relay, ep = Relay(FakeChannel()), FakeEndpoint()
    relay.hold()
    relay.from_client(b"typed while nobody watched\r")
    relay.attach(ep, None)
    relay.discard_held()
    relay.release()
    relay.from_client(b"after\r")
    assert ep.got == [b"after\r"]
