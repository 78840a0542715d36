"""Session processes (the menu, psql, kubectl) run in a bubblewrap sandbox, as an unprivileged user.

What a session process can reach is what a shell escape in it (``\\! sh`` in psql) could reach: so it sees a
read-only ``/usr``, a few harmless files of ``/etc`` (passwd, group, the loader cache), an empty ``/tmp`` and its own
private home; no network at all (unix sockets in its home, like the wire proxy's, still work), no other process, none
of the daemon's config, keys, database or recordings. When the daemon runs as root the process also drops to
``sandbox.user`` (``nobody`` unless configured), so even a kernel bug in the namespace code leaves it unprivileged.
The menu (a Python program) also sees its interpreter and its own packages, read-only, and nothing else of the
installation.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# alternatives: the links that make awk, vi, editor... (Debian's update-alternatives) reach their programs
ETC_FILES = ("passwd", "group", "nsswitch.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
             "alternatives", "inputrc", "terminfo")
TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin") or "/usr/bin/setpriv"  # must be visible in the sandbox


class SandboxError(Exception):
    """The sandbox is required here but cannot be set up (named in the message)."""


@dataclass(frozen=True)
class Sandbox:
    """How to wrap one session process: ``bwrap`` (None: no sandbox) and the uid/gid to run as (None: ours)."""

    bwrap: str | None
    uid: int | None = None
    gid: int | None = None

    @property
    def active(self) -> bool:
        return self.bwrap is not None

    def prepare(self, path: Path) -> None:
        """Hand a directory (or socket) the process must use over to the sandbox user."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def wrap(self, argv: list[str], *, home: Path, env: dict[str, str], ro_paths: Sequence[Path] = (),
             home_at: Path | None = None, tmp: Path | None = None,
             files: Mapping[Path, Path] | None = None) -> list[str]:
        """The argv that runs ``argv`` in the sandbox with exactly ``env`` and ``home`` as its only writable place.

        ``ro_paths`` are further directories it may read (the interpreter and packages of a Python session process);
        each appears at its own path, and nothing around it does. ``home_at``: where ``home`` appears inside (default:
        at its own path; elsewhere, the host path it comes from is not visible at all), which is also the working
        directory. ``tmp``: a host directory that is ``/tmp`` inside (default: an empty tmpfs, gone at exit), for
        a sandbox whose /tmp must outlive it. ``files``: single files to show read-only, at the path (the key)
        where they appear inside (bastion-guard for the demo's target).
        """
        if self.bwrap is None:
            return list(argv)
        privileged = self.uid is not None and self.gid is not None
        if privileged:
            # bwrap runs as root, so it can bind paths the sandbox user could not reach (a Python under /root), then
            # setpriv drops to that user for good; no user namespace: root in one would map to the real root.
            out = [self.bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                   "--unshare-cgroup-try", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                   "--cap-add", "CAP_SETPCAP"]
        else:
            out = [self.bwrap, "--unshare-all"]
        out += ["--die-with-parent", "--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev"]
        out += ["--tmpfs", "/tmp"] if tmp is None else ["--bind", str(tmp), "/tmp"]
        out += ["--dir", "/etc"]
        for name in TOP_LEVEL:
            p = Path("/") / name
            if p.is_symlink():
                out += ["--symlink", os.readlink(p), str(p)]
            elif p.is_dir():
                out += ["--ro-bind", str(p), str(p)]
        for name in ETC_FILES:
            p = Path("/etc") / name
            if p.exists():
                out += ["--ro-bind", str(p), str(p)]
        made = {Path("/"), Path("/tmp"), Path("/etc")}

        def parents(path: Path) -> None:
            for parent in reversed(path.parents):  # bwrap would make them 0700: the sandbox user could not pass
                if parent not in made:
                    made.add(parent)
                    out.extend(["--perms", "0755", "--dir", str(parent)])

        for path in _outermost(ro_paths):
            parents(path)
            out += ["--ro-bind", str(path), str(path)]
        for at, src in (files or {}).items():
            parents(at)
            out += ["--ro-bind", str(src), str(at)]
        inside = home if home_at is None else home_at
        if home_at is not None:
            parents(home_at)
        out += ["--bind", str(home), str(inside), "--chdir", str(inside), "--clearenv"]
        for k, v in env.items():
            out += ["--setenv", k, v]
        out.append("--")
        if privileged:
            out += [SETPRIV, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--no-new-privs",
                    "--bounding-set=-all", "--inh-caps=-all", "--"]
        return [*out, *argv]


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """The directories of ``paths`` not already visible in the sandbox (under /usr) or inside another of them."""
    real = sorted({Path(os.path.realpath(p)) for p in paths} | {Path(os.path.abspath(p)) for p in paths})
    out: list[Path] = []
    for p in real:
        if p.is_relative_to("/usr") or any(p.is_relative_to(q) for q in out):
            continue
        out.append(p)
    return out


def python_paths(packages: Sequence[str]) -> list[Path]:
    """What a Python session process needs to read: this interpreter, its virtualenv and the named packages.

    Only those: an editable install's packages are bound one by one, so the project directory around them (and any
    state kept beside it) stays out of sight.
    """
    paths = [Path(sys.base_prefix), Path(sys.prefix)]
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SandboxError(f"package {name!r} not found for the session process")
        paths += [Path(p) for p in spec.submodule_search_locations]
    return paths


def make_sandbox(mode: str, user: str) -> Sandbox:
    """The sandbox for ``sandbox: {mode, user}``; SandboxError when ``required`` cannot be met."""
    if mode == "off":
        return Sandbox(None)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        if mode == "required":
            raise SandboxError("sandbox.mode is 'required' but bubblewrap (bwrap) is not installed")
        return Sandbox(None)
    if os.geteuid() != 0:
        return Sandbox(bwrap)
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise SandboxError(f"sandbox.user {user!r} does not exist on this machine") from None
    if pw.pw_uid == 0:
        raise SandboxError(f"sandbox.user {user!r} is root; session processes must not run as root")
    return Sandbox(bwrap, pw.pw_uid, pw.pw_gid)


def find_psql() -> str | None:
    """The psql binary itself (Debian's /usr/bin/psql is a Perl wrapper that reads /etc): the newest installed."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if versions:
        return str(versions[-1])
    return shutil.which("psql", path="/usr/local/bin:/usr/bin:/bin")


def find_kubectl(configured: str | None = None) -> str | None:
    """The kubectl the sessions run: ``configured`` (config ``kubectl:``), else the first on a system PATH."""
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("kubectl", path="/usr/local/bin:/usr/bin:/bin")
