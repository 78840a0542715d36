"""A real OpenSSH sshd on a loopback port, with its own host key and authorized_keys."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from pathlib import Path

from tests.support.keys import free_port


class SshdTarget:
    """A running ``sshd -D``; stop() ends it."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, user: str, host_key_public: str, log: Path):
        self.proc, self.port, self.user = proc, port, user
        self.host = "127.0.0.1"
        self.host_key_public = host_key_public
        self.log_path = log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SshdTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sshd(tmp: Path, *, authorized_keys: list[str], user: str | None = None) -> SshdTarget:
    """Start sshd on 127.0.0.1:<free port> trusting ``authorized_keys``; wait until it accepts connections."""
    tmp.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = tmp / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", str(host_key)], check=True)
    pub = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
    (tmp / "authorized_keys").write_text("".join(k.strip() + "\n" for k in authorized_keys))
    os.chmod(tmp / "authorized_keys", 0o600)
    port = free_port()
    log = tmp / "sshd.log"
    (tmp / "sshd_config").write_text(f"""\
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
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
""")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(tmp / "sshd_config"), "-E", str(log)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"sshd did not listen: {log.read_text() if log.exists() else ''}")
    return SshdTarget(proc, port, user or getpass.getuser(), pub, log)
