"""Parse a shell command line the way a POSIX shell would, far enough to know which programs it runs.

This is a classifier, not a shell: it does quote removal and splits pipelines, lists, subshells and compound
commands into simple commands, strips wrappers (``sudo``, ``env``, ``command``, ``nohup``, ``xargs`` ...) and
path prefixes to find the effective program, and reports every construct it cannot see through (command
substitution, ``eval``, variables/quotes/globs in command position, ``sh -c``, pipes into interpreters, here-docs,
function and alias definitions). Callers treat those as *opaque* and fail closed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from policies.capabilities import (
    INTERPRETERS,
    SENSITIVE_FILE,
    base_name,
    env_problem,
    inspect,
    path_problem,
    runs_commands,
)
from policies.history import history_expansions
from policies.wrappers import TIME_KEYWORD, WRAPPERS, unwrap

OPERATORS = ("&&", "||", ";;", "|&", ">>", "<<<", "<<", "<>", ">|", "&>>", "&>", "<&", ">&", "|", "&", ";",
             "(", ")", "<", ">", "\n")
OPERATOR_RE = re.compile("|".join(re.escape(o) for o in OPERATORS))
OPERATOR_START = frozenset(o[0] for o in OPERATORS)
PLAIN_RE = re.compile(r"[^\s;&|()<>\\'\"`$*?\[{]+")
SEPARATORS = {"&&", "||", "|", "|&", "&", ";", "\n", "(", ")", ";;"}
REDIRECTS = {">>", "<<<", "<<", "<>", ">|", "&>>", "&>", "<&", ">&", "<", ">"}
RESERVED_PREFIX = {"if", "then", "else", "elif", "do", "while", "until", "!", "{"}
RESERVED_END = {"fi", "done", "}", "esac"}
OPAQUE_PROGRAMS = {"eval": "eval runs a string", "source": "source runs a file", ".": "source runs a file",
                   "alias": "alias definition", "function": "function definition", "trap": "trap runs code later",
                   "case": "case statement", "coproc": "coproc", "select": "select loop",
                   "fc": "fc re-runs history", "enable": "enable loads builtins",
                   "hash": "hash can map a name to another program", "complete": "complete -C runs a command",
                   "compgen": "compgen -C runs a command", "bind": "bind -x runs a command",
                   "mapfile": "mapfile -C runs a callback", "readarray": "readarray -C runs a callback",
                   "let": "let evaluates variables as arithmetic expressions"}
# builtins that assign variables: naming PATH, LD_PRELOAD... changes what later commands run
ASSIGNING = {"export", "declare", "typeset", "local", "readonly", "read", "printf", "getopts", "let"}
MAX_DEPTH = 8
ARITH_NAME = re.compile(r"[A-Za-z_]")
ARRAY_INDEX_NAME = re.compile(r"\[[^\]]*[A-Za-z_$]")
ARITH_TEST = {"-eq", "-ne", "-lt", "-le", "-gt", "-ge"}
TRANSFORM = re.compile(r"@[A-Za-z]\}$")
SUBSCRIPT_CODE = re.compile(r"\[[^\]]*(\$\(|`)")
NAME_TAKERS = {"test", "[", "[[", "unset", "printf", "export", "declare", "typeset", "local", "readonly", "read",
               "getopts", "let", "mapfile", "readarray", "wait", "jobs"}
SENSITIVE_DIR = re.compile(r"(^|/)(\.git|hooks|\.ssh|\.config|\.gnupg)/?$")

class ShellParseError(ValueError):
    """The text is not a complete, well-formed command line (unbalanced quotes, dangling operator...)."""

# how the opaque constructs that are writes by the shell itself (not programs it runs) begin: bastion-guard sees
# every program a line runs, never where the shell redirects (policies.engine.evaluate(guarded=True))
WRITES_UNSEEN = "a redirection to "
WRITES_SENSITIVE = "writes "


@dataclass(frozen=True)
class Word:
    """A word after quote removal, and what the raw word contained."""

    text: str
    raw: str
    quoted: bool = False       # contained quotes or backslashes
    expansion: bool = False    # contained $var / ${...} / $((...))
    substitution: bool = False  # contained $(...) / `...` / <(...) / >(...)
    glob: bool = False         # contained unquoted * ? [


@dataclass(frozen=True)
class SimpleCommand:
    """One simple command: its effective program (basename, wrappers stripped) and arguments.

    ``args_open``: the arguments the program really gets may differ from ``args`` (xargs and find add some from
    their input; a variable or a glob expands to words the engine cannot see): rules that look at arguments then
    match conservatively. ``steps`` says how the line was unwrapped (for ``policy test --explain``).
    """

    program: str
    args: tuple[str, ...]
    argv: tuple[str, ...]
    wrappers: tuple[str, ...] = ()
    opaque: tuple[str, ...] = ()
    args_open: bool = False
    steps: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return " ".join(self.argv)


@dataclass
class ParsedLine:
    """Every simple command a line would run, and every construct the parser could not see through."""

    commands: list[SimpleCommand] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Ctx:
    interactive: bool
    terminal: bool
    depth: int = 0


def _read_until_close(s: str, i: int, open_: str, close: str) -> int:
    """Index just past the ``close`` that balances an already-consumed ``open_`` at s[i-1]."""
    depth, n = 1, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'" and open_ != "`":
            j = s.find("'", i + 1)
            if j < 0:
                raise ShellParseError("unterminated single quote")
            i = j + 1
            continue
        if c == '"' and open_ != "`":
            i = _read_double(s, i + 1)[1]
            continue
        if s.startswith(close, i):
            depth -= 1
            if depth == 0:
                return i + len(close)
        elif s.startswith(open_, i) and open_ != close:
            depth += 1
        i += 1
    raise ShellParseError(f"unterminated {open_}")


def _dollar_group(s: str, i: int) -> tuple[int, bool, bool] | None:
    """For ``$((...))``, ``$(...)`` or ``${...}`` at ``s[i]``: (end, is an expansion, runs a command)."""
    if s.startswith("$((", i):
        j = _read_until_close(s, i + 3, "((", "))")
        # a name in arithmetic is evaluated as an expression: a value like 'a[$(cmd)]' runs cmd
        return j, True, "$(" in s[i + 3:j] or "`" in s[i + 3:j] or bool(ARITH_NAME.search(s[i + 3:j]))
    if s.startswith("$(", i):
        return _read_until_close(s, i + 2, "(", ")"), False, True
    if s.startswith("${", i):
        j = _read_until_close(s, i + 2, "{", "}")
        # an array index is arithmetic too (``${a[x]}`` evaluates x)
        # ``${x@P}`` (prompt expansion) and ``${!x}`` evaluate what a value holds: command substitutions in it run
        return j, True, "$(" in s[i:j] or "`" in s[i:j] or bool(ARRAY_INDEX_NAME.search(s[i:j])) or \
            bool(TRANSFORM.search(s[i:j]))
    return None


def _read_double(s: str, i: int) -> tuple[str, int, bool, bool]:
    """Read a double-quoted string starting after the quote; (text, end, expansion, substitution)."""
    out: list[str] = []
    exp = sub = False
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            return "".join(out), i + 1, exp, sub
        if c == "\\" and i + 1 < n:
            nxt = s[i + 1]
            if nxt in '$`"\\\n':
                if nxt != "\n":
                    out.append(nxt)
                i += 2
                continue
            out.append(c)
            i += 1
            continue
        if c == "`":
            j = _read_until_close(s, i + 1, "`", "`")
            out.append(s[i:j])
            sub = True
            i = j
            continue
        if c == "$" and i + 1 < n:
            grouped = _dollar_group(s, i)
            if grouped is not None:
                j, e, su = grouped
                exp, sub = exp or e, sub or su
            elif re.match(r"[A-Za-z_0-9@*#?$!-]", s[i + 1]):
                m = re.match(r"\$(?:[A-Za-z_][A-Za-z_0-9]*|[0-9@*#?$!-])", s[i:])
                j = i + len(m.group(0)) if m else i + 2
                exp = True
            else:
                out.append(c)
                i += 1
                continue
            out.append(s[i:j])
            i = j
            continue
        out.append(c)
        i += 1
    raise ShellParseError("unterminated double quote")


def tokenize(s: str) -> list[Word | str]:
    """Split into words (with quote removal) and operator strings; comments dropped."""
    tokens: list[Word | str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t":
            i += 1
            continue
        if c == "\\" and i + 1 < n and s[i + 1] == "\n":  # line continuation
            i += 2
            continue
        if c == "#":
            j = s.find("\n", i)
            i = n if j < 0 else j
            continue
        m_op = OPERATOR_RE.match(s, i) if c in OPERATOR_START else None
        op = m_op.group(0) if m_op else None
        if op is not None and not (op in ("<", ">") and s.startswith("(", i + 1)):
            tokens.append(op)
            i += len(op)
            continue
        # a word
        out: list[str] = []
        start = i
        quoted = exp = sub = glob = False
        while i < n:
            plain = PLAIN_RE.match(s, i)
            if plain:  # a run of ordinary characters: no quoting, expansion, glob or operator
                out.append(plain.group(0))
                i = plain.end()
                continue
            c = s[i]
            if c in " \t\n;&|()" or (c in "<>" and not s.startswith("(", i + 1)):
                break
            if c == "\\":
                quoted = True
                if i + 1 < n and s[i + 1] == "\n":
                    i += 2
                    continue
                if i + 1 < n:
                    out.append(s[i + 1])
                i += 2
                continue
            if c == "'":
                j = s.find("'", i + 1)
                if j < 0:
                    raise ShellParseError("unterminated single quote")
                out.append(s[i + 1:j])
                quoted = True
                i = j + 1
                continue
            if s.startswith('$"', i):  # a locale-translated string: a double-quoted string
                text, i, e, su = _read_double(s, i + 2)
                out.append(text)
                quoted, exp, sub = True, exp or e, sub or su
                continue
            if s.startswith("$'", i):
                j = i + 2
                while j < n and s[j] != "'":
                    j += 2 if s[j] == "\\" else 1
                if j >= n:
                    raise ShellParseError("unterminated $'...'")
                out.append(s[i:j + 1])
                quoted = exp = True
                i = j + 1
                continue
            if c == '"':
                text, i, e, su = _read_double(s, i + 1)
                out.append(text)
                quoted, exp, sub = True, exp or e, sub or su
                continue
            if c == "`":
                j = _read_until_close(s, i + 1, "`", "`")
                out.append(s[i:j])
                sub = True
                i = j
                continue
            if c in "<>" and s.startswith("(", i + 1):
                j = _read_until_close(s, i + 2, "(", ")")
                out.append(s[i:j])
                sub = True
                i = j
                continue
            grouped = _dollar_group(s, i) if c == "$" else None
            if grouped is not None:
                j, e, su = grouped
                exp, sub = exp or e, sub or su
                out.append(s[i:j])
                i = j
                continue
            if c == "$" and i + 1 < n and re.match(r"[A-Za-z_0-9@*#?$!-]", s[i + 1]):
                exp = True
            if c in "*?[":
                glob = True
            if c == "{" and re.match(r"\{[^}\s]*(,|\.\.)[^}\s]*\}", s[i:]):
                glob = True  # brace expansion
            out.append(c)
            i += 1
        tokens.append(Word("".join(out), s[start:i], quoted, exp, sub, glob))
    return tokens


ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*(\[[^]]*\])?\+?=")


def _bodies(raw: str) -> list[str] | None:
    """The commands of the ``$(...)``, backquote and ``<(...)`` substitutions in a raw word, or None when one of
    them cannot be read on its own (inside arithmetic or a parameter expansion, a backquote with escapes)."""
    bodies: list[str] = []
    i, n, in_double = 0, len(raw), False
    while i < n:
        c = raw[i]
        if c == "\\":
            i += 2
            continue
        if c == "'" and not in_double:
            j = raw.find("'", i + 1)
            i = n if j < 0 else j + 1
            continue
        if c == '"':
            in_double = not in_double
            i += 1
            continue
        try:
            if raw.startswith("$((", i):
                j = _read_until_close(raw, i + 3, "((", "))")
                if "$(" in raw[i:j] or "`" in raw[i:j] or ARITH_NAME.search(raw[i + 3:j - 2]):
                    return None
                i = j
            elif raw.startswith("$(", i):
                j = _read_until_close(raw, i + 2, "(", ")")
                bodies.append(raw[i + 2:j - 1])
                i = j
            elif raw.startswith("${", i):
                j = _read_until_close(raw, i + 2, "{", "}")
                if "$(" in raw[i:j] or "`" in raw[i:j] or ARRAY_INDEX_NAME.search(raw[i:j]) or \
                        TRANSFORM.search(raw[i:j]):
                    return None
                i = j
            elif c == "`":
                j = _read_until_close(raw, i + 1, "`", "`")
                if "\\" in raw[i + 1:j - 1]:
                    return None
                bodies.append(raw[i + 1:j - 1])
                i = j
            elif c in "<>" and raw.startswith("(", i + 1) and not in_double:
                j = _read_until_close(raw, i + 2, "(", ")")
                bodies.append(raw[i + 2:j - 1])
                i = j
            else:
                i += 1
        except ShellParseError:
            return None
    return bodies


def _see_through(w: Word, line: ParsedLine, ctx: _Ctx) -> bool:
    """Judge the commands a word's substitutions run (part of the line, like any other); False if one cannot be
    read on its own (the caller makes the line opaque)."""
    if not w.substitution:
        return True
    bodies = _bodies(w.raw)
    if bodies is None:
        return False
    for body in bodies:
        _nested(body, line, ctx, "command substitution")
    return True


def _name(w: Word) -> str:
    t = w.text
    return os.path.basename(t) if "/" in t and not t.endswith("/") else t


def _nested(text: str, line: ParsedLine, ctx: _Ctx, what: str) -> None:
    """Judge a command line that a program runs through a shell (``su -c``, ``flock -c``, ``watch``...)."""
    if ctx.depth >= MAX_DEPTH:
        line.opaque.append(f"{what}: commands nested too deep")
        return
    try:
        sub = _parse(text, _Ctx(False, ctx.terminal, ctx.depth + 1))
    except ShellParseError as e:
        line.opaque.append(f"{what}: the command it runs cannot be parsed ({e})")
        return
    line.commands += sub.commands
    line.opaque += sub.opaque
    line.steps += sub.steps


def _simple(words: list[Word], line: ParsedLine, piped_in: bool, ctx: _Ctx, inherited_open: bool = False,
            replace: str | None = None) -> None:
    """Classify one simple command's words (already split on operators and redirections removed)."""
    opaque: list[str] = []
    steps: list[str] = []
    while words and ASSIGNMENT.match(words[0].raw):
        if not _see_through(words[0], line, ctx):
            opaque.append("command substitution in an assignment that cannot be read on its own")
        name_, _, value_ = words[0].text.partition("=")
        why = env_problem(re.split(r"[+\[]", name_, maxsplit=1)[0], None if words[0].expansion else value_)
        if why:
            opaque.append(why)
        words = words[1:]
    if words and words[0].substitution:
        opaque.append("command substitution in command position")
    elif any(not _see_through(w, line, ctx) for w in words[1:]):
        opaque.append("command substitution that cannot be read on its own")
    wrappers: list[str] = []
    args_open = inherited_open
    input_args = False  # xargs/parallel add arguments read from the input: they can be anything
    rounds = 0
    while words and rounds < 32:
        rounds += 1
        head = words[0]
        if head.substitution:
            opaque.append("command substitution in command position")
            break
        if head.expansion:
            opaque.append("variable in command position")
            break
        if head.quoted:
            opaque.append("quotes or backslash in command position")
        if head.glob and head.raw not in ("[", "[["):  # ``[ -f x ]`` is the test command, not a glob
            opaque.append("glob in command position")
        if replace and replace in head.text:
            opaque.append(f"the program comes from the input ({replace} in command position)")
        name = _name(head)
        if not head.quoted and head.text in RESERVED_PREFIX | RESERVED_END:
            words = words[1:]
            continue
        keyword_time = head.text == "time" and not head.quoted
        why = path_problem(head.text)
        if why:
            opaque.append(why)
        spec = TIME_KEYWORD if keyword_time else WRAPPERS.get(name)
        if name in ("busybox", "toybox") and len(words) > 1 and not words[1].text.startswith("-"):
            wrappers.append(name)
            steps.append(f"{name}: applet {words[1].text}")
            words = words[1:]
            continue
        if spec is None:
            break
        texts = [w.text for w in words]
        u = unwrap(name, texts[1:], spec)
        cut = (u.command + 1) if u.command is not None else len(words)
        if any(w.expansion or w.glob or w.substitution for w in words[1:cut]):
            opaque.append(f"{name}: a variable or glob among its options (the bastion cannot tell what it runs)")
        if u.step:
            steps.append(u.step)
        opaque += u.opaque
        for assignment in u.assignments:
            why = env_problem(*assignment.split("=", 1))
            if why:
                opaque.append(f"{name}: {why}")
        if u.resplit is not None:
            split_words: list[Word] = [head]
            for chunk in u.resplit:
                if "\\" in chunk:
                    opaque.append(f"{name} -S: escapes (env's own rules differ from the shell's)")
                try:
                    toks = tokenize(chunk)
                except ShellParseError as e:
                    opaque.append(f"{name} -S: {e}")
                    toks = []
                if any(not isinstance(t, Word) or t.expansion or t.substitution for t in toks):
                    opaque.append(f"{name} -S: a string with shell syntax or variables")
                split_words += [t for t in toks if isinstance(t, Word)]
            words = split_words + (words[1 + u.command:] if u.command is not None else [])
            continue
        for text in u.lines:
            steps.append(f"{name} runs the command line {text!r}")
            _nested(text, line, ctx, name)
        if u.command is None and input_args and not u.lines and not u.opaque:
            opaque.append(f"{name} gets its command from the input ({wrappers[-1]} adds arguments)")
        if u.opaque or u.command is None:
            if u.default_program and not u.opaque:
                wrappers.append(name)
                words = [Word(u.default_program, u.default_program)]
                args_open = True
                break
            line.commands.append(SimpleCommand(name, tuple(texts[1:]), tuple(texts), tuple(wrappers),
                                               tuple(opaque), args_open, tuple(steps)))
            line.opaque += opaque
            line.steps += steps
            return
        wrappers.append(name)
        args_open = args_open or u.args_open
        input_args = input_args or u.args_open
        replace = u.replace or replace
        words = words[1 + u.command:]
    if not words:
        if wrappers:
            line.commands.append(SimpleCommand(wrappers[-1], (), (), tuple(wrappers[:-1]), tuple(opaque),
                                               args_open, tuple(steps)))
        line.opaque += opaque
        line.steps += steps
        return
    head = words[0]
    prog = _name(head)
    args = tuple(w.text for w in words[1:])
    argv = tuple(w.text for w in words)
    if prog in OPAQUE_PROGRAMS and not head.quoted:
        opaque.append(OPAQUE_PROGRAMS[prog])
    if prog in NAME_TAKERS:
        if any(SUBSCRIPT_CODE.search(a) for a in args):
            opaque.append(f"{prog}: an array subscript is evaluated as arithmetic (its $(...) runs)")
        if "-v" in args and any(w.expansion or "[" in w.text for w in words[1:]):
            opaque.append(f"{prog} -v evaluates a variable's subscript")
        if prog in ("[[", "test", "[") and set(args) & ARITH_TEST and any(
                w.expansion or ARITH_NAME.match(w.text) for w in words[1:] if w.text not in ARITH_TEST):
            opaque.append(f"{prog}: an arithmetic comparison evaluates variables as expressions")
        if prog == "jobs" and any(a.startswith("-") and "x" in a for a in args):
            opaque.append("jobs -x runs a command")
        if prog in ("declare", "typeset", "local") and any(a.startswith("-") and "n" in a for a in args):
            opaque.append(f"{prog} -n makes a name refer to another variable (PS4, PATH...)")
    if prog in ("cd", "pushd") and any(SENSITIVE_DIR.search(a.rstrip("/") + "/") or SENSITIVE_DIR.search(a)
                                       for a in args):
        opaque.append(f"{prog} into a directory whose files programs read as configuration or run")
    if prog in ASSIGNING:
        for a in args:
            why = env_problem(re.split(r"[+\[=]", a, maxsplit=1)[0])
            if why:
                opaque.append(f"{prog}: {why}")
                break
    if runs_commands(prog) and any(w.expansion or w.glob or w.substitution for w in words[1:]):
        opaque.append(f"{prog}: a variable or glob among its arguments, some of which run commands")
    eff = inspect(prog, args, terminal=ctx.terminal, interactive=ctx.interactive, args_open=input_args)
    opaque += eff.opaque
    if input_args and runs_commands(prog) and not eff.opaque:
        opaque.append(f"{prog} gets arguments from the input ({wrappers[-1]}), and some of its arguments run "
                      f"commands")
    steps += eff.steps
    if piped_in and base_name(prog) in INTERPRETERS and not eff.opaque:
        opaque.append(f"pipe into interpreter {prog}")
    for i, j in eff.argvs:
        if ctx.depth >= MAX_DEPTH:
            opaque.append(f"{prog}: commands nested too deep")
            continue
        _simple(list(words[1 + i:1 + j]), line, False, _Ctx(False, ctx.terminal, ctx.depth + 1), True,
                eff.replace)
    for text in eff.lines:
        _nested(text, line, ctx, prog)
    args_open = args_open or any(w.expansion or w.glob or w.substitution for w in words[1:])
    for alias in dict.fromkeys(eff.also):
        line.commands.append(SimpleCommand(alias, args, argv, (*wrappers, prog), (), args_open,
                                           (*steps, f"{prog} {' '.join(args)[:60]} acts as {alias}")))
    line.commands.append(SimpleCommand(prog, args, argv, tuple(wrappers), tuple(opaque), args_open, tuple(steps)))
    line.opaque += opaque
    line.steps += steps


def parse_line(text: str, *, interactive: bool = False, terminal: bool = True) -> ParsedLine:
    """Parse ``text`` into the simple commands it would run; raises :class:`ShellParseError` on bad syntax.

    ``interactive``: typed at an interactive shell's prompt, where bash's history expansion rewrites the line
    before it runs (any designator makes it opaque); ``terminal``: a terminal is attached (pagers read keys).
    """
    ctx = _Ctx(interactive, terminal)
    line = _parse(text, ctx)
    if interactive:
        hits = history_expansions(text)
        if hits:
            line.opaque.append(f"history expansion {hits[0]!r} (bash rewrites the line before it runs)")
    return line


def _stdout_ctx(ctx: _Ctx, op: str | None, redirected: bool) -> _Ctx:
    """The context of one simple command: its output reaches the terminal only if it is not piped or redirected
    (``git log | wc -l`` does not start a pager)."""
    if ctx.terminal and (redirected or op in ("|", "|&")):
        return _Ctx(ctx.interactive, False, ctx.depth)
    return ctx


def _parse(text: str, ctx: _Ctx) -> ParsedLine:
    if "\x00" in text:
        raise ShellParseError("NUL byte in command")
    tokens = tokenize(text)
    line = ParsedLine()
    words: list[Word] = []
    piped_in = False
    depth = 0
    expect_word = False
    i = 0
    prev_op: str | None = None
    out_redirected = False
    while i < len(tokens):
        t = tokens[i]
        if isinstance(t, Word):
            if words == [] and t.text in ("for", "select") and not t.quoted:
                # for NAME [in WORDS]; do ... : skip to the separator; the words are data
                if t.text == "select":
                    line.opaque.append("select loop")
                j = i + 1
                while j < len(tokens):
                    tj = tokens[j]
                    if (isinstance(tj, str) and tj in (";", "\n")) or (isinstance(tj, Word) and tj.text == "do"):
                        break
                    if isinstance(tj, Word) and tj.substitution:
                        line.opaque.append("command substitution")
                    j += 1
                i = j
                continue
            if words == [] and t.text == "case" and not t.quoted:
                line.opaque.append("case statement")
            words.append(t)
            expect_word = False
            i += 1
            continue
        op = t
        if op in REDIRECTS:
            if i + 1 >= len(tokens) or not isinstance(tokens[i + 1], Word):
                raise ShellParseError(f"redirection {op!r} without a target")
            target = tokens[i + 1]
            assert isinstance(target, Word)
            if op in ("<<",):
                line.opaque.append("here-document")
            if target.substitution or target.expansion or target.glob:
                line.opaque.append(f"{WRITES_UNSEEN}{target.raw}: where it writes cannot be seen")
            # a numeric word just before a redirection is the fd, not an argument
            fd = None
            if words and re.fullmatch(r"\d+", words[-1].raw) and not words[-1].quoted:
                fd = words.pop().raw
            if op in (">", ">>", ">|", "&>", "&>>", "<>") and SENSITIVE_FILE.search(target.text):
                line.opaque.append(f"{WRITES_SENSITIVE}{target.text}: a file that programs read as configuration or "
                                   "run")
            if op in (">", ">>", ">|", "&>", "&>>") and fd in (None, "1") and \
                    target.text not in ("/dev/tty", "/dev/stdout", "/dev/stderr"):
                out_redirected = True  # its output goes to a file: a pager in it does not page
            i += 2
            continue
        # separators
        if op == "(" and i + 1 < len(tokens) and tokens[i + 1] == "(":
            close = next((k for k in range(i + 2, len(tokens) - 1)
                          if tokens[k] == ")" and tokens[k + 1] == ")"), len(tokens))
            if any(isinstance(t, Word) and ARITH_NAME.search(t.text) for t in tokens[i + 2:close]):
                line.opaque.append("(( )) evaluates variables as arithmetic expressions (or runs nested subshells)")
        if op == "(":
            if words:  # name ( ) -> function definition
                line.opaque.append("function definition")
                words = []
            depth += 1
        elif op == ")":
            depth -= 1
            if depth < 0:
                raise ShellParseError("unbalanced )")
        if words:
            _simple(words, line, piped_in, _stdout_ctx(ctx, op, out_redirected))
            words = []
        elif op in ("|", "|&", "&&", "||") and (prev_op in ("|", "|&", "&&", "||", None) and not line.commands):
            raise ShellParseError(f"syntax error near {op!r}")
        piped_in = op in ("|", "|&")
        out_redirected = False
        expect_word = op in ("|", "|&", "&&", "||")
        prev_op = op
        i += 1
    if words:
        _simple(words, line, piped_in, _stdout_ctx(ctx, None, out_redirected))
    elif expect_word:
        raise ShellParseError(f"line ends with {prev_op!r}")
    if depth != 0:
        raise ShellParseError("unbalanced (")
    return line
