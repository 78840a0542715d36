"""Programs that run another program: each with its real option grammar and where its command is.

For every wrapper the engine sees through, :data:`WRAPPERS` says how ``getopt`` reads its options (which take an
argument, which may be combined or attached, its long options), how many operands come before the command
(``timeout DURATION``, ``flock LOCK``), which options carry a command line of their own (``flock -c``, ``su -c``,
``env -S``), which options mean it runs nothing (``command -v``, ``sudo -l``, ``--help``) and what it does with no
command (nothing, or start a shell). :func:`unwrap` applies that to one argument list. An option a table does not
know makes the line opaque: the engine never guesses where a command starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

from policies.getopt import NONE, OPTIONAL, REQUIRED, Grammar, Scan, scan

INFO = {"help": NONE, "version": NONE}


@dataclass(frozen=True)
class Wrapper:
    """How one wrapper finds the command it runs (see the module docstring)."""

    grammar: Grammar
    operands_before: int = 0
    assignments: bool = False
    command_opts: frozenset[str] = frozenset()
    split_opts: frozenset[str] = frozenset()
    no_exec_opts: frozenset[str] = frozenset()
    shell_opts: frozenset[str] = frozenset()
    without_command: str = "none"   # none | shell | echo
    joined: bool = False            # the command words are joined and run by ``sh -c`` (watch)
    exec_opts: frozenset[str] = frozenset()  # watch -x: run the words directly instead
    replace_opts: frozenset[str] = frozenset()
    args_open: bool = False         # arguments are added from input (xargs, parallel)
    opaque_opts: dict[str, str] = field(default_factory=dict)  # option -> why it makes the line opaque
    file_operands: bool = False     # its operands are files, never a command (script's typescript)
    late_command_opts: bool = False  # ``flock LOCK -c CMD``, ``sg GROUP -c CMD``: -c after the first operand
    leading_operand: bool = False   # ``setarch ARCH [options] [program]``: one operand before the options


class _WrapperFields(TypedDict, total=False):
    """The fields of :class:`Wrapper` after its grammar, as ``_w`` takes them."""

    operands_before: int
    assignments: bool
    command_opts: frozenset[str]
    split_opts: frozenset[str]
    no_exec_opts: frozenset[str]
    shell_opts: frozenset[str]
    without_command: str
    joined: bool
    exec_opts: frozenset[str]
    replace_opts: frozenset[str]
    args_open: bool
    opaque_opts: dict[str, str]
    file_operands: bool
    late_command_opts: bool
    leading_operand: bool


def _w(optstring: str, long: dict[str, int] | None = None, *, numeric: bool = False, dash_is_option: bool = False,
       **kw: Unpack[_WrapperFields]) -> Wrapper:
    return Wrapper(Grammar(optstring, {**INFO, **(long or {})}, numeric, dash_is_option), **kw)


def _fs(*names: str) -> frozenset[str]:
    return frozenset(names)


R, N, O = REQUIRED, NONE, OPTIONAL  # noqa: E741 (the getopt table reads better short)

SU_LONG = {"command": R, "session-command": R, "fast": N, "group": R, "supp-group": R, "login": N,
           "preserve-environment": N, "pty": N, "shell": R, "whitelist-environment": R}

WRAPPERS: dict[str, Wrapper] = {
    "env": _w("+a:iC:S:u:v0", {"ignore-environment": N, "unset": R, "chdir": R, "split-string": R, "debug": N,
                                "null": N, "argv0": R, "block-signal": O, "default-signal": O, "ignore-signal": O,
                                "list-signal-handling": N},
              dash_is_option=True, assignments=True, split_opts=_fs("-S", "--split-string"),
              no_exec_opts=_fs("--help", "--version", "--list-signal-handling")),
    "command": _w("+pvV", no_exec_opts=_fs("-v", "-V")),
    "builtin": _w("+"),
    "exec": _w("+cla:"),
    "nohup": _w("+", no_exec_opts=_fs("--help", "--version")),
    "time": _w("+ao:f:pqvV", {"append": N, "output": R, "format": R, "portability": N, "quiet": N, "verbose": N},
               no_exec_opts=_fs("--help", "--version", "-V")),
    "nice": _w("+n:", {"adjustment": R}, numeric=True, no_exec_opts=_fs("--help", "--version")),
    "ionice": _w("+c:n:p:P:tu:hV", {"class": R, "classdata": R, "pid": R, "pgid": R, "ignore": N, "uid": R},
                 no_exec_opts=_fs("-p", "-P", "-u", "--pid", "--pgid", "--uid", "-h", "-V", "--help", "--version")),
    "stdbuf": _w("+i:o:e:", {"input": R, "output": R, "error": R}, no_exec_opts=_fs("--help", "--version")),
    "timeout": _w("+fk:ps:v", {"foreground": N, "kill-after": R, "preserve-status": N, "signal": R, "verbose": N},
                  operands_before=1, no_exec_opts=_fs("--help", "--version")),
    "setsid": _w("+cfwhV", {"ctty": N, "fork": N, "wait": N}, no_exec_opts=_fs("-h", "-V", "--help", "--version")),
    "chroot": _w("+", {"groups": R, "userspec": R, "skip-chdir": N}, operands_before=1, without_command="shell",
                 no_exec_opts=_fs("--help", "--version")),
    "flock": _w("+sexnoFuw:E:hVc:", {"shared": N, "exclusive": N, "unlock": N, "nonblock": N, "nb": N,
                                     "timeout": R, "wait": R, "conflict-exit-code": R, "close": N, "no-fork": N,
                                     "verbose": N, "command": R},
                operands_before=1, command_opts=_fs("-c", "--command"), late_command_opts=True,
                no_exec_opts=_fs("-h", "-V", "--help", "--version")),
    "taskset": _w("+pcahV", {"pid": N, "cpu-list": N, "all-tasks": N}, operands_before=1,
                  no_exec_opts=_fs("-p", "--pid", "-h", "-V", "--help", "--version")),
    "chrt": _w("+abdfiomprRvT:P:D:hV", {"all-tasks": N, "batch": N, "deadline": N, "fifo": N, "idle": N,
                                          "other": N, "rr": N, "reset-on-fork": N, "max": N, "pid": N,
                                          "verbose": N, "sched-runtime": R, "sched-period": R,
                                          "sched-deadline": R},
               operands_before=1, no_exec_opts=_fs("-p", "--pid", "-m", "--max", "-h", "-V", "--help",
                                                   "--version")),
    "strace": _w("+a:Ab:cCdDe:E:fFhiI:kno:O:p:P:qrs:S:tTu:U:vVwxX:yYzZ",
                 {"columns": R, "output-append-mode": N, "detach-on": R, "summary-only": N, "summary-wall-clock": N,
                  "summary": N, "debug": N, "daemonize": O, "env": R, "follow-forks": N, "output-separately": N,
                  "instruction-pointer": N, "interruptible": R, "stack-trace": N, "syscall-number": N,
                  "output": R, "summary-syscall-overhead": R, "attach": R, "trace-path": R, "quiet": O,
                  "relative-timestamps": O, "string-limit": R, "summary-sort-by": R, "absolute-timestamps": O,
                  "syscall-times": O, "user": R, "summary-columns": R, "no-abbrev": N, "verbose": R,
                  "const-print-style": R, "decode-fds": O, "decode-pids": O, "failed-only": N,
                  "successful-only": N, "trace": R, "signal": R, "abbrev": R, "raw": R, "read": R, "write": R,
                  "fault": R, "inject": R, "status": R, "quiet-attach": N, "seccomp-bpf": N, "tips": O,
                  "kill-on-exit": N, "argv0": R, "timestamps": O, "namespace": R, "secontext": O,
                  "always-show-pid": N, "follow-forks-output": N},
                 no_exec_opts=_fs("-h", "-V", "--help", "--version")),
    "ltrace": _w("+a:A:bcCdDe:fF:hiln:L:o:p:rs:StTu:Vwx:", {"align": R, "config": R, "demangle": N, "debug": O,
                                                            "library": R, "output": R, "indent": R,
                                                            "no-signals": N, "where": R},
                 no_exec_opts=_fs("-h", "-V", "--help", "--version")),
    "unbuffer": _w("+p"),
    "sudo": _w("+ABbC:c:D:Eeg:Hh::iKklNnPp:R:r:SsT:t:U:u:Vv",
               {"askpass": N, "background": N, "bell": N, "close-from": R, "login-class": R, "chdir": R,
                "preserve-env": O, "edit": N, "group": R, "set-home": N, "host": R, "login": N,
                "remove-timestamp": N, "reset-timestamp": N, "list": N, "no-update": N, "non-interactive": N,
                "preserve-groups": N, "prompt": R, "chroot": R, "role": R, "stdin": N, "shell": N, "type": R,
                "command-timeout": R, "other-user": R, "user": R, "validate": N},
               assignments=True, shell_opts=_fs("-s", "--shell", "-i", "--login"),
               no_exec_opts=_fs("-l", "--list", "-v", "--validate", "-k", "--reset-timestamp", "-K",
                                "--remove-timestamp", "-V", "--version", "--help"),
               opaque_opts={"-e": "sudo -e runs an editor", "--edit": "sudo -e runs an editor",
                            "-h": "sudo -h", "-R": "sudo -R runs a program of another root directory",
                            "--chroot": "sudo -R runs a program of another root directory"}),
    "doas": _w("+a:C:Lnsu:", no_exec_opts=_fs("-C", "-L"), shell_opts=_fs("-s")),
    "su": _w("+c:fg:G:lmpPs:hVw:", SU_LONG, dash_is_option=True, command_opts=_fs("-c", "--command",
                                                                                  "--session-command"),
             without_command="shell", no_exec_opts=_fs("-h", "-V", "--help", "--version"),
             opaque_opts={"-s": "su -s names another shell", "--shell": "su -s names another shell"}),
    "runuser": _w("+c:fg:G:lmpPs:u:hVw:", {**SU_LONG, "user": R}, dash_is_option=True,
                  command_opts=_fs("-c", "--command", "--session-command"), without_command="shell",
                  no_exec_opts=_fs("-h", "-V", "--help", "--version"),
                  opaque_opts={"-s": "runuser -s names another shell", "--shell": "runuser -s names another shell"}),
    "sg": _w("+c:", command_opts=_fs("-c"), operands_before=1, joined=True, late_command_opts=True),
    "xargs": _w("+0a:E:e::hI:i::L:l::n:oP:prs:txd:", {"null": N, "arg-file": R, "delimiter": R, "eof": O,
                                                      "replace": O, "max-lines": O, "max-args": R,
                                                      "interactive": N, "max-procs": R, "process-slot-var": R,
                                                      "no-run-if-empty": N, "max-chars": R, "verbose": N,
                                                      "show-limits": N, "exit": N, "open-tty": N},
                without_command="echo", replace_opts=_fs("-I", "-i", "--replace"), args_open=True,
                no_exec_opts=_fs("-h", "--help", "--version")),
    "watch": _w("+bcd::eghn:ptvwxq:rs:", {"beep": N, "color": N, "no-color": N, "differences": O, "errexit": N,
                                            "chgexit": N, "equexit": R, "interval": R, "precise": N,
                                            "no-title": N, "no-wrap": N, "exec": N, "no-linewrap": N},
                joined=True, exec_opts=_fs("-x", "--exec"), no_exec_opts=_fs("-h", "-v", "--help", "--version")),
    "script": _w("ac:eE:fqB:I:O:T:t::m:hV", {"append": N, "command": R, "echo": R, "return": N, "flush": N,
                                              "force": N, "quiet": N, "log-io": R, "log-in": R, "log-out": R,
                                              "log-timing": R, "timing": O, "logging-format": R,
                                              "output-limit": R},
                 command_opts=_fs("-c", "--command"), without_command="shell", file_operands=True,
                 no_exec_opts=_fs("-h", "-V", "--help", "--version")),
    "unshare": _w("+fm::u::i::n::p::U::C::T::rcR:w:S:G:l", {
        "mount": O, "uts": O, "ipc": O, "net": O, "pid": O, "user": O, "cgroup": O, "time": O, "fork": N,
        "kill-child": O, "mount-proc": O, "map-root-user": N, "map-current-user": N, "map-user": R,
        "map-group": R, "map-users": R, "map-groups": R, "map-auto": N, "propagation": R, "setgroups": R,
        "keep-caps": N, "root": R, "wd": R, "setuid": R, "setgid": R, "monotonic": R, "boottime": R,
        "load-interp": R}, without_command="shell", no_exec_opts=_fs("--help", "--version")),
    "nsenter": _w("+at:m::u::i::n::p::C::U::T::S:G:r::w::W::FZce", {
        "all": N, "target": R, "mount": O, "uts": O, "ipc": O, "net": O, "pid": O, "cgroup": O, "user": O,
        "time": O, "setuid": R, "setgid": R, "preserve-credentials": N, "root": O, "wd": O, "wdns": R,
        "no-fork": N, "follow-context": N, "env": N, "join-cgroup": N, "user-parent": N, "keep-caps": N},
        without_command="shell", no_exec_opts=_fs("--help", "--version")),
    "setpriv": _w("+dhV", {"dump": N, "no-new-privs": N, "nnp": N, "inh-caps": R, "ambient-caps": R,
                           "bounding-set": R, "keep-groups": N, "clear-groups": N, "init-groups": N,
                           "groups": R, "ruid": R, "euid": R, "rgid": R, "egid": R, "reuid": R, "regid": R,
                           "securebits": R, "pdeathsig": R, "selinux-label": R, "apparmor-profile": R,
                           "landlock-access": R, "landlock-rule": R, "reset-env": N},
                  no_exec_opts=_fs("-d", "--dump", "-h", "-V", "--help", "--version")),
    "sshpass": _w("+f:d:p:P:evhV", no_exec_opts=_fs("-h", "-V")),
    "ssh-agent": _w("+a:cDdE:kP:st:", without_command="none", no_exec_opts=_fs("-k", "-c", "-s", "-D", "-d")),
    "logsave": _w("+asv", operands_before=1),
    "pkexec": _w("+", {"user": R, "disable-internal-agent": N, "keep-cwd": N}, without_command="shell"),
    "numactl": _w("+ai:p:m:C:N:lsHb", {"all": N, "interleave": R, "preferred": R, "membind": R,
                                        "physcpubind": R, "cpunodebind": R, "localalloc": N, "show": N,
                                        "hardware": N, "balancing": N, "offset": R, "length": R, "strict": N,
                                        "shmmode": R, "shmid": R, "shm": R, "file": R, "touch": N, "dump": N,
                                        "dump-nodes": N, "preferred-many": R, "cpu-compress": N},
                  no_exec_opts=_fs("-s", "--show", "-H", "--hardware")),
    "setarch": _w("+v3BFILRSTXZ", {"verbose": N, "uname-2.6": N, "3gb": N, "4gb": N, "addr-compat-layout": N,
                                   "addr-no-randomize": N, "fdpic-funcptrs": N, "mmap-page-zero": N,
                                   "read-implies-exec": N, "short-inode": N, "sticky-timeouts": N,
                                   "whole-seconds": N, "list": N, "show": O},
                  leading_operand=True, without_command="shell", no_exec_opts=_fs("--list", "--show")),
}
for _arch in ("linux32", "linux64", "i386", "x86_64", "uname26"):
    WRAPPERS[_arch] = Wrapper(WRAPPERS["setarch"].grammar, without_command="shell")

# ``time`` as the shell's reserved word (unquoted, not a path) only knows -p
TIME_KEYWORD = _w("+p")

# Programs that run a command given to them but whose grammar the engine does not parse: always opaque.
RUNNERS: dict[str, str] = {name: f"{name} runs a command the bastion does not parse" for name in (
    "parallel", "sem", "valgrind", "perf", "catchsegv", "fakeroot", "fakeroot-sysv", "faketime", "proxychains",
    "proxychains4", "torsocks", "torify", "tsocks", "trickle", "cpulimit", "chronic", "daemonize",
    "start-stop-daemon", "setuidgid", "chpst", "softlimit", "envdir", "envuidgid", "schroot", "proot", "nq",
    "tsp", "ts", "task-spooler", "run-one", "cronic", "flatpak-spawn", "toolbox", "distrobox-enter", "rlwrap",
    "firejail", "bwrap", "systemd-run", "systemd-nspawn", "machinectl", "runcon", "capsh", "dbus-launch",
    "dbus-run-session", "xvfb-run", "dtach", "abduco", "tmux", "screen", "byobu", "at", "batch", "crontab",
    "run-parts", "prlimit", "cgexec", "schedtool", "nocache", "eatmydata", "ionice-wrapper", "sshfs",
    "direnv", "mise", "asdf", "nvm", "pyenv", "rbenv", "conda", "mamba", "pipx", "uvx", "npx", "bunx", "pnpx",
    "newgrp", "login", "expect", "empty", "ttyrec", "asciinema", "termdown", "entr", "inotifywait", "when-changed",
    "watchexec", "reflex", "nodemon", "supervisorctl", "openvt", "chvt", "sux", "ksu", "calife", "super",
    "op", "gosu", "su-exec", "s6-setuidgid", "setlock", "lckdo", "with-lock-ex", "timelimit", "ulimit-run",
    "localedef", "xdg-open", "sensible-editor", "sensible-pager", "sensible-browser", "editor", "pager",
    "select-editor", "run-mailcap", "see", "edit", "compose", "print", "gtk-launch", "exo-open", "gio",
    "kstart", "kioclient", "wine", "qemu-user", "box64", "dosbox", "mono", "dotnet", "coreutils", "stdbuf-wrapper",
    "doas-keepenv", "sudoreplay", "pkttyagent", "x-terminal-emulator", "xterm", "gnome-terminal", "konsole",
)}


@dataclass
class Unwrapped:
    """Where a wrapper's command is, and what else it runs."""

    command: int | None = None          # index (into the argument list) of the wrapped program, if any
    lines: list[str] = field(default_factory=list)   # command lines it runs through a shell (judged as such)
    opaque: list[str] = field(default_factory=list)
    runs_nothing: bool = False
    replace: str | None = None          # xargs -I's replacement string
    args_open: bool = False
    step: str = ""
    resplit: list[str] | None = None    # env -S: the wrapper's arguments after splitting (parse again)
    default_program: str | None = None  # xargs with no command runs echo
    assignments: list[str] = field(default_factory=list)  # NAME=VALUE operands (env, sudo)


def _describe(name: str, s: Scan, args: Sequence[str], upto: int) -> str:
    opts = " ".join(o if v is None else f"{o} {v}" for o, v in s.options)
    before = " ".join(args[i] for i in s.operands if i < upto)
    parts = [p for p in (f"options {opts}" if opts else "", f"operands {before}" if before else "") if p]
    return f"{name}: {'; '.join(parts) or 'no options'}"


def unwrap(name: str, args: Sequence[str], spec: Wrapper | None = None) -> Unwrapped:
    """Read ``name args...`` with the wrapper's grammar: where the command starts and what else it runs."""
    w = spec or WRAPPERS[name]
    lead = 1 if w.leading_operand and args and not args[0].startswith("-") else 0
    s = scan(w.grammar, args, lead)
    out = Unwrapped(args_open=w.args_open)
    if s.error is not None:
        out.opaque.append(f"{name}: {s.error} (the bastion does not guess where its command starts)")
        return out
    for opt, _ in s.options:
        if opt in w.opaque_opts:
            out.opaque.append(w.opaque_opts[opt])
    if name == "strace" and any(v.startswith(("|", "!")) for v in s.values("-o", "--output")):
        out.opaque.append("strace -o |CMD pipes its output into a command")
    if out.opaque:
        return out
    if any(opt in w.no_exec_opts for opt, _ in s.options):
        out.runs_nothing = True
        out.step = _describe(name, s, args, len(args)) + " (runs no command)"
        return out
    splits = s.values(*w.split_opts) if w.split_opts else []
    if splits:
        out.resplit = splits
        out.command = s.operands[0] if s.operands else None  # where the words after the -S string start
        out.step = f"{name}: -S splits {splits[0]!r} into arguments"
        return out
    commands = s.values(*w.command_opts) if w.command_opts else []
    operands = list(s.operands)
    if w.assignments:
        while operands and _assignment(args[operands[0]]):
            out.assignments.append(args[operands.pop(0)])
    if w.late_command_opts and len(operands) >= 2 and args[operands[1]] in w.command_opts:
        if len(operands) < 3:
            out.opaque.append(f"{name} {args[operands[1]]} without a command")
            return out
        commands.append(args[operands[2]])
        operands = operands[:1] + operands[3:]
    if name in ("su", "runuser") and not s.has("-u", "--user"):
        # su [options] [-] [USER [ARG...]]: the ARGs go to the user's shell; only ``-c CMD`` is seen through
        shell_args = [args[i] for i in operands[1:]]
        if shell_args[:1] in (["-c"], ["--command"]) and len(shell_args) == 2 and not commands:
            commands.append(shell_args[1])
        elif shell_args:
            out.opaque.append(f"{name} passes {shell_args[0]!r} to the user's shell")
            return out
        operands = []
    if name == "runuser" and s.has("-u", "--user") and commands:
        out.opaque.append("runuser -u with -c")
        return out
    if w.file_operands:
        operands = []
    if len(operands) < w.operands_before:
        if commands:
            operands = []
        elif name == "flock" or name in ("taskset", "chrt"):
            out.runs_nothing = True
            out.step = _describe(name, s, args, len(args)) + " (runs no command)"
            return out
        else:
            out.opaque.append(f"{name}: missing operand")
            return out
    rest = operands[w.operands_before:]
    out.lines.extend(commands)
    shell = any(opt in w.shell_opts for opt, _ in s.options)
    if w.replace_opts and s.has(*w.replace_opts):
        vals = [v for o, v in s.options if o in w.replace_opts]
        out.replace = vals[-1] if vals and vals[-1] else "{}"
    if rest and not commands:
        if w.joined and not (w.exec_opts and s.has(*w.exec_opts)):
            out.lines.append(" ".join(args[i] for i in rest))
        else:
            out.command = rest[0]
    elif not rest and not commands:
        if shell or w.without_command == "shell":
            out.opaque.append(f"{name} starts a shell")
            return out
        if w.without_command == "echo":
            out.default_program = "echo"
            out.step = _describe(name, s, args, len(args)) + " -> echo"
            return out
        out.runs_nothing = True
    elif rest and commands:
        out.opaque.append(f"{name}: a command both in an option and as operands")
        return out
    target = args[out.command] if out.command is not None else (f"{commands[0]!r}" if commands else "nothing")
    out.step = _describe(name, s, args, out.command if out.command is not None else len(args)) + f" -> {target}"
    return out


def _assignment(word: str) -> bool:
    name, eq, _ = word.partition("=")
    return bool(eq) and name.replace("_", "a").isalnum() and not name[:1].isdigit()
