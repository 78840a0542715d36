"""Secret prompts: which lines typed without echo are answers to a program asking for a secret, and so must not be
recorded (see ``bastion.terminal.cmdfilter`` for the rules as a whole). ``secret_asks`` says whether a released
command line may ask for secrets (and how many ``read -s`` it holds); ``SECRET_PROMPT`` recognises a prompt that
asks for one; ``redacted`` strips a decision of anything that may quote a withheld line."""

from __future__ import annotations

import re
import shlex
from dataclasses import replace

from policies.engine import Decision

UNECHOED = "(typed without echo)"
WITHHELD = "(typed without echo at a secret prompt: not recorded)"
SECRET_LINES = 3  # hidden lines taken as secrets after one command line (a password and two retries; passwd's three)
SECRET_PROMPT = re.compile(
    r"\bpass(?:word|phrase|code|wd)?s?\b|\bpass ?phrase|\bpin\b|secret|\btokens?\b|\botp\b|one[- ]time|"
    r"verification code|security code|\b2fa\b|\bmfa\b|authenticat\w* code|\bapi[ _-]?key\b|"
    r"passwort|kennwort|mot de passe|contrase|senha|wachtwoord|l\u00f6senord|salasana|"
    r"\u043f\u0430\u0440\u043e\u043b\u044c|\u5bc6\u7801|\u30d1\u30b9\u30ef\u30fc\u30c9",
    re.IGNORECASE)
SECRET_PROGRAMS = frozenset((
    "sudo", "sudoedit", "su", "doas", "pkexec", "runuser", "ksu", "login", "newgrp", "sg", "passwd", "gpasswd",
    "chsh", "chfn", "htpasswd", "vlock", "ssh", "scp", "sftp", "ssh-add", "ssh-keygen", "ssh-copy-id", "sshfs",
    "sshpass", "rsync", "git", "svn", "hg", "ftp", "lftp", "smbclient", "rpcclient", "net", "curl", "wget", "gpg",
    "gpg2", "age", "openssl", "keytool", "certutil", "pk12util", "cryptsetup", "veracrypt", "encfs", "gocryptfs",
    "zip", "unzip", "7z", "7za", "rar", "unrar", "mysql", "mariadb", "mysqldump", "mysqladmin", "psql", "pg_dump",
    "pg_dumpall", "pg_restore", "createdb", "createuser", "dropdb", "dropuser", "sqlplus", "mongo", "mongosh",
    "redis-cli", "cqlsh", "influx", "clickhouse-client", "kinit", "kpasswd", "ldapsearch", "ldapadd", "ldapmodify",
    "ldapdelete", "ldappasswd", "ldapwhoami", "ipa", "realm", "adcli", "vault", "op", "pass", "bw", "lpass",
    "keepassxc-cli", "rclone", "restic", "borg", "duplicity", "kopia", "systemd-ask-password", "docker", "podman",
    "skopeo", "buildah", "oc", "helm", "gh", "glab", "az", "gcloud", "aws", "npm", "yarn", "pip", "pip3", "twine",
    "gem", "cargo", "ansible", "ansible-playbook", "ansible-vault", "terraform", "make", "expect", "mount", "nmcli",
    "openvpn", "wpa_passphrase", "python", "python2", "python3", "perl", "ruby", "node", "php", "java", "bash", "sh",
    "zsh", "dash", "ksh",
))
_READ_ARG_OPTIONS = frozenset("adinNptu")  # bash's read options that take an argument
_SCRIPTS = (".sh", ".bash", ".py", ".pl", ".rb", ".js", ".php")


def redacted(d: Decision) -> Decision:
    """``d`` without anything that may quote the line (the reason and explanation name its words)."""
    return replace(d, text=WITHHELD, reason=WITHHELD, explanation=(), programs=())


def secret_asks(line: str) -> tuple[bool, int]:
    """Whether ``line`` runs a program that may ask for a secret (a word naming one of ``SECRET_PROGRAMS`` anywhere,
    so wrappers need no parsing; a script run by path or by a ``.sh``/``.py``/... name), and how many ``read -s`` it
    holds. Erring towards "yes" only keeps a few hidden lines out of the recording, and those are still judged."""
    try:
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
        lex.whitespace_split = True
        words = list(lex)
    except ValueError:  # an unclosed quote
        words = re.findall(r"[^\s;&|()<>]+|[;&|()<>]+", line)
    asks, reads = False, 0
    for n, word in enumerate(words):
        name = word.rsplit("/", 1)[-1]
        first = n == 0 or words[n - 1][-1] in ";&|()<>" or words[n - 1] in SECRET_PROGRAMS
        if name in SECRET_PROGRAMS or (first and name and ("/" in word or name.endswith(_SCRIPTS))):
            asks = True
        if name == "read":
            reads += _read_silent(words[n + 1:])
    return asks, reads


def _read_silent(args: list[str]) -> int:
    """1 if these arguments of ``read`` include ``-s`` (getopt-style: ``-rsp PROMPT``, ``-p PROMPT -s``)."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] not in ("-", "--"):
        for k, ch in enumerate(args[i][1:]):
            if ch == "s":
                return 1
            if ch in _READ_ARG_OPTIONS:
                i += k == len(args[i]) - 2  # the argument is the next word
                break
        i += 1
    return 0
