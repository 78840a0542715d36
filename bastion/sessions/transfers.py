"""The exec form's transfer programs (``scp -t``/``-f``, ``rsync --server``, ``git-upload-pack``...): judged as file
transfers as well as commands, with their paths resolved on the target, so that a transfer rule (``transfer:
[upload]``, ``paths: [/etc/**]``) and a shell rule (``programs: [rm]`` for ``rsync --delete``) hold for scp -O,
rsync and git exactly as they hold for SFTP requests."""

from __future__ import annotations

import shlex
from dataclasses import replace

from bastion.config import Config, SshResource
from bastion.targets.base import TargetError
from bastion.targets.paths import resolve_on_target
from policies.engine import Action, Decision, PolicySet, evaluate
from policies.transfer import Transfer, TransferParseError, evaluate_transfer, exec_transfers


def _refusal(command: str, reason: str) -> Decision:
    return Decision(Action.BLOCK, None, reason, command, (reason,))


async def judge_exec_transfers(config: Config, name: str, command: str, groups: frozenset[str],
                               verdict: Decision | None) -> tuple[Decision | None, list[Transfer]]:
    """The exec command's decision with its transfers judged too (the strictest wins), and the transfers with
    their resolved paths (for the recording). ``verdict``: the command's own decision (None: no policy)."""
    res = config.resources[name]
    if not isinstance(res, SshResource):  # SQL, kubectl: judged at their own proxies
        return verdict, []
    try:
        transfers = exec_transfers(command)
    except TransferParseError as e:
        return _refusal(command, f"refused: the transfer command cannot be read with certainty ({e})"), []
    if not transfers or res.policy is None:
        return verdict, transfers or []
    try:
        real = await resolve_on_target(config, res, {p for t in transfers for p in _paths(t)})
    except TargetError as e:
        return _refusal(command, f"refused: the paths of this transfer cannot be checked on the target ({e})"), []
    transfers = [replace(t, path=real.get(t.path, t.path), other=real.get(t.other, t.other) if t.op == "rename"
                         else t.other) for t in transfers]
    policy: PolicySet = config.policies[res.policy]
    # The grammar has read every option, so the raw line is not judged as a shell command (the shell engine
    # would take rsync's "-e.iLsfxCIvu" for a program it runs): its transfers are, each with its shell
    # equivalent, and the program itself with each path, so that a rule on the program (programs: [rsync])
    # holds.
    program = command.split(None, 1)[0].rsplit("/", 1)[-1]
    best: Decision | None = None
    for t in transfers:
        for d in (evaluate_transfer(policy, t, groups=groups, resource=name),
                  evaluate(policy, f"{program} -- {shlex.quote(t.path)}", groups=groups, resource=name,
                           terminal=False)):
            if best is None or d.action > best.action:
                best = replace(d, text=command)  # the reviewer approves the command that runs, whole
    return best, transfers


def _paths(t: Transfer) -> list[str]:
    return [t.path, t.other] if t.op == "rename" else [t.path]
