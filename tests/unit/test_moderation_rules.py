"""Who moderates a session and what happens when they are too few (bastion/oversight/moderation.py), without a
daemon: the counting, the staleness of moderators in other processes, and the enforcer's pause, resume and end."""

from __future__ import annotations

import asyncio
import math
import time

from hypothesis import given
from hypothesis import strategies as st

from bastion.oversight.moderation import STALE, Enforcer, Moderation, may_moderate


def test_who_may_moderate() -> None:
    assert may_moderate(["reviewers"], "bob", ["reviewers", "ops"], "alice")
    assert not may_moderate(["reviewers"], "alice", ["reviewers"], "alice")  # never her own moderator
    assert not may_moderate(["reviewers"], "eve", ["auditors"], "alice")


@given(events=st.lists(st.tuples(st.sampled_from(["join", "leave", "local"]),
                                 st.sampled_from(["bob", "dave", "erin"])), max_size=20),
       count=st.integers(min_value=1, max_value=3))
def test_the_count_is_the_set_of_those_watching(events: list[tuple[str, str]], count: int) -> None:
    m = Moderation("alice", ("reviewers",), count, grace=1, wait=1)
    watching: set[str] = set()
    for what, who in events:
        if what == "leave":
            m.leave(who)
            watching.discard(who)
        else:
            m.join(who, local=what == "local")
            watching.add(who)
        assert set(m.watching()) == watching and m.satisfied == (len(watching) >= count)
    assert set(m.ever) >= watching


def test_a_moderator_in_another_process_who_stops_beating_no_longer_counts() -> None:
    m = Moderation("alice", ("reviewers",), 1, grace=1, wait=1)
    m.join("bob")
    m.join("dave", local=True)
    now = time.monotonic()
    assert m.expire(now + STALE - 0.5) == []
    assert m.expire(now + STALE + 0.5) == ["bob"]  # dave is in this process: he counts until he leaves
    assert m.watching() == ["dave"] and m.present["dave"] == math.inf


def test_the_enforcer_pauses_resumes_and_ends() -> None:
    async def scenario() -> list[str]:
        m = Moderation("alice", ("reviewers",), 1, grace=0.3, wait=1)
        m.join("bob", local=True)
        log: list[str] = []
        paused: list[bool] = []
        ended = asyncio.Event()

        def end(why: str) -> None:
            log.append(f"end: {why}")
            ended.set()

        enforcer = Enforcer(m, say=lambda t: log.append(f"say: {t}"), mark=lambda t: log.append(f"mark: {t}"),
                            pause=lambda f: paused.append(f is not None), end=end)
        task = asyncio.ensure_future(enforcer.run())
        await asyncio.sleep(0)
        m.leave("bob")
        while paused != [True]:
            await asyncio.sleep(0.01)
        m.join("dave", local=True)  # back within the grace period
        while paused != [True, False]:
            await asyncio.sleep(0.01)
        m.leave("dave")
        await asyncio.wait_for(ended.wait(), 10)
        await task
        assert paused == [True, False, True]
        return log

    log = asyncio.run(scenario())
    marks = [x for x in log if x.startswith("mark: ")]
    assert marks == ["mark: input paused: 0 of 1 moderator(s) watching", "mark: input resumed: moderated by dave",
                     "mark: input paused: 0 of 1 moderator(s) watching", "mark: session ended: no moderator for 0.3s"]
    assert log[-1] == "end: no moderator watched for 0.3s"
