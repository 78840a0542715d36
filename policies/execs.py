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
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from policies.capabilities import EDITOR_NAME, EDITORS, INFO_ONLY, INTERPRETERS, SHELLS, VERSION_V, VERSIONED, base_name
from policies.engine import Action, Decision, PolicySet, Rule, judge_command
from policies.shell import ShellParseError, SimpleCommand, parse_line

LOADERS = ("ld-linux*.so*", "ld-*.so*", "ld.so", "ld-musl-*")
UNKNOWN_RULE = "guard-unknown-program"
LOADER_RULE = "guard-loader"
CODE_RULE = "guard-interpreter"
# one file, many programs: the applet is argv[0]'s name, or the first argument when run by the file's own name;
# their shells run applets (rm among them) inside the same process, without an exec
MULTICALL = frozenset({"busybox", "toybox"})
MAX_CHAIN = 8
# variables that make the dynamic loader (or libc) map code of the session's choosing into any program, where no
# exec shows it; reported by the guard only when the session set or changed them
LOADER_ENV = frozenset({"LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "GCONV_PATH", "OPENSSL_CONF",
                        "OPENSSL_ENGINES", "OPENSSL_MODULES"})
# programs of INTERPRETERS whose every effect on the host is an exec the guard sees (make's recipes, a client's
# `\!`), or is remote (a database or file-transfer client): judged by name like any program
EXEC_VISIBLE = frozenset({"make", "gmake", "bmake", "pmake", "ninja", "psql", "mysql", "mariadb", "sqlcmd", "mongo",
                          "mongosh", "redis-cli", "cqlsh", "clickhouse-client", "sftp", "ftp", "lftp", "tftp",
                          "telnet", "smbclient", "ed", "red", "mail", "mailx", "s-nail", "mutt", "neomutt", "ispell",
                          "dc", "m4", "perldoc", "ri", "gnuplot"})
# a system script run by its interpreter, with only these flags before it, runs the system's code: python needs
# -I, or -s with -E (no user site-packages, whose .pth files run code; no PYTHONPATH); perl reads no code from the
# user's files unless told to (PERL5LIB, PERL5OPT, -I, -M)
SCRIPT_FLAGS = {"python": re.compile(r"-[BbdEIOqsSuvx]+"), "pypy": re.compile(r"-[BbdEIOqsSuvx]+"),
                "perl": re.compile(r"-[wWXTtUs]+")}
# flags that give code another way than a script (or take a value): no script operand follows them
CODE_FLAGS = {"python": frozenset("cmWXiQ"), "pypy": frozenset("cmWXiQ"), "perl": frozenset("eEMmIxdiDlC")}
SHELL_CODE_FLAGS = frozenset("coOsDi")
ANY_CODE_FLAGS = frozenset("ceEpPrRImMxXoOsSdDlCWiA")
CODE_ENV = {"python": ("PYTHON",), "pypy": ("PYTHON",), "perl": ("PERL5", "PERLLIB", "PERL_")}

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
    env: tuple[str, ...] = ()
    trusted_args: tuple[int, ...] = ()

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
        if "env" not in raw or "trusted_args" not in raw:  # a guard that does not say cannot be judged
            raise ExecError("env or trusted_args missing")
        scripts = raw["trusted_args"]
        if not isinstance(scripts, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in scripts):
            raise ExecError("trusted_args is not a list of integers")
        return cls(exe=exe, argv=strs("argv"), cwd=cwd, chain=strs("chain")[:MAX_CHAIN],
                   names=tuple(dict.fromkeys((base, *names))), trusted=raw.get("trusted") is True, copy_of=copy_of,
                   first=raw.get("first") is True, env=strs("env"), trusted_args=tuple(scripts))

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


def _flags_and_script(fam: str, args: Sequence[str]) -> tuple[str, int | None]:
    """The flags before an interpreter's (or a shell's) script operand, and the operand's index in ``args``; None
    when it runs code given another way (``-c``, ``-e``, ``-m``, its input) or an option takes a value."""
    code = CODE_FLAGS.get(fam, SHELL_CODE_FLAGS if fam in SHELLS else ANY_CODE_FLAGS)
    flags = ""
    for i, a in enumerate(args):
        if a == "--":
            return flags, (i + 1 if i + 1 < len(args) else None)
        if a.startswith("-") and a != "-" or fam in SHELLS and a.startswith("+"):
            if a.startswith("--") or not a[1:].isalpha() or set(a[1:]) & code:
                return flags, None
            flags += a[1:]
            continue
        return flags, i
    return flags, None


def script_of(ev: Exec, names: Sequence[str]) -> tuple[str, tuple[str, ...]] | None:
    """The script an interpreter or a shell was started on (by the kernel's ``#!`` or by hand), as a program name
    and its arguments: ``/usr/bin/python3 -Es /usr/bin/lsb_release -a`` is ``lsb_release -a`` too, so that a rule
    naming a script tool holds it although its exec is the interpreter's."""
    args = ev.argv[1:]
    for name in names:
        fam = base_name(name)
        if fam in INTERPRETERS or name in INTERPRETERS or VERSIONED.match(name):
            _, at = _flags_and_script(fam, args)
            if at is not None:
                script = args[at].rsplit("/", 1)[-1]
                return (script, tuple(args[at + 1:])) if script else None
    return None


def applet_of(ev: Exec, names: Sequence[str]) -> tuple[str, tuple[str, ...]] | None:
    """``busybox rm f`` is ``rm f``: the applet a multi-call binary runs when started by its own name."""
    if not MULTICALL & set(names) or not ev.argv:
        return None
    argv0 = ev.argv[0].rsplit("/", 1)[-1].lstrip("-")
    if argv0 in MULTICALL and len(ev.argv) > 1 and not ev.argv[1].startswith("-"):
        return ev.argv[1].rsplit("/", 1)[-1], tuple(ev.argv[2:])
    return None


def _system_script(fam: str, ev: Exec) -> bool:
    """``ev`` runs a trusted system script by its interpreter, with flags that keep the user's code out."""
    if fam not in SCRIPT_FLAGS:
        return False
    args = ev.argv[1:]
    flags, at = _flags_and_script(fam, args)
    if at is None or at + 1 not in ev.trusted_args:
        return False
    if not all(SCRIPT_FLAGS[fam].fullmatch(a) for a in args[:at] if a != "--"):
        return False
    if any(n.startswith(CODE_ENV[fam]) for n in ev.env):
        return False
    return fam == "perl" or "I" in flags or ("s" in flags and "E" in flags)


def runs_own_code(ev: Exec, names: Sequence[str]) -> tuple[str, str] | None:
    """(name, why) when a program of ``ev`` acts on the host by running code, not by exec'ing programs (an
    interpreter's ``os.remove``): what the guard cannot see, short of a system script or a question for its
    version. Shells are not among them (what they run are execs; their own writes are redirections) nor editors
    (they change files by design, whatever their flags: a policy that cares names them)."""
    args = ev.argv[1:]
    if MULTICALL & set(names):
        shell = next((n for n in names if n in SHELLS), None)
        if shell is not None:
            return shell, f"{shown(shell)} of a multi-call binary runs its applets (rm among them) without an exec"
    for name in names:
        fam = base_name(name)
        if fam in SHELLS or name in SHELLS or fam in EXEC_VISIBLE or name in EXEC_VISIBLE:
            continue
        if name in EDITORS or EDITOR_NAME.match(name):
            continue  # an editor changes files itself whatever its flags (`:w`, `delete()`): judged by its name
        if not (fam in INTERPRETERS or name in INTERPRETERS or VERSIONED.match(name)):
            continue
        if args and all(a in INFO_ONLY or (a == "-v" and fam in VERSION_V) for a in args):
            continue
        if _system_script(fam, ev):
            continue
        return name, f"{shown(name)} runs code (a string, a file of the session's or its input)"
    return None


def _explicit(rule: Rule | None, name: str) -> bool:
    """``rule`` names ``name`` (not merely ``*``): the policy's author decided about this very program."""
    return rule is not None and any(p != "*" and fnmatch.fnmatchcase(name, p) for p in rule.programs)


def evaluate_exec(policy: PolicySet, ev: Exec, *, groups: Iterable[str], resource: str) -> Decision:
    """Decide one exec for a user (``groups``) on ``resource``: the first matching rule under each of the
    program's names (and its script's, for an interpreter), the strictest over the names; the policy's default when
    none matches; the built-in refusals of unknown programs, of the dynamic loader (and of loader variables), and of
    interpreters running code the guard cannot see, before any of that can allow."""
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
    if MULTICALL & set(names) and ev.argv:
        # busybox runs the applet argv[0] names (the caller's choice, but so is busybox's): its other names in the
        # system directories (every applet's symlink) are not what this exec does
        argv0 = ev.argv[0].rsplit("/", 1)[-1].lstrip("-")
        names = tuple(dict.fromkeys(n for n in (ev.exe.rsplit("/", 1)[-1], argv0, *MULTICALL.intersection(names))
                                    if n))
    commands = [SimpleCommand(program=name, args=args, argv=(name, *args)) for name in names]
    applet = applet_of(ev, names)
    if applet is not None:
        commands.append(SimpleCommand(program=applet[0], args=applet[1], argv=(applet[0], *applet[1])))
        names = (*names, applet[0])
    script = script_of(ev, names)
    if script is not None:
        commands.append(SimpleCommand(program=script[0], args=script[1], argv=(script[0], *script[1])))
        why.append(f"runs the script {shown(script[0])}")
    named = False
    for cmd in commands:
        action, rule, reason = judge_command(policy, applicable, cmd, why, shown(cmd.program))
        named = named or _explicit(rule, cmd.program)
        if best is None or action > best[0]:
            best = (action, rule, reason)
    assert best is not None
    loader_env = sorted(LOADER_ENV.intersection(ev.env))
    code = runs_own_code(ev, names)
    if any(fnmatch.fnmatchcase(n, p) for n in names for p in LOADERS) or loader_env:
        strict, model = policy.strictest(gs, resource)
        what = (f"{', '.join(loader_env)} makes the dynamic loader map code" if loader_env
                else "the dynamic loader runs a program")
        why.append(f"{what} without an exec -> strictest ({strict.label})")
        if strict > best[0]:
            best = (strict, _rule_like(LOADER_RULE, strict, model, f"{what} the guard cannot see (no exec of its "
                                       "own); treated as strictly as the policy allows"), "")
    elif not ev.known and best[0] < Action.REQUIRE_APPROVAL:
        model = next((r for r in applicable if r.action == Action.REQUIRE_APPROVAL), None)
        action = Action.REQUIRE_APPROVAL if model is not None else Action.BLOCK
        reason = (f"{shown(ev.exe)} is neither a system program nor a copy of one: the guard cannot know what it does"
                  + ("; it needs a reviewer" if model is not None else ", and this policy names no approvers"))
        why.append(f"unknown executable -> {action.label}")
        best = (action, _rule_like(UNKNOWN_RULE, action, model, reason), "")
    elif code is not None and not named:
        strict, model = policy.strictest(gs, resource)
        why.append(f"{code[1]} -> strictest ({strict.label}), as no rule names {shown(code[0])}")
        if strict > best[0]:
            best = (strict, _rule_like(CODE_RULE, strict, model, f"{code[1]}: what it does without an exec the "
                                       "guard cannot see; treated as strictly as the policy allows (a rule naming "
                                       "the program decides instead)"), "")
    action, rule, reason = best
    reason = reason or (rule.reason if rule is not None else "")
    return Decision(action, rule.name if rule else None, reason, text, tuple(why),
                    rule.approver_roles if rule else (), rule.approvals if rule else 0,
                    rule.timeout if rule else 0.0, tuple(dict.fromkeys(c.program for c in commands)))


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
