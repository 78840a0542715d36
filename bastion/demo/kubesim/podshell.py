"""The scripted shell inside every simulated pod (what ``kubectl exec`` reaches)."""

from __future__ import annotations

import re
import shlex
import time


class PodShell:
    """A tiny shell: echo (with ``$((a*b))`` and ``$HOSTNAME``), hostname, pwd, cd, ls, cat, id, whoami, uname, env,
    date, true, false, rm, exit [N]; anything else is "not found" (127)."""

    def __init__(self, pod: str):
        self.pod = pod
        self.cwd = "/"
        self.files = {"/etc/hostname": pod + "\n", "/etc/os-release": 'NAME="Simulated Linux"\n',
                      "/data/app.db": "rows\n", "/app/config.yaml": "listen: :8080\n"}
        self.env = {"HOSTNAME": pod, "HOME": "/root", "PATH": "/usr/bin:/bin"}
        self.exited: int | None = None

    def _expand(self, word: str) -> str:
        def arith(m: re.Match[str]) -> str:
            a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
            return str({"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op])

        word = re.sub(r"\$\(\(\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*\)\)", arith, word)
        return re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: self.env.get(m.group(1) or m.group(2), ""), word)

    def run(self, line: str) -> tuple[str, str, int]:
        """Run one line (``;``-separated commands); (stdout, stderr, status)."""
        out, err, rc = [], [], 0
        for part in line.split(";"):
            try:
                argv = [self._expand(w) for w in shlex.split(part)]
            except ValueError as e:
                err.append(f"sh: syntax error: {e}\n")
                rc = 2
                continue
            if not argv:
                continue
            o, e2, rc = self._one(argv)
            out.append(o)
            err.append(e2)
            if self.exited is not None:
                break
        return "".join(out), "".join(err), rc

    def _path(self, p: str) -> str:
        return p if p.startswith("/") else (self.cwd.rstrip("/") + "/" + p)

    def _one(self, argv: list[str]) -> tuple[str, str, int]:
        cmd, args = argv[0], argv[1:]
        if cmd == "exit":
            self.exited = int(args[0]) if args and args[0].isdigit() else 0
            return "", "", self.exited
        if cmd == "echo":
            return " ".join(args) + "\n", "", 0
        if cmd == "hostname":
            return self.pod + "\n", "", 0
        if cmd == "pwd":
            return self.cwd + "\n", "", 0
        if cmd == "cd":
            self.cwd = self._path(args[0]) if args else "/root"
            return "", "", 0
        if cmd in ("id", "whoami"):
            return ("uid=0(root) gid=0(root)\n" if cmd == "id" else "root\n"), "", 0
        if cmd == "uname":
            return "Linux\n", "", 0
        if cmd == "date":
            return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()) + "\n", "", 0
        if cmd == "env":
            return "".join(f"{k}={v}\n" for k, v in self.env.items()), "", 0
        if cmd in ("true", ":"):
            return "", "", 0
        if cmd == "false":
            return "", "", 1
        if cmd == "ls":
            d = self._path(args[-1] if args and not args[-1].startswith("-") else self.cwd).rstrip("/") + "/"
            names = sorted({f[len(d):].split("/")[0] for f in self.files if f.startswith(d)})
            return ("  ".join(names) + "\n") if names else "", "", 0
        if cmd == "cat":
            out, err, rc = [], [], 0
            for a in args:
                p = self._path(a)
                if p in self.files:
                    out.append(self.files[p])
                else:
                    err.append(f"cat: can't open '{a}': No such file or directory\n")
                    rc = 1
            return "".join(out), "".join(err), rc
        if cmd == "rm":
            for a in (a for a in args if not a.startswith("-")):
                p = self._path(a).rstrip("/")
                for f in [f for f in self.files if f == p or f.startswith(p + "/")]:
                    del self.files[f]
            return "", "", 0
        return "", f"sh: {cmd}: not found\n", 127
