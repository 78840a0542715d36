"""What every benchmark needs: a real sshd target, a bastion daemon in front of it (recording on), the stock OpenSSH
client pointed at either, and a table printer that states the machine. Uses the test suite's support code."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.conftest import start_bastion, stop_bastion, write_config  # noqa: E402
from tests.support.keys import free_port, make_keypair  # noqa: E402
from tests.support.ssh_client import ssh_argv  # noqa: E402
from tests.support.sshd import SshdTarget, start_sshd  # noqa: E402

PLAIN = """\
  plain:
    kind: ssh
    description: no policy, recorded
    host: 127.0.0.1
    port: {port}
    user: {user}
    credential: {{private_key_file: {key}}}
    host_key: "{host_key}"
"""
ROLE = "  benchers: {groups: [ops], resources: [plain]}\n"


@dataclass
class Env:
    dir: Path
    port: int
    keys: dict[str, Path]
    target: SshdTarget
    target_key: Path
    proc: subprocess.Popen[bytes]
    jump: SshdTarget | None = None

    def via_jump(self, *extra: str, tty: bool | None = None) -> list[str]:
        """ssh to the same sshd through a second sshd as a jump host: what ``ssh -J`` runs (``ssh -W`` as the
        proxy command; spelt out so the jump leg gets the same key and options), what teams use instead of a
        bastion."""
        assert self.jump is not None, "bastion_env(jump=True)"
        hop = " ".join(ssh_argv(self.target_key, self.jump.port, self.jump.user, "-W", "%h:%p"))
        argv = ssh_argv(self.target_key, self.target.port, self.target.user, *extra, tty=tty)
        return [argv[0], "-o", f"ProxyCommand={hop}", *argv[1:]]

    def via_bastion(self, resource: str, *extra: str, tty: bool | None = None) -> list[str]:
        """ssh to a resource through the bastion as alice."""
        return ssh_argv(self.keys["alice"], self.port, "alice", resource, *extra, tty=tty)

    def direct(self, *extra: str, tty: bool | None = None) -> list[str]:
        """ssh straight to the same sshd with the credential the bastion uses."""
        return ssh_argv(self.target_key, self.target.port, self.target.user, *extra, tty=tty)

    def menu(self, user: str = "alice") -> list[str]:
        return ssh_argv(self.keys[user], self.port, user, tty=True)

    def bastion_pids(self) -> list[int]:
        """The daemon and every process under it (session processes, indexers)."""
        return _tree(self.proc.pid)


@contextmanager
def bastion_env(*, users: Sequence[str] = ("alice", "bob"), jump: bool = False,
                guard: Path | None = None) -> Iterator[Env]:
    """A target sshd, a daemon with the resource ``plain`` on it (and ``guarded``, the same under bastion-guard at
    ``guard``, when given), and a jump sshd when ``jump``."""
    d = Path(tempfile.mkdtemp(prefix="bastion-bench-", dir="/tmp"))
    try:
        (d / "state").mkdir()
        keys = {u: make_keypair(d / f"key_{u}", u)[0] for u in users}
        target_key, target_pub = make_keypair(d / "target", "bench")
        target = start_sshd(d / "sshd", authorized_keys=[target_pub])
        hop = start_sshd(d / "jump", authorized_keys=[target_pub], forwarding=True) if jump else None
        port = free_port()
        extra = PLAIN.format(port=target.port, user=target.user, key=target_key, host_key=target.host_key_public)
        role = ROLE
        if guard is not None:
            extra += PLAIN.replace("plain:", "guarded:").format(
                port=target.port, user=target.user, key=target_key, host_key=target.host_key_public)
            extra += f"    enforce: guard\n    guard_path: {guard}\n"
            role = ROLE.replace("[plain]", "[plain, guarded]")
        cfg = write_config(d, port, keys, target, target_key, extra_resources=extra, extra_roles=role,
                           limits="limits: {max_connections: 2000, max_connections_per_source: 2000}\n")
        proc = start_bastion(cfg, port, d / "bastion.out")
        try:
            yield Env(d, port, keys, target, target_key, proc, hop)
        finally:
            stop_bastion(proc)
            if hop is not None:
                hop.stop()
            for pid in reversed(_tree(target.proc.pid)[1:]):  # session processes outlive their connection
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            target.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return out


def machine() -> str:
    mem = ""
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
                 .split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()}: {os.cpu_count()} cpu ({cpu}){mem}, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def pct(xs: Sequence[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in header]] + [[c if isinstance(c, str) else f"{c:.3g}" if isinstance(c, float)
                                           else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"## {title}", "", "| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells[1:]]
    return "\n".join(lines) + "\n"


__all__ = ["Env", "bastion_env", "machine", "pct", "statistics", "table"]
