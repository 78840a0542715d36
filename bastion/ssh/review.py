"""Review from any SSH client: ``ssh bastion review``, ``ssh bastion approve N``, ``ssh bastion deny N --reason …``.

A reviewer on a phone, or in a terminal without the menu, lists the requests they may decide and decides them with
the same checks as the queue screen (their own grants, no self-approval, N distinct approvers, expiry: all in
:class:`~bastion.oversight.approvals.ApprovalService`), and the same audit events. These words are reserved: no
resource may be named like them (:data:`~bastion.config.resources.RESERVED_NAMES`, checked when the config
loads), so ``ssh bastion review`` can never mean a resource.

Texts come from the store's request (what the queue screen shows: never input typed with echo off), and every
character that would act on a terminal is written out (:func:`policies.execs.visible`).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass
from datetime import datetime

from bastion.config.resources import RESERVED_NAMES
from bastion.context import ConnectionContext
from bastion.oversight.approvals import ApprovalService
from bastion.store.approvals import DecisionRefused
from bastion.store.rows import RequestRecord
from policies.execs import visible

# what an exec request's first word may be besides a resource (RESERVED_NAMES: no resource is named so)
REVIEW_WORDS = frozenset({"review", "approve", "deny"})
assert REVIEW_WORDS <= RESERVED_NAMES
USAGE = """\
bastion: review from any SSH client
  ssh {host} review [--json]               the requests you may decide
  ssh {host} review N                      one request in full (with -t: in the queue screen)
  ssh {host} approve N [--reason TEXT]     approve request N
  ssh {host} deny N --reason TEXT          deny request N (a reason is required)
"""


MAX_LINES = 20  # of a request's text in the list; `review N` shows it whole


class UsageError(ValueError):
    """The command line of a review command is not one of :data:`USAGE`'s forms."""


@dataclass(frozen=True)
class ReviewCommand:
    """One parsed review command: ``word`` (review, approve, deny), the request (None: the whole queue), the reason,
    and whether JSON was asked for."""

    word: str
    request: int | None = None
    reason: str = ""
    json: bool = False


REASON = re.compile(r"(?:^|\s)(?:--reason|-r)(?:=|\s+|$)")


def parse(word: str, rest: str | None) -> ReviewCommand:
    """``rest`` (what follows the word) by the grammar of :data:`USAGE`; any option or operand it does not know is an
    error naming it (nothing is guessed).

    The reason is everything after ``--reason`` (or ``-r``), verbatim: ssh joins its arguments with spaces, so
    ``ssh bastion deny 5 --reason "don't, not now"`` arrives as ``deny 5 --reason don't, not now``, which no
    shell-word splitting would survive. One pair of quotes around the whole reason is removed."""
    rest = rest or ""
    reason: str | None = None
    m = REASON.search(rest)
    if m is not None and word != "review":
        rest, reason = rest[:m.start()], rest[m.end():].strip()
        if len(reason) >= 2 and reason[0] == reason[-1] and reason[0] in "'\"":
            reason = reason[1:-1].strip()
        if not reason and m.group().rstrip().endswith(("--reason", "-r")):
            raise UsageError(f"{m.group().strip()} needs a value")
    try:
        args = shlex.split(rest)
    except ValueError as e:
        raise UsageError(f"cannot split the arguments: {e}") from None
    request: int | None = None
    as_json = False
    for a in args:
        if a == "--json" and word == "review":
            as_json = True
        elif a.startswith("-") or request is not None:
            raise UsageError(f"{word}: unexpected {a!r}")
        elif not re.fullmatch(r"[0-9]{1,12}", a):  # ASCII digits only: "１" (fullwidth) is not 1
            raise UsageError(f"{word}: {a!r} is not a request number")
        else:
            request = int(a)
    if word != "review" and request is None:
        raise UsageError(f"{word}: which request? ({word} N)")
    if word == "deny" and not reason:
        raise UsageError("deny: a reason is required (--reason TEXT): the requester reads it")
    if reason and not reason.isprintable():  # it is shown on the requester's terminal: no escapes, no newlines
        raise UsageError(f"{word}: the reason may not contain control characters ({visible(reason)[:60]})")
    if reason and len(reason) > 500:
        raise UsageError(f"{word}: the reason is longer than 500 characters")
    return ReviewCommand(word, request, reason or "", as_json)


def _ago(when: datetime, now: float) -> str:
    secs = max(0, int(now - when.timestamp()))
    return f"{secs}s" if secs < 120 else f"{secs // 60}m" if secs < 7200 else f"{secs // 3600}h"


def approvals(req: RequestRecord) -> str:
    """``k/N``: approvals given of those needed."""
    return f"{sum(1 for d in req.decisions if d.approve)}/{req.approvals_needed}"


def describe(req: RequestRecord, host: str, now: float | None = None, *, whole: bool = False) -> str:
    """A request as a reviewer reads it in a terminal, with the lines that decide it: its whole text (``whole``),
    or in a list its first :data:`MAX_LINES` lines and how many more there are (never cut silently)."""
    now = time.time() if now is None else now
    expires = int(req.expires_at.timestamp() - now)
    state = (f"expires in {max(0, expires) // 60}m{max(0, expires) % 60:02d}s" if req.status == "pending"
             else f"{req.status}: {visible(req.status_reason)}")
    lines = [f"#{req.id}  {visible(req.requester)} → {visible(req.resource)}  rule {visible(req.rule)}  "
             f"approvals {approvals(req)}  age {_ago(req.created_at, now)}  {state}"]
    text = req.text.split("\n")  # newlines only: every other separator is written out by visible()
    lines += [f"    {visible(line)}" for line in (text if whole else text[:MAX_LINES])]
    if len(text) > MAX_LINES and not whole:
        lines.append(f"    … {len(text) - MAX_LINES} more line(s): ssh {host} review {req.id}")
    if req.reason:
        lines.append(f"    why held: {visible(req.reason)}")
    for d in req.decisions:
        lines.append(f"    {'approved' if d.approve else 'denied'} by {visible(d.reviewer)}"
                     + (f": {visible(d.reason)}" if d.reason else ""))
    if req.status == "pending":
        lines.append(f"    ssh {host} approve {req.id}    ssh {host} deny {req.id} --reason \"…\"")
    return "\n".join(lines) + "\n"


class ReviewCommands:
    """The review commands for one reviewer's connection: given the approval service, the reviewer's context and
    the server's name for the hints -- not the daemon."""

    def __init__(self, approvals: ApprovalService, ctx: ConnectionContext, host: str) -> None:
        self.approvals, self.ctx, self.host = approvals, ctx, host

    async def run(self, cmd: ReviewCommand) -> tuple[int, str, str]:
        """(exit status, stdout text, stderr text)."""
        if not self.ctx.grants.review:
            return 1, "", "bastion: you review no resource (ask an admin for a reviewer role)\n"
        if cmd.word == "review":
            return await self._review(cmd)
        assert cmd.request is not None
        try:
            req = await self.approvals.decide(self.ctx, cmd.request, cmd.word == "approve", cmd.reason)
        except DecisionRefused as e:
            return 1, "", f"bastion: {cmd.word} #{cmd.request}: refused: {e}\n"
        if req.status == "pending":
            said = (f"#{req.id}: your approval is recorded ({approvals(req)}); it waits for "
                    f"{req.approvals_needed - sum(1 for d in req.decisions if d.approve)} more\n")
        else:
            said = f"#{req.id}: {req.status}" + (f" ({visible(req.status_reason)})" if req.status_reason else "") + "\n"
        return 0, said, ""

    async def _review(self, cmd: ReviewCommand) -> tuple[int, str, str]:
        pending, recent = await self.approvals.queue(self.ctx)
        if cmd.request is not None:
            req = next((r for r in (*pending, *recent) if r.id == cmd.request), None)
            if req is None:  # not one of theirs to see: whether it exists is not said
                return 1, "", f"bastion: review #{cmd.request}: no such request among those you may decide\n"
            if cmd.json:
                return 0, json.dumps(req.as_dict()) + "\n", ""
            return 0, describe(req, self.host, whole=True), ""
        if cmd.json:
            return 0, json.dumps({"pending": [r.as_dict() for r in pending]}) + "\n", ""
        if not pending:
            return 0, "Nothing waits for you.\n", ""
        now = time.time()
        return 0, "".join(describe(r, self.host, now) for r in pending), ""
