"""File transfers judged by the policy: SFTP requests, and the exec form's transfer programs (scp, rsync, git).

Pure and I/O-free. A transfer is judged twice, and the stricter judgement wins: by the policy's transfer rules
(``transfer: [remove]``, ``paths: [/etc/**]``, ``max_bytes``), and as the shell command that would do the same
thing (an SFTP remove is ``rm -- PATH``), so that a policy written for shell commands (``programs: [rm]  block``)
holds for the same act done over SFTP or scp. Whatever cannot be judged with certainty is refused (fail closed).

:func:`exec_transfers` reads the remote side of scp, rsync and git as their clients start it over SSH
(``scp -t PATH``, ``rsync --server ... . PATH``, ``git-upload-pack 'PATH'``) into the transfers they do, with a
strict grammar: an option the tables do not know, or one that runs a program or reads or writes outside the named
paths, raises :class:`TransferParseError`, and the caller blocks the command.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from policies.engine import Action, Decision, PolicySet, Rule, _decide, evaluate
from policies.getopt import NONE, REQUIRED, Grammar, scan
from policies.shell import ShellParseError, parse_line

OPS = ("upload", "download", "remove", "rename", "chmod", "mkdir", "rmdir", "symlink")
HARD_LINK = "hard link"  # ``detail`` of a symlink transfer that is a hard link (SFTP hardlink@openssh.com)


class TransferParseError(ValueError):
    """A transfer program whose command line cannot be read with certainty: the caller refuses it."""


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


@dataclass(frozen=True)
class Transfer:
    """One file operation. ``path``: absolute and normalized, the file acted on; ``other``: the destination of a
    rename, the target of a symlink (or hard link: ``detail`` is :data:`HARD_LINK`); ``size``: bytes, when known;
    ``detail``: for chmod, the attributes set, comma-separated (``mode 0755``, ``owner 0:0``, ``times``,
    ``size 0``), else free text."""

    op: str
    path: str
    other: str = ""
    size: int | None = None
    detail: str = ""
    # the exec form (scp -O, rsync, git): the names of the files come over the protocol, out of sight, so the
    # transfer may touch any path at or below ``path``; a rule on any of them applies
    tree: bool = False

    def describe(self) -> str:
        """The one line shown in markers, audit events and the reviewer queue (and bound by an approval)."""
        if self.op in ("rename", "symlink"):
            text = f"{self.op} {self.path} -> {self.other}"
        elif self.tree:
            text = f"{self.op} {self.path} (any file at or below it)"
        else:
            text = f"{self.op} {self.path}"
        extra = [d for d in (self.detail, _size(self.size) if self.size is not None else "") if d]
        return text + (f" ({', '.join(extra)})" if extra else "")

    def shell_equivalent(self) -> str:
        """The shell command that does the same thing, quoted: what the shell rules of the policy judge."""
        q = shlex.quote
        simple = {"upload": "scp -t --", "download": "scp -f --", "remove": "rm --", "mkdir": "mkdir --",
                  "rmdir": "rmdir --"}
        if self.tree:
            simple = {**simple, "upload": "scp -r -t --", "download": "scp -r -f --", "remove": "rm -r --"}
        if self.op in simple:
            return f"{simple[self.op]} {q(self.path)}"
        if self.op == "rename":
            return f"mv -- {q(self.path)} {q(self.other)}"
        if self.op == "symlink":
            flag = "" if self.detail == HARD_LINK else "-s "
            return f"ln {flag}-- {q(self.other)} {q(self.path)}"
        return " ; ".join(_attribute_command(item.strip(), self.path) for item in (self.detail or "mode").split(","))


def _attribute_command(item: str, path: str) -> str:
    """One attribute a chmod (SFTP setstat) sets, as the command that sets it; one not understood is a ``chmod``
    (so that a rule on chmod holds for it)."""
    word, _, value = item.partition(" ")
    value = value.strip()
    if word == "owner" and re.fullmatch(r"\d+:\d+", value):
        return f"chown {value} -- {shlex.quote(path)}"
    if word == "size" and value.isdigit():
        return f"truncate -s {value} -- {shlex.quote(path)}"
    if word == "times":
        return f"touch -- {shlex.quote(path)}"
    mode = value if word == "mode" and re.fullmatch(r"[0-7]{1,5}", value) else ""
    return f"chmod {mode + ' ' if mode else ''}-- {shlex.quote(path)}"


def path_matches(pattern: str, path: str) -> bool:
    """``fnmatch`` on the path (``*`` crosses ``/``); a pattern ending in ``/**`` also matches the directory."""
    if fnmatch.fnmatchcase(path, pattern):
        return True
    if pattern.endswith("/**"):
        base = pattern[:-3] or "/"
        return path == base or fnmatch.fnmatchcase(path, base)
    return False


def may_match_below(pattern: str, directory: str) -> bool:
    """Whether ``pattern`` could match ``directory`` or a path below it (conservative: a pattern whose fixed
    prefix is not a path, ``*/x``, could)."""
    if path_matches(pattern, directory):
        return True
    cut = min((i for i, ch in enumerate(pattern) if ch in "*?["), default=len(pattern))
    prefix, d = pattern[:cut], directory.rstrip("/") + "/"
    return prefix.startswith(d) or d.startswith(prefix)


def _normalized(path: str) -> bool:
    return path.startswith("/") and "\0" not in path and posixpath.normpath(path) == path and \
        not path.startswith("//")


def _problem(t: Transfer) -> str | None:
    """Why this transfer cannot be judged, if it cannot."""
    if t.op not in OPS:
        return f"unknown operation {t.op!r}"
    if not _normalized(t.path):
        return f"the path {t.path!r} is not absolute and normalized"
    if (t.op == "rename" or (t.op == "symlink" and t.detail == HARD_LINK)) and not _normalized(t.other):
        return f"the other path {t.other!r} is not absolute and normalized"
    if t.op == "symlink" and (not t.other or "\0" in t.other):
        return "a symlink without a target"
    if t.size is not None and t.size < 0:
        return "a negative size"
    return None


def _paths(t: Transfer) -> list[str]:
    """Every path a transfer touches: both ends of a rename; a link and (resolved against its directory) its
    target."""
    if t.op == "rename":
        return [t.path, t.other]
    if t.op == "symlink":
        target = posixpath.normpath(posixpath.join(posixpath.dirname(t.path), t.other))
        return [t.path, "/" + target.lstrip("/")]  # POSIX keeps a leading "//": the kernel does not
    return [t.path]


def _matches(pattern: str, path: str, below: bool) -> bool:
    """``below``: the act reaches everything under ``path`` too -- the exec form's unseen file names, and the
    source of a rename (renaming ``/srv`` moves ``/srv/app/secrets`` with it)."""
    return may_match_below(pattern, path) if below else path_matches(pattern, path)


def _rule_matches(rule: Rule, t: Transfer) -> bool:
    if t.op not in rule.transfer:
        return False
    if rule.paths and not any(_matches(p, path, t.tree or (t.op == "rename" and path == t.path))
                              for p in rule.paths for path in _paths(t)):
        return False
    if rule.max_bytes is not None and t.op in ("upload", "download") and (t.size is None or
                                                                           t.size <= rule.max_bytes):
        return False
    return rule.command is None or bool(rule.command.search(t.describe()))


def evaluate_transfer(policy: PolicySet, t: Transfer, *, groups: Iterable[str], resource: str) -> Decision:
    """Decide one file transfer for a user on ``resource``: the first transfer rule that names it, and its shell
    equivalent judged by the shell rules (and the policy's default); the stricter wins, the transfer rule on a tie.

    A transfer that cannot be judged (unknown operation, a path not absolute and normalized: a ``~/`` path from
    :func:`exec_transfers` has to be resolved first, see :func:`resolve_home`) is refused.
    """
    gs = frozenset(groups)
    problem = _problem(t)
    if problem is not None:
        return _decide(Action.BLOCK, None, f"the transfer cannot be judged ({problem})",
                       t.describe(), [f"cannot judge: {problem}"], (t.op,))
    rule = next((r for r in policy.applicable("transfer", gs, resource) if r.transfer and _rule_matches(r, t)),
                None)
    shell_text = t.shell_equivalent()
    inner = evaluate(policy, shell_text, groups=gs, resource=resource, terminal=False)
    why = [f"transfer: {t.describe()}",
           f"transfer rule {rule.name!r} -> {rule.action.label}" if rule else "no transfer rule matched",
           f"as a shell command ({shell_text}): {inner.summary()}"]
    if rule is not None and rule.action >= inner.action:
        return _decide(rule.action, rule, rule.reason or f"{t.op} matches rule {rule.name!r}", t.describe(), why,
                       (t.op,))
    inner_rule = next((r for r in policy.rules if r.name == inner.rule), None) if inner.rule else None
    return _decide(inner.action, inner_rule, f"as {shell_text}: {inner.reason}", t.describe(), why, (t.op,))


def resolve_home(t: Transfer, home: str) -> Transfer:
    """The transfer with a leading ``~`` (as :func:`exec_transfers` returns relative paths) replaced by the target
    account's home directory, once the caller knows it."""
    def one(p: str) -> str:
        if p == "~" or p.startswith("~/"):
            return posixpath.normpath(home + p[1:])
        return p
    return replace(t, path=one(t.path), other=one(t.other) if t.op == "rename" else t.other)


# -- the exec form ---------------------------------------------------------------------------------------------

SYSTEM_DIRS = ("/usr/bin", "/bin", "/usr/local/bin", "/usr/sbin", "/sbin", "/usr/lib/git-core",
               "/usr/libexec/git-core")
GIT_SUBCOMMANDS = {"upload-pack": "download", "upload-archive": "download", "receive-pack": "upload"}
SFTP_SERVERS = frozenset({"sftp-server", "internal-sftp"})
_PROGRAMS = frozenset({"scp", "rsync", "git", *SFTP_SERVERS, *(f"git-{s}" for s in GIT_SUBCOMMANDS)})
_MENTION = re.compile(r"\b(?:scp|rsync|sftp-server|internal-sftp|upload-pack|receive-pack|upload-archive)\b")
# outside quotes, these make the remote shell do more than run one program with these words
_SPECIAL = frozenset(";&|<>()$`*?[]{}#\n\r")


def _unquoted_special(command: str) -> str | None:
    """The first character the remote shell would treat specially (a second command, a redirection, an
    expansion, a glob), or None. In double quotes ``$`` and backquotes still expand."""
    i, n, quote = 0, len(command), ""
    while i < n:
        c = command[i]
        if quote == "'":
            quote = "" if c == "'" else quote
        elif quote == '"':
            if c == "\\":
                i += 1
            elif c in "$`":
                return c
            elif c == '"':
                quote = ""
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif c in _SPECIAL:
            return c
        i += 1
    return None


def exec_path(path: str) -> str:
    """A path from an exec command line: absolute ones normalized, relative ones (and ``~/``) as ``~/PATH`` (the
    caller resolves the home, :func:`resolve_home`). ``..`` anywhere, ``~user`` and empty paths raise: the
    remote side resolves them through symlinks and homes the bastion cannot see."""
    if not path or "\0" in path:
        raise TransferParseError("an empty path")
    if path.startswith("~"):
        if path != "~" and not path.startswith("~/"):
            raise TransferParseError(f"{path!r}: another user's home directory")
        path = path[2:] if path.startswith("~/") else "."
    if ".." in path.split("/"):
        raise TransferParseError(f"{path!r}: '..' in a path (symlinks may lead elsewhere than it reads)")
    if path.startswith("/"):
        return "/" + posixpath.normpath(path).lstrip("/")
    return posixpath.normpath("~/" + path)


def _program(word: str) -> str:
    """The transfer program a command word names; an unexpected directory is refused (a look-alike)."""
    base = posixpath.basename(word)
    if "/" in word and posixpath.dirname(word) not in SYSTEM_DIRS:
        raise TransferParseError(f"{word}: a transfer program outside the system's program directories")
    return base


def _remote_side(program: str, args: Sequence[str]) -> bool:
    """Whether ``program args`` is the remote side of a transfer as its client starts it over SSH (``scp -t``/
    ``-f``, ``rsync --server``, git's pack programs, an sftp server) -- not the same programs used for something
    else on the target (``rsync -a a b``, ``git log``, ``rsync --version``), which are ordinary commands."""
    prog = posixpath.basename(program)
    if prog in SFTP_SERVERS:
        return True
    if prog == "scp":
        return any(a.startswith("-") and not a.startswith("--") and ("t" in a or "f" in a) for a in args)
    if prog == "rsync":
        return "--server" in args
    if prog.startswith("git-"):
        return prog.removeprefix("git-") in GIT_SUBCOMMANDS
    if prog != "git":
        return False
    rest = iter(args)
    for a in rest:  # the subcommand: the first word that is not a global option (or the value of -c, -C)
        if a in ("-c", "-C"):
            next(rest, None)
        elif not a.startswith("-"):
            return a in GIT_SUBCOMMANDS
    return False


def is_transfer_command(command: str) -> bool:
    """Whether an exec command is, as a whole, the remote side of a transfer (recorded as a transfer log, judged
    as transfers); it says nothing about whether the line is acceptable (see :func:`exec_transfers`)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    return bool(words) and _remote_side(words[0], words[1:])


def exec_transfers(command: str) -> list[Transfer] | None:
    """The transfers an exec command does, or None when it runs no transfer program.

    A transfer program must be the whole line: one command, no wrapper in front (``sudo``, ``env``), no shell
    syntax (``;``, redirections, expansions, globs), every option known. Anything else that involves one raises
    :class:`TransferParseError`. ``sftp-server`` run as a command is refused too: SFTP comes through the sftp
    subsystem, where each request is judged.
    """
    if not _MENTION.search(command):
        return None
    try:
        words = shlex.split(command)
    except ValueError as e:
        raise TransferParseError(f"the command cannot be split: {e}") from None
    if not is_transfer_command(command):
        _refuse_hidden(command)
        return None
    if posixpath.basename(words[0]) in SFTP_SERVERS:
        raise TransferParseError(f"{words[0]} as a command: SFTP goes through the sftp subsystem")
    prog = _program(words[0])
    special = _unquoted_special(command)
    if special is not None:
        raise TransferParseError(f"shell syntax {special!r} around a transfer program")
    if prog == "scp":
        return _scp(words[1:])
    if prog == "rsync":
        return _rsync(words[1:])
    sub, args = (words[1], words[2:]) if prog == "git" else (prog.removeprefix("git-"), words[1:])
    return _git(sub, args)


def _refuse_hidden(command: str) -> None:
    """The remote side of a transfer somewhere else in the line (behind a wrapper, after ``;``, a git option before
    the subcommand) cannot be judged as a transfer: raise. Anything else -- a mention (``grep rsync log``), the same
    programs used otherwise (``rsync -a a b``), a line the shell engine cannot see through (judged there, as
    strictly as the policy allows) -- is an ordinary command."""
    try:
        line = parse_line(command, interactive=False, terminal=False)
    except ShellParseError:
        return  # the shell engine refuses it with its own reason
    for cmd in line.commands:
        if _remote_side(cmd.program, cmd.args):
            where = f"behind {', '.join(cmd.wrappers)}" if cmd.wrappers else "not as the whole command"
            raise TransferParseError(f"{cmd.program} {where}: only a transfer program alone can be judged")


_SCP = Grammar("vrpdqtf")


def _scp(args: Sequence[str]) -> list[Transfer]:
    """``scp [-v] [-r] [-p] [-d] [-q] -t [--] DIR`` (upload into DIR) or ``... -f [--] PATH...`` (download):
    the remote side as ``scp -O`` starts it. ``-S``, ``-o``, ``-F``, ``-i``, ``-3`` and the like are the
    client's options; here they would run programs or read files, and are refused."""
    s = scan(_SCP, args)
    if s.error:
        raise TransferParseError(f"scp: {s.error}")
    to, frm = s.has("-t"), s.has("-f")
    if to == frm:
        raise TransferParseError("scp: exactly one of -t (upload) and -f (download)")
    paths = [exec_path(args[i]) for i in s.operands]
    if to and len(paths) != 1 or not paths:
        raise TransferParseError("scp: -t takes one path, -f one at least")
    # an upload's file names come in the protocol (into a directory, or -r): any path at or below; a download
    # of a named file is that file, of a directory (-r) all below it
    return [Transfer("upload" if to else "download", p, tree=to or s.has("-r")) for p in paths]


_GIT_LONG = {"strict": NONE, "no-strict": NONE, "timeout": REQUIRED, "stateless-rpc": NONE,
             "advertise-refs": NONE, "http-backend-info-refs": NONE, "quiet": NONE}


def _git(sub: str, args: Sequence[str]) -> list[Transfer]:
    """``git-upload-pack PATH`` / ``git-upload-archive PATH`` (clone, fetch, archive: a download of the
    repository) and ``git-receive-pack PATH`` (push: an upload into it). Other options (``--upload-pack=``,
    ``-c``) could run programs: refused."""
    s = scan(Grammar("", _GIT_LONG if sub != "upload-archive" else {}), args)
    if s.error:
        raise TransferParseError(f"git {sub}: {s.error}")
    if len(s.operands) != 1:
        raise TransferParseError(f"git {sub}: one repository path")
    return [Transfer(GIT_SUBCOMMANDS[sub], exec_path(args[s.operands[0]]), tree=True)]


# rsync --server: the short options its client puts in the one cluster (options.c, server_options()), less those
# that make the server follow symlinks out of the tree (-L, -k, -K) or read its arguments from the protocol (-s)
_RSYNC_SHORT = frozenset("vqbunldmOJyWHogDtUNpEAXrcCIRxSz")
_RSYNC_CLUSTER = re.compile(r"-([a-df-zA-Z]*)(?:e((?:\d+\.\d+|\.)[A-Za-z]*))?")
_RSYNC_FLAGS = frozenset({
    "sender", "list-only", "specials", "msgs2stderr", "new-compress", "old-compress", "force", "super", "size-only",
    "stats", "partial", "delay-updates", "safe-links", "numeric-ids", "use-qsort", "existing", "fsync", "append",
    "append-verify", "inplace", "write-devices", "copy-devices", "preallocate", "open-noatime", "mkpath", "backup",
    "checksum", "compress", "recursive", "times", "perms", "owner", "group", "links", "devices", "hard-links",
    "dry-run", "verbose", "quiet", "whole-file", "sparse", "update", "one-file-system", "prune-empty-dirs",
    "remove-source-files", "remove-sent-files", "from0"})
_RSYNC_VALUED = frozenset({
    "compress-level", "checksum-choice", "compress-choice", "timeout", "bwlimit", "log-format", "out-format",
    "max-size", "min-size", "suffix", "backup-dir", "skip-compress", "max-alloc", "modify-window", "checksum-seed",
    "max-delete", "iconv", "usermap", "groupmap", "chown", "chmod", "info", "debug", "block-size", "exclude",
    "include", "filter", "contimeout"})
_RSYNC_REFUSED = {
    "rsync-path": "runs a program", "rsh": "runs a program", "daemon": "runs a daemon", "config": "reads a file",
    "log-file": "writes a file", "log-file-format": "writes a file", "write-batch": "writes a file",
    "read-batch": "reads a file", "only-write-batch": "writes a file", "files-from": "reads a file",
    "include-from": "reads a file", "exclude-from": "reads a file", "temp-dir": "writes elsewhere",
    "compare-dest": "reads elsewhere", "copy-dest": "reads elsewhere", "link-dest": "links elsewhere",
    "partial-dir": "writes elsewhere", "copy-unsafe-links": "follows symlinks out of the tree",
    "copy-links": "follows symlinks", "copy-dirlinks": "follows symlinks", "keep-dirlinks": "follows symlinks",
    "protect-args": "sends its arguments out of sight", "secluded-args": "sends its arguments out of sight",
    "remote-option": "passes options on", "password-file": "reads a file"}
_FILTER_RULE = re.compile(r"(?:[-+PRHS][/!Csrpx]*|(?:include|exclude|protect|risk|hide|show)(?:,[/!Csrpx]*)?)"
                          r"(?:[ _]\S.*)?|clear|!")


def _rsync_long(name: str, value: str | None, rest: list[str], opts: dict[str, str]) -> None:
    """One ``--name[=value]``: known and harmless (recorded in ``opts``), or raise. A valued option given without
    ``=`` takes the next word (``--backup-dir DIR``, as the client sends it)."""
    if name in _RSYNC_REFUSED:
        raise TransferParseError(f"rsync --{name} {_RSYNC_REFUSED[name]}: refused")
    if name in _RSYNC_VALUED:
        if value is None:
            if not rest:
                raise TransferParseError(f"rsync --{name} needs a value")
            value = rest.pop(0)
        if name == "suffix" and "/" in value:
            raise TransferParseError("rsync --suffix with a '/' writes elsewhere")
        if name in ("filter", "exclude", "include") and not (name != "filter" or _FILTER_RULE.fullmatch(value)):
            raise TransferParseError(f"rsync filter rule {value!r}: only include/exclude rules (no merge files)")
        opts[name] = value
        return
    known = name in _RSYNC_FLAGS or re.fullmatch(r"(?:no|ignore)-[a-z0-9-]+|delete(?:-[a-z-]+)?", name)
    if not known or value is not None:
        raise TransferParseError(f"rsync option --{name}{'=' + value if value is not None else ''}: unknown")
    opts[name] = ""


def _rsync_options(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The options before ``.`` (recorded by name) and the paths after it. The short options come in one
    cluster ending in ``-e.FLAGS`` (the protocol's compatibility flags, not a remote shell), ``-B N`` and
    ``-@N`` aside; an option after ``.`` is refused (rsync's parser would still read it)."""
    rest = list(args)
    if not rest or rest.pop(0) != "--server":
        raise TransferParseError("rsync without --server first: not the remote side of a transfer")
    opts: dict[str, str] = {}
    while rest and rest[0] != ".":
        a = rest.pop(0)
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            _rsync_long(name, value if eq else None, rest, opts)
        elif re.fullmatch(r"-B\d+|-@-?\d+", a):
            continue
        elif a.startswith("-f"):
            _rsync_long("filter", a[2:] or None, rest, opts)
        elif (m := _RSYNC_CLUSTER.fullmatch(a)) and m.group(1) or m and m.group(2):
            bad = sorted(set(m.group(1)) - _RSYNC_SHORT)
            if bad:
                raise TransferParseError(f"rsync option -{bad[0]}: refused or unknown")
            opts.update(dict.fromkeys(m.group(1), ""))
        else:
            raise TransferParseError(f"rsync option {a!r}: unknown")
    if not rest:
        raise TransferParseError("rsync --server without '.' and a path (arguments sent out of sight)")
    paths = rest[1:]
    if any(p.startswith("-") for p in paths):
        raise TransferParseError("rsync: an option after '.'")
    return opts, paths


def _rsync(args: Sequence[str]) -> list[Transfer]:
    """``rsync --server [--sender] OPTIONS . PATH...``, as rsync's client starts its other side over SSH: with
    ``--sender`` a download of each PATH, else an upload into the one PATH. ``--delete*`` (upload) and
    ``--remove-source-files`` (download) also remove files there: a ``remove`` transfer of that path, so that a
    rule against deleting holds; ``--backup-dir`` writes the replaced files there: an upload into it."""
    opts, paths = _rsync_options(args)
    if not paths or ("sender" not in opts and len(paths) != 1):
        raise TransferParseError("rsync: an upload goes into one path, a download needs one at least")
    targets = [exec_path(p) for p in paths]
    if "sender" in opts:
        out = [Transfer("download", p, tree=True) for p in targets]
        if "remove-source-files" in opts or "remove-sent-files" in opts:
            out += [Transfer("remove", p, tree=True) for p in targets]
        return out
    out = [Transfer("upload", targets[0], tree=True)]
    if "backup-dir" in opts:
        backup = opts["backup-dir"]
        out.append(Transfer("upload", exec_path(backup if backup.startswith(("/", "~")) else
                                                posixpath.join(paths[0], backup)), tree=True))
    # --delete*: files missing from the source go; --force: a non-empty directory in the way of a file goes
    if any(name.startswith("delete") for name in opts) or "force" in opts:
        out.append(Transfer("remove", targets[0], tree=True))
    return out
