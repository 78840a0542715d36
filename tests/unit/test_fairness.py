"""Bulk output waits its turn, one chunk per loop turn, while small output (echoes, prompts) goes at once; nothing is
reordered or lost; and recordings written by the background writer are byte for byte what the direct writer
writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.terminal.fairness import BULK_CHUNK
from bastion.terminal.relay import Relay, Tee
from recorder.asciicast import CastWriter, read_cast
from tests.support.relay_fakes import FakeChannel, FakeEndpoint


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_bulk_goes_one_chunk_per_turn_and_echoes_go_at_once(tmp_path: Path) -> None:
    bulk_chan, echo_chan = FakeChannel(), FakeChannel()
    bulk, echo = Relay(bulk_chan), Relay(echo_chan)
    bulk_ep, echo_ep = FakeEndpoint(echo=None), FakeEndpoint(echo=None)
    bulk.attach(bulk_ep, None)
    echo.attach(echo_ep, None)
    chunks = [bytes([65 + i]) * (BULK_CHUNK * 8) for i in range(5)]
    for c in chunks:
        bulk.output(bulk_ep, c)
    assert bulk_chan.got == [] and bulk_ep.paused and bulk_ep.pauses == 1  # queued, and its source is not read
    echo.output(echo_ep, b"a")
    assert echo_chan.got == [b"a"] and not echo_ep.paused  # a keystroke's echo does not wait for the bulk
    await turns(1)
    assert len(bulk_chan.got) == 1
    bulk.output(bulk_ep, b"tail")  # small, but behind bulk of its own session: it keeps its place
    await turns(10)
    assert bulk_chan.got == [*chunks, b"tail"] and not bulk_ep.paused


async def test_detach_delivers_what_waits_before_the_recording_closes(tmp_path: Path) -> None:
    chan = FakeChannel()
    relay = Relay(chan)
    ep = FakeEndpoint(echo=None)
    writer = CastWriter(tmp_path / "x.cast", 80, 24, title="x")
    relay.attach(ep, Tee(writer))
    big = b"x" * (BULK_CHUNK * 4)
    relay.output(ep, big)
    relay.output(ep, b"end\r\n")
    relay.detach()
    assert b"".join(chan.got) == big + b"end\r\n" and not ep.paused
    writer.close()
    recorded = "".join(e.data for e in read_cast(tmp_path / "x.cast").events if e.code == "o")
    assert recorded == (big + b"end\r\n").decode()
    await turns(3)  # the scheduler's turn finds nothing left: no duplicate
    assert b"".join(chan.got) == big + b"end\r\n"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("oimr"), st.text(max_size=300)), max_size=60))
def test_background_writer_writes_what_the_direct_writer_writes(tmp_path_factory: pytest.TempPathFactory,
                                                                events: list[tuple[str, str]]) -> None:
    d = tmp_path_factory.mktemp("bg")
    outs = []
    for background in (False, True):
        w = CastWriter(d / f"{background}.cast", 80, 24, title="t", timestamp=0, clock=lambda: 0.0,
                       background=background)
        for code, text in events:
            if code == "o":
                w.output(text.encode())
            elif code == "i":
                w.input(text.encode())
            elif code == "m":
                w.marker(text)
            else:
                w.resize(100, 30)
        outs.append((w.close(), (d / f"{background}.cast").read_bytes()))
    assert outs[0] == outs[1]


def test_a_reader_can_wait_for_what_was_written(tmp_path: Path) -> None:
    w = CastWriter(tmp_path / "y.cast", 80, 24, title="y", background=True)
    for i in range(200):
        w.output(f"line {i}\r\n".encode())
    upto = w.bytes_written
    assert w.wait_written(upto, 10)
    assert (tmp_path / "y.cast").stat().st_size >= upto
    w.close()
