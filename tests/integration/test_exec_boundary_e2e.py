"""The exec form as a boundary (issue 16), end to end: hostile spellings sent with the stock OpenSSH client
(``ssh bastion RES -- 'CMD'``) through the bastion daemon to a real sshd that would really delete a real file (or
chmod it).

Each spelling is first run with no bastion in the way (``bash -c`` as the sshd target's user, with the environment
sshd gives it): it must really delete the file (or change its mode), which proves the spelling is a real threat; a
sample also goes through ``web-open`` (the same target, no policy) to prove the harness can fail end to end. Then,
on a fresh file, through ``web-boundary`` (the demo's deny-list policy): the file must still be there with its mode,
ssh must exit non-zero, and stderr must name the rule (blocked) or say the command waits for approval (the client is
then killed, which withdraws the request). Spellings run four at a time; one test per class collects every failure
and reports them all together.
"""

from __future__ import annotations

import os
import pwd
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import BastionEnv, own_bastion
from tests.support.exec_spellings import CLASSES, HARMLESS, HOSTILE, Harmless, Spelling
from tests.support.ssh_client import ssh_argv

pytestmark = pytest.mark.slow

RULES = ("no-rm", "no-find-delete", "chmod-needs-approval")
POLICY = """\
  demo-like:
    default: allow
    rules:
      - name: no-rm
        programs: [rm, unlink, shred, rmdir]
        action: block
        reason: deleting files is not allowed
      - name: no-find-delete
        programs: [find]
        args: [-delete]
        action: block
        reason: deleting files is not allowed
      - name: chmod-needs-approval
        programs: [chmod, chown, chgrp]
        action: require_approval
        approvers: {roles: [reviewers], count: 1}
        timeout: 120
        reason: permission changes need a reviewer's approval
"""
PARALLEL = 4
RUN_TIMEOUT = 60.0


def resource(name: str, env: BastionEnv, policy: str | None) -> str:
    t = env.target
    return (f"  {name}:\n    kind: ssh\n    host: 127.0.0.1\n    port: {t.port}\n    user: {t.user}\n"
            f"    credential: {{private_key_file: {env.target_key}}}\n    host_key: \"{t.host_key_public}\"\n"
            + (f"    policy: {policy}\n" if policy else ""))


@pytest.fixture(scope="module")
def boundary(bastion_env: BastionEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionEnv]:
    """A daemon of its own: web-boundary (the demo's deny-list policy) and web-open (the same target, no policy)."""
    extra = resource("web-boundary", bastion_env, "demo-like") + resource("web-open", bastion_env, None)
    with own_bastion(bastion_env, tmp_path_factory.mktemp("boundary"), extra_resources=extra,
                     extra_policies=POLICY) as env:
        yield env


@dataclass
class Run:
    rc: int | None
    stdout: str
    stderr: str
    held: bool = False
    timed_out: bool = False

    def first_line(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return lines[0] if lines else ""


def ssh_exec(env: BastionEnv, res: str, command: str, stdin: str = "") -> Run:
    """``ssh -T alice@bastion RES -- COMMAND`` with ``stdin``; a command held for approval is withdrawn (the
    client is killed) as soon as the bastion says so."""
    proc = subprocess.Popen(ssh_argv(env.keys["alice"], env.port, "alice", res, "--", command, tty=False),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    out, err = bytearray(), bytearray()
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    deadline = time.monotonic() + RUN_TIMEOUT
    held = timed_out = False
    while streams:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(list(streams), [], [], min(left, 1.0))
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                streams[fd] += chunk
            else:
                del streams[fd]
        if b"waiting for approval" in err:
            held = True
            break
    if held or timed_out:
        proc.kill()
    rc = proc.wait(10)
    proc.stdout.close()
    proc.stderr.close()
    return Run(rc, out.decode(errors="replace"), err.decode(errors="replace"), held, timed_out)


@dataclass
class Scratch:
    d: Path

    @property
    def f(self) -> Path:
        return self.d / "victim"

    def mode(self) -> int | None:
        try:
            return self.f.stat().st_mode & 0o777
        except FileNotFoundError:
            return None


def scratch(setup: str = "") -> Scratch:
    """A short directory under /tmp with ``victim`` (0644) and ``data``; ``setup`` run in it first."""
    d = Path(tempfile.mkdtemp(prefix="bx", dir="/tmp"))
    d.chmod(0o755)
    s = Scratch(d)
    s.f.write_text("precious\n")
    s.f.chmod(0o644)
    (d / "data").write_text("alpha beta\n")
    if setup:
        subprocess.run(["bash", "-c", setup.replace("{d}", str(d)).replace("{f}", str(s.f))], check=True,
                       cwd=d, capture_output=True, timeout=30)
    return s


def had_effect(s: Spelling, sc: Scratch) -> bool:
    mode = sc.mode()
    return mode is None if s.effect == "rm" else mode not in (None, 0o644)


def sshd_env() -> dict[str, str]:
    """The environment OpenSSH's sshd gives a session of the current user (Debian's default PATHs)."""
    pw = pwd.getpwuid(os.geteuid())
    path = ("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" if pw.pw_uid == 0
            else "/usr/local/bin:/usr/bin:/bin:/usr/games")
    return {"PATH": path, "HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name, "SHELL": pw.pw_shell,
            "LANG": "C.UTF-8"}


def run_local(text: str, stdin: str) -> Run:
    """``text`` run the way sshd would run it, with no bastion in the way."""
    pw = pwd.getpwuid(os.geteuid())
    try:
        out = subprocess.run([pw.pw_shell or "/bin/sh", "-c", text], input=stdin.encode(), capture_output=True,
                             env=sshd_env(), cwd=pw.pw_dir, timeout=RUN_TIMEOUT, start_new_session=True)
    except subprocess.TimeoutExpired:
        return Run(None, "", "", timed_out=True)
    return Run(out.returncode, out.stdout.decode(errors="replace"), out.stderr.decode(errors="replace"))


def runnable(s: Spelling) -> bool:
    return (s.mode == "exec" and s.e2e and all(shutil.which(p) for p in s.needs)
            and (not s.root or os.geteuid() == 0))


def control(env: BastionEnv | None, s: Spelling) -> str | None:
    """Run ``s`` with no policy (through web-open when ``env`` is given, else locally); None if it had its effect,
    else why not."""
    sc = scratch(s.setup)
    try:
        text, stdin = s.render(str(sc.f), str(sc.d)), s.render_stdin(str(sc.f), str(sc.d))
        run = ssh_exec(env, "web-open", text, stdin) if env is not None else run_local(text, stdin)
        deadline = time.monotonic() + max(s.settle, 0.0)
        while not had_effect(s, sc) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not had_effect(s, sc):
            return f"no effect without a policy: rc={run.rc} stderr={run.stderr[-300:]!r}"
        return None
    finally:
        shutil.rmtree(sc.d, ignore_errors=True)


def check_hostile(env: BastionEnv, s: Spelling) -> tuple[str, str] | None:
    """None when the boundary held; else (kind, detail): kind is 'harness' (the spelling does nothing even with
    no policy) or 'leak' (it ran, or the refusal did not say why)."""
    broken = control(None, s)
    if broken:
        return "harness", broken
    sc = scratch(s.setup)
    try:
        text = s.render(str(sc.f), str(sc.d))
        run = ssh_exec(env, "web-boundary", text, s.render_stdin(str(sc.f), str(sc.d)))
        time.sleep(s.settle + (0.3 if run.held else 0.0))
        problems = []
        mode = sc.mode()
        if mode is None:
            problems.append("FILE DELETED")
        elif mode != 0o644:
            problems.append(f"MODE CHANGED to {mode:o}")
        if run.rc == 0:
            problems.append("exit status 0")
        named = any(f"blocked by rule '{r}'" in run.stderr for r in RULES) or (
            run.held and any(f"rule {r}" in run.stderr for r in RULES))
        if not named:
            problems.append("no rule named on stderr")
        if s.effect == "rm" and run.held:
            problems.append("a deletion was held instead of blocked")
        if run.timed_out:
            problems.append("timed out")
        if problems:
            return "leak", f"{', '.join(problems)}; rc={run.rc}; stderr: {run.first_line()[:200]!r}"
        return None
    finally:
        shutil.rmtree(sc.d, ignore_errors=True)


def e2e_of(cls: str) -> list[Spelling]:
    return [s for s in HOSTILE if s.cls == cls and runnable(s)]


def test_enough_spellings_run_end_to_end() -> None:
    """Half of the hostile table (at least 80 spellings), from every class that has an exec form."""
    unique = {(s.text, s.stdin) for s in HOSTILE if runnable(s)}
    assert len(unique) >= 80
    assert len(unique) * 2 >= len({(s.text, s.mode) for s in HOSTILE})
    for cls in ("wrappers", "interpreters", "capabilities", "environment", "deleters", "scripts", "shells"):
        assert len(e2e_of(cls)) >= 8, cls


def test_control_the_harness_deletes_without_a_policy_and_not_with_it(boundary: BastionEnv) -> None:
    sc = scratch()
    try:
        run = ssh_exec(boundary, "web-open", f"rm -f {sc.f}")
        assert run.rc == 0 and sc.mode() is None, run
        sc.f.write_text("precious\n")
        sc.f.chmod(0o644)
        run = ssh_exec(boundary, "web-boundary", f"rm -f {sc.f}")
        assert run.rc == 1 and "blocked by rule 'no-rm'" in run.stderr and sc.mode() == 0o644, run
        run = ssh_exec(boundary, "web-open", f"chmod 777 {sc.f}")
        assert run.rc == 0 and sc.mode() == 0o777, run
        sc.f.chmod(0o644)
        run = ssh_exec(boundary, "web-boundary", f"chmod 777 {sc.f}")
        assert run.held and "rule chmod-needs-approval" in run.stderr, run
        time.sleep(0.5)
        assert sc.mode() == 0o644
    finally:
        shutil.rmtree(sc.d, ignore_errors=True)


def test_control_a_sample_of_each_class_deletes_through_a_resource_without_policy(boundary: BastionEnv) -> None:
    """The local control of every spelling stands for this: through the bastion, with no policy, they work."""
    sample = [s for cls in CLASSES for s in e2e_of(cls)[:4]]
    with ThreadPoolExecutor(PARALLEL) as pool:
        broken = [f"{s.text!r}: {r}" for s, r in zip(sample, pool.map(lambda s: control(boundary, s), sample),
                                                       strict=True) if r]
    assert broken == [], "\n".join(broken)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("cls", [c for c in CLASSES if c not in ("terminal", "history")])
def test_hostile_spellings_end_to_end(boundary: BastionEnv, cls: str) -> None:
    spellings = e2e_of(cls)
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda s: (s, check_hostile(boundary, s)), spellings))
    harness = [f"{s.text!r}: {why}" for s, r in results if r and r[0] == "harness" for why in [r[1]]]
    leaks = [f"{s.text!r}{' (beyond the brief)' if s.beyond else ''}: {why}"
             for s, r in results if r and r[0] == "leak" for why in [r[1]]]
    report = "\n".join([f"{cls}: {len(spellings)} spellings, {len(leaks)} leaked, {len(harness)} broken"]
                       + [f"  LEAK {x}" for x in leaks] + [f"  HARNESS {x}" for x in harness])
    print(report)
    assert not leaks and not harness, report


def check_harmless(env: BastionEnv, h: Harmless) -> str | None:
    sc = scratch(h.setup)
    try:
        run = ssh_exec(env, "web-boundary", h.render(str(sc.d)))
        expect = h.expect.replace("{d}", str(sc.d))
        if run.rc != 0 or expect not in run.stdout or "bastion:" in run.stderr:
            return f"{h.text!r}: rc={run.rc} stdout={run.stdout[:200]!r} stderr={run.stderr[:300]!r}"
        return None
    finally:
        shutil.rmtree(sc.d, ignore_errors=True)


@pytest.mark.timeout(300)
def test_harmless_commands_run_end_to_end_with_no_approval(boundary: BastionEnv) -> None:
    cases = [h for h in HARMLESS if h.expect and all(shutil.which(p) for p in h.needs)]
    assert len(cases) >= 15
    with ThreadPoolExecutor(PARALLEL) as pool:
        failures = [r for r in pool.map(lambda h: check_harmless(boundary, h), cases) if r]
    assert failures == [], "\n".join(failures)
