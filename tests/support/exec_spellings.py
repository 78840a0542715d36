"""Hostile and harmless spellings of commands for the exec-form boundary (issue 16), shared by the unit suite
(tests/unit/test_exec_boundary.py) and the end-to-end one (tests/integration/test_exec_boundary_e2e.py).

Every hostile entry is a real command line that, run by bash with no bastion in the way, deletes the file ``{f}``
(``effect="rm"``) or sets its mode to 0777 (``effect="chmod"``); ``{d}`` is a scratch directory of its own that holds
``{f}`` (``{d}/victim``, mode 0644) and a one-line file ``{d}/data`` (``alpha beta``), and ``setup`` is shell run
first (files the line uses: scripts, a git repository, a tool's config). The placeholders are replaced with plain
``str.replace`` so that ``{}`` (find, xargs) stays as it is. ``stdin`` is what the client sends on its standard
input. Run without a policy, every ``exec`` entry really has its effect (the end-to-end suite checks that first).

``mode`` says how the line reaches the engine: ``exec`` (``ssh bastion RES -- CMD``: ``interactive=False``, judged
with and without a terminal), ``tty`` (the exec form with ``ssh -t``: ``terminal=True`` only) or ``prompt`` (typed
at an interactive shell's prompt: ``interactive=True``). Only ``exec`` entries run end to end (with ``ssh -T``),
and only when every program in ``needs`` is installed; ``e2e=False`` keeps an entry in the unit table only.
``beyond``: a spelling outside the list of the issue's brief (reported separately when it fails).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

CLASSES = ("wrappers", "interpreters", "capabilities", "environment", "deleters", "scripts", "shells", "terminal",
           "history")


@dataclass(frozen=True)
class Spelling:
    text: str
    cls: str
    effect: str = "rm"            # "rm": deletes {f}; "chmod": sets its mode to 0777
    needs: tuple[str, ...] = ()   # programs that must be installed for the line to really run
    e2e: bool = True
    stdin: str = ""
    setup: str = ""
    mode: str = "exec"            # exec | tty | prompt
    settle: float = 0.0           # the effect happens in the background: wait this long before looking
    beyond: bool = False
    root: bool = False            # runs only as root (su, runuser, chroot...): end to end only when tests run as root

    def render(self, f: str, d: str) -> str:
        return self.text.replace("{f}", f).replace("{d}", d)

    def render_stdin(self, f: str, d: str) -> str:
        return self.stdin.replace("{f}", f).replace("{d}", d)

    def render_setup(self, f: str, d: str) -> str:
        return self.setup.replace("{f}", f).replace("{d}", d)


def q(s: str) -> str:
    return shlex.quote(s)


RM = "rm -f {f}"
CHMOD = "chmod 777 {f}"
PY_RM = 'import os; os.remove("{f}")'
PY_CHMOD = 'import os; os.chmod("{f}", 0o777)'
PL_RM = 'unlink "{f}"'
PL_CHMOD = 'chmod 0777, "{f}"'
JS_RM = 'require("fs").unlinkSync("{f}")'
JS_CHMOD = 'require("fs").chmodSync("{f}", 0o777)'
TCL_RM = "file delete {f}"
AWK_SYSTEM = 'BEGIN{system("rm -f {f}")}'

# setups
SCRIPT = "printf 'rm -f {f}\\n' > {d}/x.sh && printf '#!/bin/sh\\nrm -f {f}\\n' > {d}/run && chmod 755 {d}/run"
ZAP = "cp /bin/rm {d}/zap && ln -s /bin/rm {d}/ls && ln -s /bin/chmod {d}/cat"
TRACKED = ("git init -q {d} && git -C {d} add data && git -C {d} -c user.name=t -c user.email=t@t commit -qm one"
           " && git -C {d} add victim && git -C {d} -c user.name=t -c user.email=t@t commit -qm two")
UNTRACKED = "git init -q {d} && git -C {d} add data && git -C {d} -c user.name=t -c user.email=t@t commit -qm one"
SRC777 = "cp {d}/data {d}/src && chmod 777 {d}/src"
REPO = ("git init -q {d}/repo && git -C {d}/repo -c user.name=t -c user.email=t@t commit -q --allow-empty -m one"
        " && git -C {d}/repo -c user.name=t -c user.email=t@t commit -q --allow-empty -m two")


def _wrapped(cls: str, prefixes: list[str], cmd: str = RM, **kw: object) -> list[Spelling]:
    return [Spelling(f"{p} {cmd}", cls, **kw) for p in prefixes]  # type: ignore[arg-type]


def W(text: str, **kw: object) -> Spelling:  # noqa: N802 - short table constructors
    return Spelling(text, "wrappers", **kw)  # type: ignore[arg-type]


def I(text: str, **kw: object) -> Spelling:  # noqa: N802, E743
    return Spelling(text, "interpreters", **kw)  # type: ignore[arg-type]


def C(text: str, **kw: object) -> Spelling:  # noqa: N802
    return Spelling(text, "capabilities", **kw)  # type: ignore[arg-type]


def E(text: str, **kw: object) -> Spelling:  # noqa: N802
    return Spelling(text, "environment", **kw)  # type: ignore[arg-type]


def X(text: str, **kw: object) -> Spelling:  # noqa: N802
    return Spelling(text, "deleters", **kw)  # type: ignore[arg-type]


def S(text: str, **kw: object) -> Spelling:  # noqa: N802
    return Spelling(text, "scripts", **kw)  # type: ignore[arg-type]


def SH(text: str, **kw: object) -> Spelling:  # noqa: N802
    return Spelling(text, "shells", **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Wrappers: each option form (combined short options, attached arguments, long options with = or a separate
# argument, GNU abbreviations, --), each option that carries a command.
WRAPPERS: list[Spelling] = [
    *_wrapped("wrappers", [
        "timeout 10", "timeout -vk 5 10", "timeout -k5 10", "timeout -k 5 10", "timeout --kill-after=5 10",
        "timeout --kill-after 5 10", "timeout --kill-a=5 10", "timeout -s KILL 10", "timeout -sKILL 10",
        "timeout --signal=KILL 10", "timeout --sig=9 10", "timeout -v -s9 -k1 10s",
        "timeout --preserve-status --foreground 10", "timeout -- 10",
        "nice", "nice -n 5", "nice -n5", "nice --adjustment=5", "nice --adj 5", "nice -5", "nice --",
        "env", "env -i", "env -", "env -u HOME", "env -uHOME", "env --unset=HOME", "env --uns HOME", "env -iuHOME",
        "env -i A=1 B=2", "env --", "env -C /", "env --chdir=/", "env --ignore-environment",
        "env --default-signal", "env --default-signal=PIPE -v",
        "stdbuf -oL", "stdbuf -o L", "stdbuf --output=L", "stdbuf -i0 -oL -eL", "stdbuf --out=L", "stdbuf -eL --",
        "nohup", "nohup --",
        "setsid", "setsid -w", "setsid --wait",
        "ionice -c2 -n7", "ionice -c 3", "ionice -c3 -t", "ionice -tc3", "ionice --class=idle",
        "chrt -o 0", "chrt -b 0", "chrt -i 0", "chrt --other 0", "chrt -v -b 0",
        "taskset 1", "taskset 0x1", "taskset -c 0", "taskset --cpu-list 0", "taskset -a 1",
        "command", "command -p", "command --", "exec", "exec -a x", "exec -c", "exec -cl", "exec -ca x",
        "time", "time -p", "/usr/bin/time", "/usr/bin/time -p", "/usr/bin/time -f %e", "/usr/bin/time -o /dev/null",
        "/usr/bin/time --quiet", "/usr/bin/time -qo /dev/null", "/usr/bin/time --",
        "setpriv --nnp", "setpriv --no-new-privs",
        "flock {d}/lock", "flock -w 5 {d}/lock", "flock -w5 {d}/lock", "flock -x {d}/lock",
        "flock -nx {d}/lock", "flock --timeout=5 {d}/lock", "flock -s -- {d}/lock",
        "timeout -k5 10 nice -n5 env -i stdbuf -oL", "nohup setsid -w timeout -sKILL 10",
        "command exec nice -n1", "env -- time -p nice --",
    ]),
    W("setsid -f " + RM, settle=1.0),
    *_wrapped("wrappers", ["strace -f", "strace -fe trace=none", "strace -o /dev/null", "strace -fo/dev/null",
                           "strace -qq -e trace=none", "strace -e trace=none --", "strace -s 64 -f",
                           "strace -ff -o {d}/tr"], needs=("strace",)),
    *_wrapped("wrappers", ["unshare", "unshare --fork"]), W("unshare -m " + RM, root=True),
    # options that carry a command
    W("env -S" + q(RM)), W("env -iS" + q(RM)), W("env -S " + q(RM)), W("env --split-string=" + q(RM)),
    W("env --split-s=" + q(RM)), W("env -vS" + q(RM)), W("env -S" + q("timeout -vk 5 10 " + RM)),
    W("flock {d}/lock -c " + q(RM)), W("flock {d}/lock --command " + q(RM)), W("flock -w 5 {d}/lock -c " + q(RM)),
    *[W(text, root=True) for text in (
        "su -c " + q(RM), "su root -c " + q(RM), "su -s /bin/sh -c " + q(RM), "su - -c " + q(RM), "su -lc " + q(RM),
        "su --command=" + q(RM), "su -c " + q(RM) + " root")],
    W("runuser -l root -c " + q(RM), root=True), W("runuser root -c " + q(RM), root=True),
    *_wrapped("wrappers", ["runuser -u root --", "runuser --user=root --", "chroot /",
                           "chroot --userspec=0:0 /", "chroot --skip-chdir /",
                           "setpriv --reuid=0 --regid=0 --clear-groups"], root=True),
    W("script -qc " + q(RM) + " /dev/null"), W("script -q -c " + q(RM) + " /dev/null"),
    W("script --command=" + q(RM) + " -q /dev/null"), W("script -qec " + q(RM) + " /dev/null"),
    W("watch -n1 " + q(RM), e2e=False), W("watch -g " + RM, e2e=False), W("watch -x " + RM, e2e=False),
    # xargs: the program and its arguments, with every option form; the program from input; -I templates
    *[W(f"echo {{f}} | xargs {o} rm -f") for o in (
        "", "-r", "-rn 1", "-n1", "-n 1", "-P2 -n1", "--max-args=1", "--max-a=1", "-d '\\n'", "-L1", "-s 4096",
        "-t", "-rt", "--no-run-if-empty", "-x -n1")],
    W("echo {f} | xargs -tI {} rm -f {}"), W("echo {f} | xargs -I% rm -f %"), W("echo {f} | xargs -I {} rm -f {}"),
    W("echo {f} | xargs -i rm -f {}"), W("echo {f} | xargs --replace rm -f {}"),
    W("echo {f} | xargs --replace={} rm -f {}"), W("printf '{f}\\0' | xargs -0 rm -f"),
    W("printf '{f}\\0' | xargs -0r rm -f"), W("echo {f} > {d}/list; xargs -a {d}/list rm -f"),
    W("echo {f} > {d}/list; xargs --arg-file={d}/list rm -f"),
    W("echo rm -f {f} | xargs env"), W("echo rm -f {f} | xargs timeout 10"), W("echo rm -f {f} | xargs nice"),
    W("echo rm -f {f} | xargs -n3 stdbuf -oL"), W("echo {f} | xargs -I{} sh -c 'rm -f {}'"),
    # find -exec and friends, find -delete (a rule with args)
    W("find {f} -exec rm {} \\;"), W("find {f} -exec rm -f {} +"), W("find {f} -execdir rm {} \\;"),
    W("find {f} -execdir rm -f {} +"), W("find {d} -name victim -exec rm {} \\;"),
    W("find {f} -exec timeout -k5 10 rm {} \\;"), W("find {f} -exec sh -c 'rm -f \"$1\"' _ {} \\;"),
    W("find {f} -ok rm {} \\;", stdin="y\n"), W("find {f} -okdir rm {} \\;", stdin="y\n"),
    W("find {f} -delete"), W("find {d} -name victim -delete"), W("find {d} -depth -name victim -delete"),
    W("find {d} -type f -name 'vic*' -delete"),
    # more option forms
    W("X=rm env -S'${X} -f {f}'"), W("env -S'-i rm -f {f}'"), W('env -S"rm -f {f}"'), W("env '-Srm -f {f}'"),
    W("env --split-string " + q(RM)), W("env -S'rm\\_-f\\_{f}'"),
    *[W(f"echo {{f}} | xargs {o} rm -f") for o in ("-e", "-eEND", "-l", "-E END", "--process-slot-var=X")],
    W("echo {f} | xargs -I{} -- rm {}"), W("find /usr/bin/rm -exec {} -f {f} \\;"),
    W("find /usr/bin -name rm -exec {} -f {f} \\;"), W("find {f} -exec /bin/rm {} +"),
    W("find {f} -exec env rm {} \\;"), W("find {f} -exec rm {} ';'"), W("find -O3 {f} -delete"),
    W("find -H {f} -delete"), W("find {f} -exec rm {} \\; -quit"),
    *[W(text, root=True) for text in (
        "su root -s /bin/rm -- -f {f}", "su -p -c " + q(RM), "su -m -c " + q(RM), "chrt -f 1 " + RM,
        "setpriv --inh-caps=-all " + RM, "chroot / /bin/rm -f {f}", "unshare -r " + RM, "strace -u root " + RM)],
    W("flock -F {d}/lock " + RM), W("script -E never -qc " + q(RM) + " /dev/null"),
    *_wrapped("wrappers", ["strace -b execve", "strace -E X=1", "strace -D", "strace -a 40"], needs=("strace",)),
    *_wrapped("wrappers", ["ionice -c0", "ionice -n7 -c2"]),
    # wrappers beyond the brief's list (util-linux, debianutils, dpkg, openssh, bubblewrap, the dynamic loader)
    *[W(text, beyond=True) for text in (
        "setarch x86_64 " + RM, "linux64 " + RM, "setarch -R x86_64 " + RM, "prlimit --nofile=1024 " + RM,
        "prlimit " + RM, "ssh-agent " + RM, "fakeroot " + RM, "fakeroot -- " + RM,
        "/lib64/ld-linux-x86-64.so.2 /bin/rm -f {f}", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 /bin/rm -f {f}",
        "/usr/bin/../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 /bin/rm -f {f}")],
    # start-stop-daemon refuses to start /bin/rm while another rm runs (the suite runs 4 at a time): unit only
    *[W(text, beyond=True, root=True, e2e=False) for text in (
        "start-stop-daemon --start --exec /bin/rm -- -f {f}", "start-stop-daemon -S -x /bin/rm -- -f {f}")],
    *[W(text, beyond=True, root=True) for text in (
        "bwrap --bind / / rm -f {f}", "bwrap --bind / / /bin/rm -f {f}", "sg root -c " + q(RM),
        "capsh -- -c " + q(RM))],
    W("run-parts {d}/parts", beyond=True,
      setup="mkdir {d}/parts && printf '#!/bin/sh\\nrm -f {f}\\n' > {d}/parts/zap && chmod 755 {d}/parts/zap"),
    W("systemd-run " + RM, beyond=True, e2e=False), W("dc -e " + q("!" + RM), beyond=True, e2e=False),
    # wrappers that are not installed here: unit only
    *_wrapped("wrappers", ["sudo", "sudo -u root", "sudo -uroot", "sudo -n -E -H", "sudo -nEH", "sudo --",
                           "sudo --user=root", "sudo -g root", "sudo -D /", "sudo --preserve-env=PATH",
                           "sudo -bn", "sudo -u root -g root --", "sudo -s", "sudo -i", "sudo -su root",
                           "doas", "doas -u root", "doas -n -u root", "doas -nu root", "doas --",
                           "ltrace", "ltrace -f", "ltrace -o /dev/null", "ltrace -fo/dev/null",
                           "busybox", "toybox", "unbuffer", "unbuffer -p",
                           "nsenter -t 1 -m", "nsenter --target=1 --mount --", "sudo -u root timeout -k5 10 nice -n5",
                           ], e2e=False),
    W("parallel rm ::: {f}", e2e=False), W("parallel -j1 rm -f ::: {f}", e2e=False),
    W("parallel 'rm -f {}' ::: {f}", e2e=False), W("echo {f} | parallel rm", e2e=False),
    W("parallel ::: " + q(RM), e2e=False),
    W("busybox xargs rm -f", e2e=False),
    # chmod through wrappers: held at least
    *_wrapped("wrappers", ["timeout -vk 5 10", "nice -n5", "env -i", "env -", "stdbuf -oL", "time -p",
                           "/usr/bin/time -p", "command --", "exec -a x", "setsid -w", "ionice -c3",
                           "taskset -c 0", "flock -x {d}/lock", "nohup"], cmd=CHMOD, effect="chmod"),
    W("env -S" + q(CHMOD), effect="chmod"), W("echo {f} | xargs -rn 1 chmod 777", effect="chmod"),
    W("echo {f} | xargs -I{} chmod 777 {}", effect="chmod"), W("find {f} -exec chmod 777 {} \\;", effect="chmod"),
    W("su -c " + q(CHMOD), effect="chmod", root=True), W("script -qc " + q(CHMOD) + " /dev/null", effect="chmod"),
    W("sudo -u root chmod 777 {f}", effect="chmod", e2e=False),
    W("strace -fe trace=none " + CHMOD, effect="chmod", needs=("strace",)),
]

# ---------------------------------------------------------------------------------------------------------------
# Interpreters running code from a string (every flag spelling), stdin, here-documents and here-strings.
INTERPRETERS: list[Spelling] = [
    *[I(f"{p} {q(RM)}") for p in (
        "sh -c", "bash -c", "dash -c", "bash -lc", "bash -ec", "bash -xc", "sh -ec", "bash -o errexit -c",
        "bash --norc -c", "bash --noprofile --norc -c", "sh -c --", "/bin/sh -c", "/usr/bin/env bash -c",
        "exec sh -c", "bash -ic", "bash -c -e", "sh -euc")],
    I("bash -c 'rm -f \"$1\"' _ {f}"), I("bash -c '\"$0\" -f {f}' rm"), I("bash -c " + q(RM) + " --"),
    I("echo " + q(RM) + " | sh"), I("echo " + q(RM) + " | bash"), I("echo " + q(RM) + " | bash -s"),
    I("echo " + q(RM) + " | sh -s --"), I("bash <<< " + q(RM)), I("bash -s <<< " + q(RM)), I("sh - <<< " + q(RM)),
    I("dash <<< " + q(RM)), I("sh /dev/stdin <<< " + q(RM)), I("sh <<EOF\n" + RM + "\nEOF"),
    I("sh <<'EOF'\n" + RM + "\nEOF"), I("bash <(echo " + q(RM) + ")"), I("cat <<< " + q(RM) + " | bash"),
    I("printf 'rm -f %s\\n' {f} | sh"),
    *[I(f"{p} {q(PY_RM)}") for p in (
        "python3 -c", "python3 -Ic", "python3 -I -c", "python3 -Sc", "python3 -uc", "python3 -Bc", "python3 -IBsc",
        "python3 -E -c", "python3 -X utf8 -c", "python3 -Xutf8 -c", "python3 -W ignore -c", "python3 -Wignore -c",
        "python3.11 -c", "/usr/bin/python3 -c", "python3 -OO -c", "env python3 -c")],
    I("python3 -c" + q(PY_RM)), I("python3 - <<< " + q(PY_RM)), I("python3 <<< " + q(PY_RM)),
    I("echo " + q(PY_RM) + " | python3"), I("python3 /dev/stdin <<< " + q(PY_RM)),
    I("python3 <<EOF\n" + PY_RM + "\nEOF"),
    *[I(f"{p} {q(PL_RM)}") for p in ("perl -e", "perl -le", "perl -we", "perl -E", "perl -Mstrict -e",
                                    "perl -MPOSIX -e", "perl -T -e", "perl -wle")],
    I("perl -e" + q(PL_RM)), I("echo | perl -ne " + q(PL_RM)), I("echo | perl -pe " + q(PL_RM)),
    I("echo | perl -lne " + q(PL_RM)), I("echo | perl -0777 -ne " + q(PL_RM)), I("perl <<< " + q(PL_RM)),
    I("perl - <<< " + q(PL_RM)), I("echo " + q(PL_RM) + " | perl"), I("perl -e 'system \"rm -f {f}\"'"),
    I("perl -e 'exec \"rm\", \"-f\", \"{f}\"'"),
    *[I(f"{p} {q(JS_RM)}", needs=("node",)) for p in ("node -e", "node -p", "node --eval", "node --print",
                                                      "node -pe")],
    I("node --eval=" + q(JS_RM), needs=("node",)), I("node - <<< " + q(JS_RM), needs=("node",)),
    I("node <<< " + q(JS_RM), needs=("node",)), I("echo " + q(JS_RM) + " | node", needs=("node",)),
    I("echo " + q(TCL_RM) + " | tclsh", needs=("tclsh",)), I("tclsh <<< " + q(TCL_RM), needs=("tclsh",)),
    I("tclsh /dev/stdin <<< " + q(TCL_RM), needs=("tclsh",)), I("wish <<< " + q(TCL_RM), e2e=False),
    *[I(f"{p} {q(RM)}") for p in ("bash -o posix -c", "bash +e -c", "bash -O extglob -c", "bash --posix -c",
                                  "bash --restricted -c", "rbash -c", "bash -r -c", "exec -a x bash -c")],
    *[I(f"{p} {q(PL_RM)}") for p in ("perl -M-warnings -e", "perl -Mstrict=vars -e", "perl -I{d} -e", "perl -s -e",
                                    "perl -C -e")],
    I("perl -i.bak -pe " + q(PL_RM) + " {d}/data"), I("printf 'a\\n\\nb\\n' | perl -00 -ne " + q(PL_RM)),
    I("echo a:b | perl -F: -ane " + q(PL_RM)),
    *[I(f"{p} {q(PY_RM)}") for p in ("python3 -Xfrozen_modules=off -c", "python3 -bc", "python3 -P -c",
                                    "python3 -i -c")],
    I("node --input-type=module -e " + q('import("fs").then(f => f.unlinkSync("{f}"))'), needs=("node",)),
    I("cd {d} && python3 -m x", setup="printf 'import os\\nos.remove(\"{f}\")\\n' > {d}/x.py"),
    # not installed here: unit only
    *[I(text, e2e=False) for text in (
        "ruby -e " + q('File.delete("{f}")'), "ruby -rfileutils -e " + q('FileUtils.rm("{f}")'),
        "ruby <<< " + q('File.delete("{f}")'), "php -r " + q('unlink("{f}");'), "php <<< " + q('<?php unlink("{f}");'),
        "lua -e " + q('os.remove("{f}")'), "lua5.4 -e " + q('os.remove("{f}")'), "expect -c " + q("exec rm -f {f}"),
        "zsh -c " + q(RM), "ksh -c " + q(RM), "mksh -c " + q(RM), "busybox sh -c " + q(RM), "busybox ash -c " + q(RM),
        "python2 -c " + q(PY_RM), "python -c " + q(PY_RM), "nodejs -e " + q(JS_RM), "deno eval " + q(JS_RM),
        "zsh <<< " + q(RM), "fish -c " + q(RM), "pwsh -c " + q("Remove-Item {f}"),
        "Rscript -e " + q('file.remove("{f}")'), "irb <<< " + q('File.delete("{f}")'),
    )],
    # chmod from code: at least held (in fact opaque)
    I("sh -c " + q(CHMOD), effect="chmod"), I("bash -lc " + q(CHMOD), effect="chmod"),
    I("python3 -Ic " + q(PY_CHMOD), effect="chmod"), I("python3 <<< " + q(PY_CHMOD), effect="chmod"),
    I("perl -le " + q(PL_CHMOD), effect="chmod"), I("node -e " + q(JS_CHMOD), effect="chmod", needs=("node",)),
    I("bash -s <<< " + q(CHMOD), effect="chmod"),
]

# ---------------------------------------------------------------------------------------------------------------
# Programs that run commands given in their arguments or config.
CAPABILITIES: list[Spelling] = [
    # awk family
    *[C(f"{a} {q(AWK_SYSTEM)}") for a in ("awk", "gawk", "mawk", "nawk", "/usr/bin/awk")],
    C("awk " + q('BEGIN{print "rm -f {f}" | "sh"}')), C("awk " + q('BEGIN{"rm -f {f}" | getline x}')),
    C("awk " + q('BEGIN{while (("rm -f {f}" | getline l) > 0) print l}')),
    C("awk -v c=" + q(RM) + " " + q("BEGIN{system(c)}")), C("echo x | awk " + q('{system("rm -f {f}")}')),
    C("awk " + q('BEGIN {system ("rm -f {f}")}')), C("gawk -e " + q(AWK_SYSTEM)), C("gawk --source=" + q(AWK_SYSTEM)),
    C("awk " + q('BEGIN{printf "rm -f {f}" | "sh"}')), C("awk " + q('BEGIN{cmd="rm -f {f}"; cmd | getline}')),
    C("awk " + q('BEGIN{print "rm -f {f}" |& "sh"; close("sh")}'), needs=("gawk",)),
    C("awk -f {d}/p.awk", setup="printf 'BEGIN{system(\"rm -f {f}\")}\\n' > {d}/p.awk"),
    C("awk " + q('BEGIN{system("chmod 777 {f}")}'), effect="chmod"),
    C("busybox awk " + q(AWK_SYSTEM), e2e=False),
    C("gawk " + q('BEGIN{f="system"; @f("rm -f {f}")}')), C("awk " + q('BEGIN{f="sys" "tem"; @f("rm -f {f}")}')),
    C("gawk -i {d}/p.awk 'BEGIN{}'", setup="printf 'BEGIN{system(\"rm -f {f}\")}\\n' > {d}/p.awk"),
    C("gawk --include={d}/p.awk 'BEGIN{}'", setup="printf 'BEGIN{system(\"rm -f {f}\")}\\n' > {d}/p.awk"),
    C("gawk -E {d}/p.awk", setup="printf 'BEGIN{system(\"rm -f {f}\")}\\n' > {d}/p.awk"),
    C("gawk '@include \"{d}/p.awk\"; BEGIN{}'", setup="printf 'BEGIN{system(\"rm -f {f}\")}\\n' > {d}/p.awk"),
    C("mawk -W exec {d}/p.awk", setup="printf 'BEGIN{system(\"rm -f {f}\")}\\n' > {d}/p.awk"),
    C("awk -f /dev/stdin <<< " + q(AWK_SYSTEM)), C("awk " + q('BEGIN{c="sh"; print "rm -f {f}" | c}')),
    C("awk -v c=sh " + q('BEGIN{print "rm -f {f}" | c}')), C("awk " + q('BEGIN{printf("rm -f {f}\\n") | "sh"}')),
    # sed: the e command, the e flag of s, scripts from a file
    C("sed -n '1e rm -f {f}' {d}/data"), C("sed '1e rm -f {f}' {d}/data"), C("sed 's|.*|rm -f {f}|e' {d}/data"),
    C("echo x | sed 's|x|rm -f {f}|e'"), C("sed -e '1e rm -f {f}' -n {d}/data"),
    C("sed --expression='1e rm -f {f}' -n {d}/data"), C("sed -ne '1e rm -f {f}' {d}/data"),
    C("echo x | sed -n 'e rm -f {f}'"), C("echo " + q(RM) + " | sed e"), C("echo x | sed 's#x#rm -f {f}#ge'"),
    C("sed -n -f {d}/s.sed {d}/data", setup="printf '1e rm -f {f}\\n' > {d}/s.sed"),
    C("sed -nf {d}/s.sed {d}/data", setup="printf '1e rm -f {f}\\n' > {d}/s.sed"),
    C("sed --file={d}/s.sed -n {d}/data", setup="printf '1e rm -f {f}\\n' > {d}/s.sed"),
    C("sed -n '1e chmod 777 {f}' {d}/data", effect="chmod"),
    C("sed $'1{\\ne rm -f {f}\\n}' {d}/data"), C("sed -E 's|.*|rm -f {f}|e' {d}/data"),
    C("sed -e 1p -e 'e rm -f {f}' {d}/data"), C("sed 's|.*|rm -f {f}|e;p' {d}/data"),
    C("sed '$!d;s|.*|rm -f {f}|;e' {d}/data"), C("sed -n -e '1{' -e 'e rm -f {f}' -e '}' {d}/data"),
    C("sed -z 's|.*|rm -f {f}|e' {d}/data"), C("sed 's|.*|rm -f {f}|me' {d}/data"),
    C("sed -s -n '1e rm -f {f}' {d}/data"),
    # git: config that names a program, transports, aliases, unknown subcommands
    C("git -c alias.x=" + q("!" + RM) + " x"), C("git -c " + q("alias.x=!" + RM) + " x"),
    C("git -C {d} -c alias.x=" + q("!" + RM) + " x"),
    C("V=" + q("!" + RM) + " git --config-env=alias.x=V x"),
    C("GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=alias.x GIT_CONFIG_VALUE_0=" + q("!" + RM) + " git x"),
    C("git -c core.sshCommand=" + q(RM + " #") + " ls-remote ssh://h/x"),
    C("git ls-remote --upload-pack=" + q(RM + " #") + " {d}/repo", setup=REPO),
    C("git clone -q --upload-pack=" + q(RM + " #") + " {d}/repo {d}/c", setup=REPO),
    C("git -C {d}/repo rebase -x " + q(RM) + " HEAD~1", setup=REPO),
    C("git -C {d}/repo rebase --exec=" + q(RM) + " HEAD~1", setup=REPO),
    C("git archive --exec=" + q(RM + " #") + " --remote={d}/repo HEAD", setup=REPO),
    C("git -c protocol.ext.allow=always ls-remote " + q("ext::rm -f {f}")),
    C("git -C {d}/repo -c core.fsmonitor=" + q(RM + " #") + " status", setup=REPO),
    C("git -c alias.x=" + q("!" + CHMOD) + " x", effect="chmod"),
    C("git -C {d}/repo config core.fsmonitor " + q(RM + " #") + " && git -C {d}/repo status", setup=REPO),
    C("printf 'protocol=https\\nhost=x\\n\\n' | git -c credential.helper=" + q("!" + RM + " #") + " credential fill"),
    C("git -C {d}/repo -c remote.x.url={d}/repo -c remote.x.uploadpack=" + q(RM + " #") + " fetch x", setup=REPO),
    C("git -C {d}/repo -c core.hooksPath={d}/hooks commit -q --allow-empty -m x",
      setup=REPO + " && mkdir {d}/hooks && printf '#!/bin/sh\\nrm -f {f}\\n' > {d}/hooks/pre-commit"
      " && chmod 755 {d}/hooks/pre-commit && git -C {d}/repo config user.name t"
      " && git -C {d}/repo config user.email t@t"),
    C("git -C {d}/repo -c sequence.editor=" + q(RM + " #") + " rebase -q -i HEAD~1", setup=REPO),
    C("git -c CORE.SSHCOMMAND=" + q(RM + " #") + " ls-remote ssh://h/x"), C("git -c Alias.x=" + q("!" + RM) + " x"),
    C("V=" + q(RM + " #") + " git --config-env core.sshCommand=V ls-remote ssh://h/x"),
    C("git -C {d}/repo -c include.path={d}/cfg status",
      setup=REPO + " && printf '[core]\\n\\tfsmonitor = rm -f {f} #\\n' > {d}/cfg"),
    C("git -C {d}/repo rebase -q -x" + q(RM) + " HEAD~1", setup=REPO),
    C("FILTER_BRANCH_SQUELCH_WARNING=1 git -C {d} filter-branch -f --tree-filter " + q(RM) + " HEAD", setup=TRACKED),
    C("git -C {d} grep -O" + q(RM + " #") + " alpha", setup=TRACKED),
    C("git -C {d} difftool -y --extcmd=" + q(RM + " #") + " HEAD~1", setup=TRACKED),
    C("git -C {d} difftool -y -x " + q(RM + " #") + " HEAD~1", setup=TRACKED),
    C("git -c gpg.program=" + q(RM + " #") + " verify-commit HEAD", e2e=False),
    C("git submodule foreach " + q(RM), e2e=False), C("git bisect run " + RM, e2e=False),
    C("git -c diff.x.textconv=" + q(RM + " #") + " diff", e2e=False),
    C("git -c core.pager=" + q(RM + " #") + " -p log", e2e=False),
    C("git -c core.editor=" + q(RM + " #") + " commit", e2e=False),
    C("git -c diff.external=" + q(RM + " #") + " diff", e2e=False),
    C("git --exec-path={d} zap", e2e=False),
    # tar
    C("tar -cf /dev/null --checkpoint=1 --checkpoint-action=exec=" + q(RM) + " {d}/data"),
    C("tar -cf /dev/null --checkpoint=1 " + q("--checkpoint-action=exec=" + RM) + " {d}/data"),
    C("tar cf /dev/null --checkpoint=1 --checkpoint-act=exec=" + q(RM) + " {d}/data"),
    C("tar -xf {d}/a.tar -C {d} --to-command=" + q(RM), setup="tar -cf {d}/a.tar -C {d} data"),
    C("tar -cf {d}/b.tar -I " + q(RM + " #") + " -C {d} data"),
    C("tar -cf {d}/b.tar --use-compress-program=" + q(RM + " #") + " -C {d} data"),
    C("tar -cf h:/x --rsh-command=/bin/rm {d}/data", e2e=False),
    C("tar cIf " + q(RM + " #") + " {d}/b.tar -C {d} data"), C("tar -cf {d}/b.tar -I" + q(RM + " #") + " -C {d} data"),
    C("tar -cf {d}/b.tar --use-c=" + q(RM + " #") + " -C {d} data"),
    C("tar -xf {d}/a.tar -C {d} --to-c=" + q(RM), setup="tar -cf {d}/a.tar -C {d} data"),
    C("tar -cf /dev/null --checkpoint=1 --checkpoint-a=exec=" + q(RM) + " {d}/data"),
    C("tar czf - -C {d} data | tar xzf - --to-command=" + q(RM)),
    C("tar -cMf {d}/b.tar -L 1 -F " + q(RM) + " {d}/data", e2e=False),
    C("tar -c -f {d}/b.tar --info-script=" + q(RM) + " -M {d}/data", e2e=False),
    C("tar -cf /dev/null --checkpoint=1 --checkpoint-action=exec=" + q(CHMOD) + " {d}/data", effect="chmod"),
    # editors: they read commands
    *[C(text, needs=("vim",)) for text in (
        "vim -es -c " + q("!" + RM) + " -c 'qa!'", "vim -u NONE -es -c " + q("!" + RM) + " -c 'qa!'",
        "vim -E -s -c " + q(":!" + RM) + " -c 'q!'", "vim -es " + q("+!" + RM) + " '+qa!'",
        "vim --cmd " + q("!" + RM) + " -es -c 'qa!'", "vi -es -c " + q("!" + RM) + " -c 'qa!'",
        "ex -s -c " + q("!" + RM) + " -c 'qa!'", "ex -s " + q("+!" + RM) + " '+qa!'",
        "vim -es -c " + q('call system("rm -f {f}")') + " -c 'qa!'", "vim -es <<< " + q("!" + RM),
    )],
    C("echo " + q("!" + RM) + " | ed", needs=("ed",)), C("ed -s {d}/data <<< " + q("!" + RM), needs=("ed",)),
    C("printf '!rm -f %s\\nq\\n' {f} | ed -s", needs=("ed",)),
    C("vim -es -c " + q("!" + CHMOD) + " -c 'qa!'", effect="chmod", needs=("vim",)),
    C("vim {d}/data", e2e=False), C("nvim --headless -c " + q("!" + RM) + " -c q", e2e=False),
    C("emacs --batch --eval " + q('(delete-file "{f}")'), e2e=False),
    # gdb
    *[C(text, needs=("gdb",)) for text in (
        "gdb -batch -ex " + q("shell " + RM), "gdb -nx -q -batch -ex " + q("shell " + RM),
        "gdb --batch --eval-command=" + q("shell " + RM), "gdb -batch -iex " + q("shell " + RM),
    )],
    C("gdb -nx -q -batch -x {d}/g.gdb", needs=("gdb",), setup="printf 'shell rm -f {f}\\n' > {d}/g.gdb"),
    # rsync: -e / --rsh name the remote shell it runs
    C("rsync -e " + q(RM + " --") + " x:/ {d}/o", needs=("rsync",)),
    C("rsync --rsh=" + q(RM + " --") + " x:/ {d}/o", needs=("rsync",)),
    C("rsync -e" + q(RM + " --") + " x:/ {d}/o", needs=("rsync",)),
    C("rsync --rsync-path=" + q(RM + ";") + " h:x {d}/o", e2e=False),
    C("rsync -avze " + q(RM + " --") + " x:/ {d}/o", needs=("rsync",)),
    C("rsync -ave" + q(RM + " --") + " x:/ {d}/o", needs=("rsync",)),
    C("rsync --rsh " + q(RM + " --") + " x:/ {d}/o", needs=("rsync",)),
    # ssh: a ProxyCommand (no traffic: the command replaces the connection), a config file, a remote command
    C("ssh -F /dev/null -o ProxyCommand=" + q(RM) + " x"), C("ssh -F /dev/null -oProxyCommand=" + q(RM) + " x"),
    C("ssh -F /dev/null -o " + q("ProxyCommand " + RM) + " x"),
    C("ssh -F /dev/null -o proxycommand=" + q(RM) + " x"),
    C("ssh -F {d}/cfg x", setup="printf 'Host *\\n  ProxyCommand rm -f {f}\\n' > {d}/cfg"),
    C("ssh -o LocalCommand=" + q(RM) + " -o PermitLocalCommand=yes h", e2e=False),
    C("ssh -F /dev/null -qoProxyCommand=" + q(RM) + " x"), C("ssh -F /dev/null -vo ProxyCommand=" + q(RM) + " x"),
    C("scp -F /dev/null -o ProxyCommand=" + q(RM) + " x:y {d}/o"),
    C("sftp -F /dev/null -o ProxyCommand=" + q(RM) + " x"),
    C("ssh -I {d}/x.so x", e2e=False), C("ssh -o PKCS11Provider={d}/x.so x", e2e=False),
    C("scp -S /usr/bin/rm x:y {d}/o", e2e=False), C("sftp -S /usr/bin/rm x", e2e=False),
    C("ssh 127.0.0.1 " + q(RM), e2e=False), C("ssh -p 22 127.0.0.1 -- rm -f {f}", e2e=False),
    # zip
    C("zip -q {d}/z.zip {d}/data -T -TT " + q(RM + " #"), needs=("zip",)),
    C("zip -q -T -TT " + q(RM + " #") + " {d}/z.zip {d}/data", needs=("zip",)),
    C("zip -q {d}/z.zip {d}/data -T --unzip-command=" + q(RM + " #"), needs=("zip",)),
    # make
    C("make -f /dev/stdin x <<< $'x:\\n\\t" + RM + "'", needs=("make",)),
    C("make --eval=" + q("$(shell " + RM + ")"), needs=("make",)),
    C("make -C {d}", needs=("make",), setup="printf 'x:\\n\\trm -f {f}\\n' > {d}/Makefile"),
    C("make -f {d}/Mk", needs=("make",), setup="printf 'x:\\n\\trm -f {f}\\n' > {d}/Mk"),
    C("cd {d} && make", needs=("make",), setup="printf 'x:\\n\\trm -f {f}\\n' > {d}/Makefile"),
    C("make -n -C {d}", needs=("make",), setup="printf '$(shell rm -f {f})\\nx:\\n\\ttrue\\n' > {d}/Makefile"),
    C("make --just-print --eval=" + q("$(shell " + RM + ")"), needs=("make",)),
    C("vim -es -S {d}/v.vim", needs=("vim",), setup="printf '!rm -f {f}\\nqa!\\n' > {d}/v.vim"),
    C("vim -u {d}/rc -es", needs=("vim",), setup="printf '!rm -f {f}\\nqa!\\n' > {d}/rc"),
    C("view -es -c " + q("!" + RM) + " -c 'qa!'", needs=("view",)),
    # GTFOBins "command" programs beyond the brief's list
    C("split --filter=" + q(RM) + " {d}/data", beyond=True),
    C("socat -u " + q("EXEC:" + RM) + " -", needs=("socat",), beyond=True),
    C("socat - " + q("SYSTEM:" + RM), needs=("socat",), beyond=True),
    C("sqlite3 :memory: " + q(".shell " + RM), needs=("sqlite3",), beyond=True),
    C("sqlite3 :memory: " + q(".system " + RM), needs=("sqlite3",), beyond=True),
    C("LESSOPEN=" + q("|" + RM + "; cat %s") + " less {d}/data", needs=("less",), beyond=True),
    C("psql -c " + q("\\! " + RM), e2e=False, beyond=True),
    C("export LESSOPEN=" + q("|" + RM + "; cat %s") + "; less {d}/data", needs=("less",), beyond=True),
    C("split --fil=" + q(RM) + " {d}/data", beyond=True),
    C("socat " + q("exec:" + RM) + " -", needs=("socat",), beyond=True),
    C("sqlite3 -init {d}/i.sql :memory: .quit", needs=("sqlite3",), beyond=True,
      setup="printf '.shell rm -f {f}\\n' > {d}/i.sql"),
    C("sqlite3 -cmd " + q(".shell " + RM) + " :memory: .quit", needs=("sqlite3",), beyond=True),
    C("at now <<< " + q(RM), e2e=False, beyond=True), C("crontab {d}/cron", e2e=False, beyond=True),
    C("nano {d}/data", e2e=False, beyond=True, mode="tty"),
]

# ---------------------------------------------------------------------------------------------------------------
# The environment makes a harmless-looking program run code (a variable the program or its shell reads).
ENVIRONMENT: list[Spelling] = [
    E("BASH_ENV={d}/x.sh ldd /bin/true", setup=SCRIPT), E("env BASH_ENV={d}/x.sh ldd /bin/true", setup=SCRIPT),
    E("GIT_SSH_COMMAND=" + q(RM + " #") + " git ls-remote ssh://h/x"),
    E("GIT_SSH={d}/run git ls-remote ssh://h/x", setup=SCRIPT),
    E("env GIT_SSH_COMMAND=" + q(RM + " #") + " git ls-remote ssh://h/x"),
    E("RSYNC_RSH=" + q(RM + " --") + " rsync x:/ {d}/o", needs=("rsync",)),
    E("TAR_OPTIONS='--checkpoint=1 --checkpoint-action=exec=rm\\ -f\\ {f}' tar -cf /dev/null {d}/data"),
    E("PYTHONPATH={d} python3 -m x", setup="printf 'import os\\nos.remove(\"{f}\")\\n' > {d}/x.py"),
    E("PERL5LIB={d} PERL5OPT=-Mx shasum {d}/data", setup="printf 'unlink \"{f}\"; 1;\\n' > {d}/x.pm"),
    E("LESSOPEN=" + q("|" + RM + "; cat %s") + " less {d}/data", needs=("less",)),
    E("GIT_CONFIG_PARAMETERS=\"'core.fsmonitor=rm -f {f} #'\" git -C {d}/repo status", setup=REPO),
    E("LD_PRELOAD={d}/x.so ls", e2e=False), E("env LD_PRELOAD={d}/x.so ls", e2e=False),
    E("NODE_OPTIONS='--require {d}/x.js' node {d}/data", e2e=False),
    E("PAGER=" + q(RM + " #") + " git -p log", e2e=False), E("GIT_EDITOR=" + q(RM + " #") + " git commit", e2e=False),
    E("EDITOR=" + q(RM + " #") + " crontab -e", e2e=False),
]

# ---------------------------------------------------------------------------------------------------------------
# Programs that delete a file (or change its mode) under another name: the engine maps them to the rule about
# deleting (or about permissions); beyond the brief's list, regression tests of the engine's own tables.
DELETERS: list[Spelling] = [
    *[X(text, beyond=True) for text in (
        "gzip {f}", "gzip -f {f}", "gzip -S .x {f}", "bzip2 {f}", "xz {f}", "xz -z {f}", "lzma {f}", "zstd --rm -q {f}",
        "zip -qm {d}/z.zip {f}", "shred -u {f}", "shred --remove {f}", "unlink {f}", "find {f} -exec shred -u {} \\;",
        "tar -cf {d}/a.tar --remove-files {f}", "tar --remove-f -cf {d}/a.tar {f}",
        "rsync --remove-source-files {f} {d}/o", "rsync -a --remove-sent-files {f} {d}/o", "echo {f} | xargs gzip",
        "find {f} -exec bzip2 {} +")],
    *[X(text, beyond=True, setup="mkdir {d}/empty") for text in (
        "rsync -r --delete {d}/empty/ {d}/", "rsync -r --del {d}/empty/ {d}/",
        "rsync -r --delete-after {d}/empty/ {d}/")],
    X("git -C {d} rm -q victim", setup=TRACKED, beyond=True), X("git -C {d} rm -qf {f}", setup=TRACKED, beyond=True),
    X("git -C {d} clean -fq", setup=UNTRACKED, beyond=True), X("git -C {d} clean -xdfq", setup=UNTRACKED, beyond=True),
    X("git -C {d} -c user.name=t -c user.email=t@t stash -u -q", setup=UNTRACKED, beyond=True),
    X("git -C {d} -c user.name=t -c user.email=t@t stash push --include-untracked -q", setup=UNTRACKED, beyond=True),
    *[X(text, effect="chmod", beyond=True, setup=SRC777) for text in (
        "install -m 777 {d}/data {f}", "cp --preserve=mode {d}/src {f}", "cp -p {d}/src {f}", "cp -a {d}/src {f}",
        "cp --preserve {d}/src {f}", "cp --archive {d}/src {f}", "rsync -p {d}/src {f}", "rsync -a {d}/src {f}",
        "install {d}/data {f}")],
]

# ---------------------------------------------------------------------------------------------------------------
# Scripts and programs given by a path outside the standard system directories.
SCRIPTS: list[Spelling] = [
    S("printf 'rm -f {f}\\n' > {d}/x.sh; sh {d}/x.sh"), S("printf 'rm -f {f}\\n' > {d}/x.sh; bash {d}/x.sh"),
    S("printf 'rm -f {f}\\n' > {d}/x.sh && dash {d}/x.sh"),
    S("sh {d}/x.sh", setup=SCRIPT), S("bash {d}/x.sh", setup=SCRIPT), S("bash -- {d}/x.sh", setup=SCRIPT),
    S("sh -e {d}/x.sh", setup=SCRIPT), S("bash -x {d}/x.sh", setup=SCRIPT), S(". {d}/x.sh", setup=SCRIPT),
    S("source {d}/x.sh", setup=SCRIPT), S("{d}/run", setup=SCRIPT), S("cd {d} && ./run", setup=SCRIPT),
    S("cd {d}; sh x.sh", setup=SCRIPT), S("sh < {d}/x.sh", setup=SCRIPT), S("bash < {d}/x.sh", setup=SCRIPT),
    S("cat {d}/x.sh | sh", setup=SCRIPT), S("exec {d}/run", setup=SCRIPT), S("nice {d}/run", setup=SCRIPT),
    S("timeout 10 {d}/run", setup=SCRIPT), S("env {d}/run", setup=SCRIPT),
    S("python3 {d}/x.py", setup="printf 'import os\\nos.remove(\"{f}\")\\n' > {d}/x.py"),
    S("perl {d}/x.pl", setup="printf 'unlink \"{f}\";\\n' > {d}/x.pl"),
    S("node {d}/x.js", needs=("node",), setup="printf 'require(\"fs\").unlinkSync(\"{f}\")\\n' > {d}/x.js"),
    S("tclsh {d}/x.tcl", needs=("tclsh",), setup="printf 'file delete {f}\\n' > {d}/x.tcl"),
    S("cp /bin/rm {d}/zap; {d}/zap -f {f}"), S("{d}/zap -f {f}", setup=ZAP), S("{d}/ls -f {f}", setup=ZAP),
    S("cd {d} && ./ls -f {f}", setup=ZAP), S("cd {d} && ./zap -f {f}", setup=ZAP),
    S("/usr/bin/../..{d}/zap -f {f}", setup=ZAP), S("/bin/../..{d}/ls -f {f}", setup=ZAP),
    S("timeout -k5 10 {d}/zap -f {f}", setup=ZAP), S("echo {f} | xargs {d}/zap -f", setup=ZAP),
    S("find {f} -exec {d}/zap {} \\;", setup=ZAP),
    S("PATH={d}:$PATH ls -f {f}", setup=ZAP, beyond=True), S("env PATH={d} ls -f {f}", setup=ZAP, beyond=True),
    S("PATH={d} command ls -f {f}", setup=ZAP, beyond=True),
    S("hash -p /bin/rm ls; ls -f {f}"), S("hash -p {d}/zap ls; ls -f {f}", setup=ZAP),
    S("$'\\x72m' -f {f}"), S(". /dev/stdin <<< " + q(RM)), S("source <(echo " + q(RM) + ")"),
    S("exec 3<<<" + q(RM) + "; bash /dev/fd/3"), S("/{d}/zap -f {f}", setup=ZAP), S("/.{d}/zap -f {f}", setup=ZAP),
    S("cd {d} && bin/zap -f {f}", setup="mkdir {d}/bin && cp /bin/rm {d}/bin/zap"),
    S("cd {d}/bin && ../zap -f {f}", setup=ZAP + " && mkdir {d}/bin"),
    S("~/zap -f {f}", e2e=False), S("/usr/lib/zap -f {f}", e2e=False), S("/usr/libexec/zap -f {f}", e2e=False),
    S("/opt/zap -f {f}", e2e=False), S("/usr/games/zap -f {f}", e2e=False),
    S("{d}/cat 777 {f}", setup=ZAP, effect="chmod"), S("bash {d}/c.sh", effect="chmod",
                                                         setup="printf 'chmod 777 {f}\\n' > {d}/c.sh"),
]

# ---------------------------------------------------------------------------------------------------------------
# Shells and REPLs through the exec form: the code comes on the client's stdin.
SHELLS: list[Spelling] = [
    *[SH(text, stdin=RM + "\n") for text in (
        "bash", "sh", "dash", "bash -i", "bash --login", "bash -l", "bash -s", "sh -s", "bash -il", "bash --norc -i",
        "bash --noprofile", "sh -", "exec bash", "env bash", "nice bash", "timeout 30 bash", "/bin/bash",
        "flock {d}/lock bash", "bash -s -- x", "setsid -w bash", "script -q /dev/null")],
    SH("bash --rcfile {d}/x.sh -i", setup=SCRIPT), SH("bash --init-file {d}/x.sh -i", setup=SCRIPT),
    *[SH(text, stdin=RM + "\n", root=True) for text in ("su", "su -", "runuser -u root bash")],
    SH("python3", stdin=PY_RM + "\n"), SH("python3 -", stdin=PY_RM + "\n"), SH("python3 -i", stdin=PY_RM + "\n"),
    SH("python3 -I", stdin=PY_RM + "\n"), SH("perl", stdin=PL_RM + ";\n"), SH("perl -", stdin=PL_RM + ";\n"),
    SH("node", stdin=JS_RM + "\n", needs=("node",)), SH("tclsh", stdin=TCL_RM + "\n", needs=("tclsh",)),
    SH("ed", stdin="!" + RM + "\nq\n", needs=("ed",)), SH("vim -es", stdin="!" + RM + "\n", needs=("vim",)),
    SH("ex -s", stdin="!" + RM + "\n", needs=("vim",)), SH("gdb -q -nx", stdin="shell " + RM + "\n", needs=("gdb",)),
    SH("sqlite3", stdin=".shell " + RM + "\n", needs=("sqlite3",), beyond=True),
    SH("bash", stdin=CHMOD + "\n", effect="chmod"), SH("python3", stdin=PY_CHMOD + "\n", effect="chmod"),
    *[SH(text, e2e=False, stdin=RM + "\n") for text in ("zsh", "ksh", "busybox sh", "sudo -s", "sudo -i", "doas -s",
                                                        "irb", "lua", "php -a", "python2", "unbuffer bash")],
]

# ---------------------------------------------------------------------------------------------------------------
# Pagers and editors read keys from the operator when a terminal is attached (ssh -t): unit only.
TERMINAL: list[Spelling] = [
    Spelling(text, "terminal", mode="tty", e2e=False) for text in (
        "less {d}/data", "more {d}/data", "man ls", "less -R {d}/data", "more -d {d}/data", "man -P less ls",
        "vim {d}/data", "vi {d}/data", "ex {d}/data", "ed {d}/data", "python3", "bash -i", "bash", "perl",
        "cat {d}/data | less", "timeout 60 less {d}/data", "env less {d}/data", "nice -n5 man bash",
    )
]

# ---------------------------------------------------------------------------------------------------------------
# Bash history expansion at an interactive prompt: the line judged is not the line bash runs.
HISTORY: list[Spelling] = [
    Spelling(text, "history", mode="prompt", e2e=False) for text in (
        "!!", "sudo !!", "!-1", "!-2", "!chmod:s/600/777/", "!chmod:gs/600/777/", "!chmod:&", "!?600?:s/600/777/",
        "!?chmod?", "^600^777", "^600^777^", "!1", "!42", "!ch", "echo ok; !!", "ls && !-1", '"!!"', "  !!",
        "!!:s/600/777/", "!-1:s/600/777/", "!!:0 777 {f}", "!chmod:0 777 {f}", "!:0 777 {f}", "!c:0 777 {f}",
        "x=1; !chmod:s/600/777/", "!-1:gs/6/7/", "echo \"$HOME\" && !!", "ls | !-1", "(!!)", "!chmod:s^600^777^",
        "!!:gs/600/777/", "!!:as/600/777/", "!!:&:&", "echo !!:gs/600/777/", "!!:gs^600^777^", "!?chmod?:s^600^777^",
        "!!:x", "!!:q", "!!:0-$", "echo ${x}!!", "a=b!!", "!7x", "^600^777^:p", "!!:h:h", "cd !$",
    )
]

HOSTILE: list[Spelling] = [*WRAPPERS, *INTERPRETERS, *CAPABILITIES, *ENVIRONMENT, *DELETERS, *SCRIPTS, *SHELLS,
                           *TERMINAL, *HISTORY]


# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Harmless:
    text: str
    expect: str = ""        # a substring of stdout when run end to end ({d} replaced); "" = unit only
    setup: str = ""
    pager: bool = False     # shows a pager when a terminal is attached: only judged without one
    needs: tuple[str, ...] = ()

    def render(self, d: str) -> str:
        return self.text.replace("{d}", d)


HARMLESS: list[Harmless] = [
    Harmless("ls -la"), Harmless("ls -l /var/log"), Harmless("ls {d}", "data"), Harmless("grep -rn x ."),
    Harmless("grep -rn alpha {d}", "{d}/data:1:alpha beta"), Harmless("grep -c root /etc/passwd"),
    Harmless("grep -E 'a|b' f"), Harmless("awk '{print $1}' f"), Harmless("awk '{print $1}' {d}/data", "alpha"),
    Harmless("awk -F: '{print $1}' /etc/passwd"), Harmless("awk 'NR==1' f"), Harmless("sed -n 1,5p f"),
    Harmless("sed -n 1,5p {d}/data", "alpha beta"), Harmless("sed 's/foo/bar/g' f"),
    Harmless("sed -e 's/alpha/gamma/' -e 's/beta/delta/' {d}/data", "gamma delta"),
    Harmless("git log --oneline", pager=True), Harmless("git status"), Harmless("git diff", pager=True),
    Harmless("git log -n 5 --stat", pager=True), Harmless("git --version", "git version"),
    Harmless("git -C {d}/repo log --oneline | wc -l", "2", setup=REPO),
    Harmless("tar -tzf a.tgz"), Harmless("tar -czf a.tgz d"), Harmless("tar -xzf a.tgz -C /tmp/x"),
    Harmless("tar -czf {d}/a.tgz -C {d} data && tar -tzf {d}/a.tgz", "data"),
    Harmless("find . -name '*.py'"), Harmless("find /var/log -type f -mtime -1"), Harmless("find {d} -name data",
                                                                                            "{d}/data"),
    Harmless("find . -name '*.log' -exec grep -l error {} +"), Harmless("find . -type f | xargs wc -l"),
    Harmless("xargs -n1 echo"), Harmless("printf 'a b\\n' | xargs -n1 echo", "a\nb\n"),
    Harmless("find . -print0 | xargs -0 ls -l"), Harmless("timeout 5 curl -s localhost"),
    Harmless("timeout 5 echo ok", "ok"), Harmless("timeout -k 5 10 ls"), Harmless("env FOO=1 printenv FOO", "1\n"),
    Harmless("env"), Harmless("env -i PATH=/usr/bin ls"), Harmless("ps aux"), Harmless("ps -ef | grep nginx"),
    Harmless("df -h"), Harmless("df -h / | head -n1", "Filesystem"), Harmless("du -sh ."),
    Harmless("du -s {d} | cut -f2", "{d}"), Harmless("head -n 5 f"), Harmless("head -n 1 {d}/data", "alpha beta"),
    Harmless("tail -f log"), Harmless("tail -n 100 log"), Harmless("tail -n 1 {d}/data", "alpha beta"),
    Harmless("wc -l f"), Harmless("sort f | uniq -c | sort -rn | head"), Harmless("cut -d: -f1 /etc/passwd"),
    Harmless("cut -d' ' -f2 {d}/data", "beta"), Harmless("cat f"), Harmless("cat {d}/data | tr a-z A-Z", "ALPHA BETA"),
    Harmless("echo hello", "hello\n"), Harmless("printf '%s\\n' a b"), Harmless("uname -a"), Harmless("id"),
    Harmless("id -un"), Harmless("whoami"), Harmless("hostname"), Harmless("date"), Harmless("uptime"),
    Harmless("free -m"), Harmless("python3 --version", "Python 3"), Harmless("bash --version | head -n1", "GNU bash"),
    Harmless("stat -c %a f"), Harmless("stat -c %a {d}/data", "644"), Harmless("nice -n 10 ls"),
    Harmless("nice -n 5 cat {d}/data", "alpha beta"), Harmless("systemctl status nginx --no-pager"),
    Harmless("journalctl -u nginx --no-pager -n 50"), Harmless("curl -s http://localhost:8080/health"),
    Harmless("mkdir -p /tmp/x && cd /tmp/x && ls"), Harmless("cp a b"), Harmless("mv a b"), Harmless("touch f"),
    Harmless("ln -s a b"), Harmless("diff a b"), Harmless("sha256sum f"), Harmless("md5sum {d}/data", "{d}/data"),
    Harmless("jq . f.json"), Harmless("ss -tlnp"), Harmless("ip addr"), Harmless("ping -c 1 127.0.0.1"),
    Harmless("cd /var/log && ls -lt | head"), Harmless("test -f f && echo yes || echo no"),
    Harmless("test -f {d}/data && echo yes", "yes"), Harmless("for f in *.log; do wc -l \"$f\"; done"),
    Harmless("echo $HOME"), Harmless("ls \"$HOME\""), Harmless("stdbuf -oL tail -f log | grep x"),
    Harmless("command -v python3"), Harmless("type ls"), Harmless("which ls"), Harmless("nohup sleep 1"),
    Harmless("git branch -a", pager=True), Harmless("git show HEAD --stat", pager=True), Harmless("tar -tvf a.tar"),
    Harmless("zip -r a.zip d"), Harmless("unzip -l a.zip"), Harmless("rsync -rv src/ dst/"),
    Harmless("ssh-keygen -lf key.pub"), Harmless("openssl x509 -in cert.pem -noout -text"),
    Harmless("sort {d}/data | uniq -c", "1 alpha beta"), Harmless("ps aux | head -n1", "USER"),
    Harmless("wc -l < {d}/data", "1"), Harmless("python3 -V"),
    # what a command-running capability check must not catch
    Harmless("awk '/alpha|beta/ {print $2}' {d}/data", "beta"), Harmless("awk -F'|' '{print $1}' {d}/data", "alpha"),
    Harmless("awk '{n++} END {print n}' {d}/data", "1"),
    Harmless("awk 'BEGIN{getline l < \"{d}/data\"; print l}'", "alpha beta"),
    Harmless("awk '{print $1 > \"/dev/stderr\"}' f"), Harmless("awk '{ if ($1 == \"x\" || $2 == \"y\") print }' f"),
    Harmless("sed -n '/alpha/p' {d}/data", "alpha beta"), Harmless("sed 's/e/E/' {d}/data", "alpha bEta"),
    Harmless("sed -e '/^#/d' -e '/^$/d' {d}/data", "alpha beta"), Harmless("sed 's/exec/run/g' f"),
    Harmless("sed -E 's/(a|b)+/x/g' f"), Harmless("sed '/e/!d' f"), Harmless("sed -i.bak 's/a/b/' f"),
    Harmless("gzip -c {d}/data | gunzip -c", "alpha beta"), Harmless("cat {d}/data | gzip | zcat", "alpha beta"),
    Harmless("tar -cf - -C {d} data | gzip > {d}/b.tgz && tar -tzf {d}/b.tgz", "data"),
    Harmless("git -C {d}/repo config user.email x@y && git -C {d}/repo config user.email", "x@y", setup=REPO),
    Harmless("git log --oneline | head -n 5"), Harmless("man ls | head -n 3"),
    Harmless("find {d} -name data -exec grep -l alpha {} +", "{d}/data"),
    Harmless("printf '%s\\n' {d}/data | xargs grep -c alpha", "1"), Harmless("echo 1+1 | bc", "2", needs=("bc",)),
    Harmless("perl -v", "perl"), Harmless("perl --version", "perl"), Harmless("node --version", "v", needs=("node",)),
    Harmless("node -v", "v", needs=("node",)), Harmless("vim --version", "VIM", needs=("vim",)),
    Harmless("gdb --version", "GNU gdb", needs=("gdb",)), Harmless("make --version", "GNU Make", needs=("make",)),
    Harmless("tar --version", "tar"), Harmless("ssh -V"), Harmless("rsync --version", "rsync", needs=("rsync",)),
    Harmless("awk --version"), Harmless("sed --version", "sed"),
    Harmless("ssh host uptime"), Harmless("scp f host:/tmp"), Harmless("rsync -avz src/ host:/dst/"),
    Harmless("crontab -l"), Harmless("systemctl restart nginx"),
]
