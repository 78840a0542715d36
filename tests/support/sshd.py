"""A real OpenSSH sshd on a loopback port, with its own host key and authorized_keys."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.support.keys import free_port

SSHD = "/usr/sbin/sshd"


class SshdTarget:
    """A running ``sshd -D`` on ``host``:``port``; ``stop()`` (or leaving the ``with``) ends it."""

    host = "127.0.0.1"

    def __init__(self, proc: subprocess.Popen[bytes], port: int, user: str, host_key_public: str, log: Path,
                 host_key: Path | None = None):
        self.proc, self.port, self.user = proc, port, user
        self.host_key_public = host_key_public  # "ssh-ed25519 AAAA...", no comment
        self.host_key_path = host_key
        self.log_path = log

    @property
    def known_hosts_line(self) -> str:
        """A known_hosts line for this server (``[127.0.0.1]:PORT ssh-ed25519 AAAA...``)."""
        return f"[{self.host}]:{self.port} {self.host_key_public}"

    def log(self) -> str:
        """The sshd log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Terminate sshd (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SshdTarget:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _config(tmp: Path, port: int, host_key: Path, forwarding: bool = False) -> str:
    return f"""\
ListenAddress 127.0.0.1:{port}
HostKey {host_key}
AuthorizedKeysFile {tmp}/authorized_keys
StrictModes no
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
PidFile none
AllowTcpForwarding {'local' if forwarding else 'no'}
AllowAgentForwarding no
X11Forwarding no
PrintMotd no
PrintLastLog no
UseDNS no
Subsystem sftp internal-sftp
LogLevel VERBOSE
MaxStartups 1000:30:2000
"""


def _read(p: Path) -> str:
    return p.read_text(errors="replace") if p.exists() else ""


def start_sshd(tmp: Path, *, authorized_keys: list[str], user: str | None = None,
               forwarding: bool = False) -> SshdTarget:
    """Start a real sshd on 127.0.0.1:<free port> in ``tmp`` trusting ``authorized_keys``; wait until it listens.

    ``user`` is only what the target reports as its login user (default: the current user); sshd itself lets any
    local account that has one of the keys in. ``forwarding`` lets clients open local forwards through it (a jump
    host for ``ssh -J``). Raises RuntimeError with the sshd log if it does not come up in 10 s.
    """
    tmp = tmp.resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation directory
    host_key = tmp / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", str(host_key), "-C", ""], check=True)
    host_key.chmod(0o600)
    pub = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
    ak = tmp / "authorized_keys"
    ak.write_text("".join(k.strip() + "\n" for k in authorized_keys if k.strip()))
    ak.chmod(0o600)
    log = tmp / "sshd.log"
    last_error = ""
    for _attempt in range(3):  # the free port may be taken before sshd binds it
        port = free_port()
        (tmp / "sshd_config").write_text(_config(tmp, port, host_key, forwarding))
        start = len(_read(log))
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp / "sshd_config"), "-E", str(log)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if "Server listening on" in _read(log)[start:]:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        pass
                except OSError:
                    pass
                else:
                    return SshdTarget(proc, port, user or pwd.getpwuid(os.getuid()).pw_name, pub, log, host_key)
            time.sleep(0.05)
        else:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within 10 s; log:\n{_read(log)}")
        last_error = _read(log)[start:]
        if "Bind to port" not in last_error and "Cannot bind" not in last_error:
            raise RuntimeError(f"sshd exited with {proc.returncode}; log:\n{_read(log)}")
    raise RuntimeError(f"sshd could not bind a port; log:\n{last_error}")
