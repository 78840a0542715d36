"""Programs as the kernel runs them: the judgement of one exec reported by bastion-guard (docs/guard.md).

A typed line is text a shell will interpret; an exec is a fact: this file, with this argv, is about to run. So the
rules that judge typed lines (``programs``, ``args``, ``command``, ``groups``, ``resources``) judge an exec
directly, without the shell parser's wrappers and opaque constructs: what a wrapper, an alias, a script or
``awk system()`` starts is an exec of its own, judged when it happens. What stays unknowable is refused: a program
that is neither a system program nor a copy of one, and the dynamic loader run as a program.

Pure and I/O-free, like the rest of ``policies``.
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from policies.engine import Action, Decision, PolicySet, Rule, judge_command
from policies.shell import ShellParseError, SimpleCommand, parse_line

LOADERS = ("ld-linux*.so*", "ld-*.so*", "ld.so", "ld-musl-*")
UNKNOWN_RULE = "guard-unknown-program"
LOADER_RULE = "guard-loader"
MAX_CHAIN = 8


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: str) -> str:
    """`text` with every character that is not printable written as an escape (\\n, \\x1b, \\u202e; an
    undecodable byte of a path or argv, carried as a lone surrogate, as \\xff): what a program's name or argv would
    draw on a terminal (erase a line, move the cursor, reverse the text) is shown instead of done."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte it stands for
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return "".join(out)


def shown(word: str) -> str:
    """One word (a path, an argument) as a shell would read it back: quoted when needed, and as $'...' with
    escapes when it holds anything not printable, so that a reviewer reads what runs, not what it draws."""
    if word.isprintable():
        return shlex.quote(word)
    return "$'" + visible(word.replace("\\", "\\\\").replace("'", "\\'")) + "'"


class ExecError(ValueError):
    """An exec report that does not have the shape of one (a guard bug or a forged frame): refused."""


@dataclass(frozen=True)
class Exec:
    """One exec, as bastion-guard saw it at the exec stop (see docs/guard.md for where each field comes from)."""

    exe: str
    argv: tuple[str, ...]
    cwd: str = ""
    chain: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    trusted: bool = False
    copy_of: str | None = None
    first: bool = False

    @classmethod
    def from_report(cls, raw: Mapping[str, object]) -> Exec:
        """An :class:`Exec` from the guard's ``X`` frame; :class:`ExecError` when a field is missing or mistyped."""
        def strs(key: str) -> tuple[str, ...]:
            v = raw.get(key, [])
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise ExecError(f"{key} is not a list of strings")
            return tuple(v)

        exe, cwd, copy_of = raw.get("exe"), raw.get("cwd", ""), raw.get("copy_of")
        if not isinstance(exe, str) or not exe or not isinstance(cwd, str):
            raise ExecError("exe or cwd missing")
        if copy_of is not None and not isinstance(copy_of, str):
            raise ExecError("copy_of is not a string")
        names = strs("names")
        base = exe.rsplit("/", 1)[-1]
        return cls(exe=exe, argv=strs("argv"), cwd=cwd, chain=strs("chain")[:MAX_CHAIN],
                   names=tuple(dict.fromkeys((base, *names))), trusted=raw.get("trusted") is True, copy_of=copy_of,
                   first=raw.get("first") is True)

    @property
    def known(self) -> bool:
        """A system program, or a byte-for-byte copy of one: something whose behaviour its names describe."""
        return self.trusted or self.copy_of is not None

    def describe(self) -> str:
        """``/usr/bin/rm rm -f x [by bash ← sshd]``: the marker's and the reviewer's text (every word :func:`shown`:
        a newline, a terminal escape or an invisible character in a name or an argument is written out, not done)."""
        argv = " ".join(shown(a) for a in self.argv) if self.argv else "(no argv)"
        copy = f" (a copy of {shown(self.copy_of)})" if self.copy_of else ""
        by = f" [by {' ← '.join(shown(c) for c in self.chain)}]" if self.chain else ""
        return f"{shown(self.exe)}{copy} {argv}{by}"


def _rule_like(name: str, action: Action, model: Rule | None, reason: str) -> Rule:
    """A built-in rule, borrowing the approvers (and timeout) of ``model`` when it holds for approval."""
    if model is None:
        return Rule(name=name, action=action, reason=reason)
    return replace(model, name=name, action=action, reason=reason, programs=(), args=(), command=None)


def evaluate_exec(policy: PolicySet, ev: Exec, *, groups: Iterable[str], resource: str) -> Decision:
    """Decide one exec for a user (``groups``) on ``resource``: the first matching rule under each of the
    program's names, the strictest over the names; the policy's default when none matches; the built-in
    refusals of unknown programs and of the dynamic loader before any of that can allow."""
    gs = frozenset(groups)
    text = ev.describe()
    names = tuple(dict.fromkeys(n for n in (ev.exe.rsplit("/", 1)[-1], *ev.names) if n))
    if ev.first:
        return Decision(Action.ALLOW, None, "the session's own program (judged when the session opened)", text,
                        ("first exec of the session",), programs=names)
    applicable = policy.applicable("shell", gs, resource)
    args = ev.argv[1:]
    why: list[str] = []
    best: tuple[Action, Rule | None, str] | None = None
    for name in names:
        cmd = SimpleCommand(program=name, args=args, argv=(name, *args))
        action, rule, reason = judge_command(policy, applicable, cmd, why, shown(name))
        if best is None or action > best[0]:
            best = (action, rule, reason)
    assert best is not None
    if any(fnmatch.fnmatchcase(n, p) for n in names for p in LOADERS):
        strict, model = policy.strictest(gs, resource)
        why.append(f"the dynamic loader runs a program without an exec -> strictest ({strict.label})")
        if strict > best[0]:
            best = (strict, _rule_like(LOADER_RULE, strict, model, "the dynamic loader runs a program the guard "
                                       "cannot see (no exec of its own); treated as strictly as the policy allows"),
                    "")
    elif not ev.known and best[0] < Action.REQUIRE_APPROVAL:
        model = next((r for r in applicable if r.action == Action.REQUIRE_APPROVAL), None)
        action = Action.REQUIRE_APPROVAL if model is not None else Action.BLOCK
        reason = (f"{shown(ev.exe)} is neither a system program nor a copy of one: the guard cannot know what it does"
                  + ("; it needs a reviewer" if model is not None else ", and this policy names no approvers"))
        why.append(f"unknown executable -> {action.label}")
        best = (action, _rule_like(UNKNOWN_RULE, action, model, reason), "")
    action, rule, reason = best
    reason = reason or (rule.reason if rule is not None else "")
    return Decision(action, rule.name if rule else None, reason, text, tuple(why),
                    rule.approver_roles if rule else (), rule.approvals if rule else 0,
                    rule.timeout if rule else 0.0, names)


def approved_commands(text: str) -> tuple[SimpleCommand, ...]:
    """The simple commands of an exec-form command line a reviewer approved before the session opened: their execs
    are what was approved, and are not held a second time. Nothing when the line does not parse."""
    try:
        return tuple(parse_line(text, terminal=False).commands)
    except ShellParseError:
        return ()


def is_approved(ev: Exec, approved: Sequence[SimpleCommand]) -> bool:
    """``ev`` is one of the approved commands: the same program (by a name of its file) with the same arguments,
    or any arguments where the approved line's could not be known (a variable, a glob: the reviewer saw those).

    The approved line names system programs: an unknown executable is never one of them (a ``./chmod`` of the
    operator's is not the chmod the reviewer read), and argv[0], which the caller chooses (``exec -a chmod ./y``),
    is not a name of the file unless the file has it too."""
    if not ev.known:
        return False
    argv0 = ev.argv[0].rsplit("/", 1)[-1].lstrip("-") if ev.argv else ""
    own = {ev.exe.rsplit("/", 1)[-1], (ev.copy_of or "").rsplit("/", 1)[-1]}
    names = own | {n for n in ev.names if n != argv0}
    return any(cmd.program in names and (cmd.args_open or cmd.args == ev.argv[1:]) for cmd in approved)


def judge_with_approval(d: Decision, ev: Exec, approved: Sequence[SimpleCommand], request: str) -> Decision:
    """``d``, unless it would hold an exec the reviewer already approved as part of the session's command."""
    if d.action != Action.REQUIRE_APPROVAL or not is_approved(ev, approved):
        return d
    return replace(d, action=Action.ALLOW, reason=f"approved with the session's command ({request})",
                   explanation=(*d.explanation, "part of the approved command -> allow"))
