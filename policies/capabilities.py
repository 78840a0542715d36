"""What programs can do beyond their name: run code, run commands given in their arguments, read commands.

A deny-list of program names cannot enumerate every program that deletes a file, but it can know which programs
*run other commands*, and how: interpreters run code (from a string, a file, stdin), editors, pagers and REPLs read
commands from the operator, and a long tail of ordinary tools take a command in an option (``tar
--checkpoint-action=exec=``, ``rsync -e``, ``git -c alias.x=!``, ``sed``'s ``e``, ``awk``'s ``system()``). For each,
:func:`inspect` returns either the command it will run (judged like any other) or why the line is opaque. Pure, no
I/O; the table entries each have a test.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from policies.getopt import NONE, OPTIONAL, REQUIRED, Grammar, scan
from policies.wrappers import RUNNERS

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "oksh", "yash", "fish", "csh",
                    "tcsh", "ash", "rbash", "posh", "rc", "es", "elvish", "nu", "xonsh", "ion", "oil", "osh",
                    "ysh", "hush", "msh"})
# programs that run code: whatever the flags, they are opaque unless only asked for their version or help
INTERPRETERS = SHELLS | frozenset({
    "python", "python2", "python3", "pypy", "pypy3", "ipython", "ipython3", "bpython", "perl", "perl5", "cperl",
    "ruby", "irb", "jruby", "node", "nodejs", "deno", "bun", "php", "php-cgi", "lua", "luajit", "tclsh", "wish",
    "expect", "Rscript", "R", "pwsh", "powershell", "osascript", "jshell", "jrunscript", "jjs", "groovy",
    "groovysh", "scala", "julia", "guile", "racket", "sbcl", "clisp", "ecl", "ocaml", "ghci", "runghc",
    "runhaskell", "erl", "escript", "elixir", "iex", "swift", "kotlin", "kotlinc", "gjs", "qjs", "rhino", "js",
    "d8", "java", "gdb", "lldb", "pdb", "dc", "m4", "make", "gmake", "bmake", "pmake", "cmake", "ninja", "ant",
    "gradle", "mvn", "rake", "tclkit", "emacs", "octave", "gnuplot", "maxima", "sage",
    "psql", "mysql", "mariadb", "sqlite3", "sqlcmd", "mongo", "mongosh", "redis-cli", "cqlsh", "duckdb",
    "clickhouse-client", "sftp", "ftp", "lftp", "tftp", "telnet", "smbclient", "ed", "red", "ex", "mail", "mailx",
    "s-nail", "mutt", "neomutt", "cargo", "go", "perldoc", "ri", "pydoc", "pydoc3", "ispell", "pdb3",
    "idle", "idle3", "pygmentize", "prove", "lli", "not", "bugpoint", "llvm-jitlink", "wasmtime", "wasmer", "sbt",
    "lein", "clojure", "clj", "bb", "nim", "crystal", "zig", "dart", "flutter", "tsc", "ts-node", "coffee",
    "npx", "bunx", "emacs-nox", "xemacs", "gforth", "pike", "rexx", "regina", "cint",
})
# only their version or help: ``python3 --version`` is harmless
INFO_ONLY = frozenset({"--version", "-V", "--help", "-h", "-version", "-help", "/?", "-?"})
VERSION_V = frozenset({"perl", "node", "nodejs", "deno", "bun", "php", "lua", "luajit"})  # -v is the version
# a program whose name is one of these plus a version suffix (python3.11, perl5.36, lua5.4, php8.2, tclsh8.6)
VERSIONED = re.compile(r"^(python|pypy|perl|ruby|node|php|lua|tclsh|wish|pwsh|guile|java|ipython|erl|julia|ocaml|"
                       r"scala|mysql|psql|sqlite|pydoc|pdb|idle|irb|lli|cpan|gem|pip|perldoc|pod2\w+)[0-9][-.\w]*$")
EDITORS = frozenset({"vi", "vim", "nvim", "gvim", "view", "vimdiff", "rvim", "rview", "evim", "ex", "nex",
                     "emacs", "emacsclient", "nano", "rnano", "pico", "joe", "jmacs", "jstar", "jpico", "mcedit",
                     "micro", "kak", "hx", "helix", "jed", "ne", "mg", "zile", "vis", "elvis", "nvi", "xedit",
                     "sudoedit", "vipe", "visudo", "vipw", "vigr", "crontab-e", "edit", "mc"})
EDITOR_NAME = re.compile(r"^(vim?|nvim|gvim|rvim|view|ex|vimdiff|evim|emacs\d*|nano|mg)([.-][\w.-]+)?$")
# with a terminal they read keys from the operator, and ``!cmd`` (or ``|``, ``v``) runs a command
PAGERS = frozenset({"less", "more", "most", "pg", "man", "info", "pinfo", "journalctl", "systemctl", "git-log",
                    "perldoc", "lynx", "w3m", "links", "elinks", "htop", "mc", "ranger", "nnn", "lf", "vifm", "tig",
                    "lazygit", "ncdu", "aptitude", "tmux", "minicom", "screen", "irssi", "weechat", "k9s", "zless",
                    "zmore", "bzless", "bzmore", "xzless", "xzmore", "lzless", "lzmore", "zstdless", "zstdmore",
                    "lessfile", "pager", "sensible-pager", "networkctl", "loginctl", "timedatectl", "hostnamectl",
                    "resolvectl", "busctl", "coredumpctl", "localectl", "machinectl", "portablectl", "homectl",
                    "userdbctl", "bootctl", "systemd-analyze", "mysql", "psql"})


@dataclass
class Effects:
    """What :func:`inspect` found in one command: nested commands to judge, derived program names, opacity."""

    opaque: list[str] = field(default_factory=list)
    argvs: list[tuple[int, int]] = field(default_factory=list)  # argument index ranges that are a command's argv
    lines: list[str] = field(default_factory=list)              # command lines the program runs through a shell
    also: list[str] = field(default_factory=list)               # program names it acts as (``git rm`` -> rm)
    args_open: bool = False
    replace: str | None = None
    steps: list[str] = field(default_factory=list)


# the listing forms of runners: they only print what is scheduled or running
RUNNER_LISTS = {"crontab": (("-l",),), "screen": (("-ls",), ("-list",)), "tmux": (("ls",), ("list-sessions",)),
                "at": (("-l",),)}


def base_name(prog: str) -> str:
    """``python3.11`` -> ``python3``-like family name for the tables (``python``); ``lli-14`` -> ``lli``;
    other names unchanged."""
    m = VERSIONED.match(prog)
    if m:
        return m.group(1)
    return re.sub(r"-[\d.]+$", "", prog)


SYSTEM_PREFIXES = ("/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/local/bin/", "/usr/local/sbin/", "/snap/bin/")
# the dynamic loader runs the program given as its first argument, whatever its name
LOADER = re.compile(r"^(ld-linux[-.\w]*\.so[.\d]*|ld\.so[.\d]*|ld64\.so[.\d]*|ld-musl[-.\w]*\.so[.\d]*)$")


def path_problem(word: str) -> str | None:
    """Why a program given by a path is opaque: a relative path or one outside the system's program directories
    (a file the operator may have written or copied a binary to, under any name)."""
    if "/" not in word:
        return None
    if not word.startswith("/"):
        return f"{word} is a program or script given by a relative path (its contents are not visible)"
    norm = posixpath.normpath(word)
    if norm.startswith("//"):
        norm = norm[1:]
    if not any(norm.startswith(p) and "/" not in norm[len(p):] for p in SYSTEM_PREFIXES):
        return f"{word} is not a program of the system's program directories (its contents are not visible)"
    return None


# environment variables that change which program runs or make a program run code
DANGEROUS_ENV = re.compile(
    r"^(PATH|LD_[A-Z_]*|BASH_ENV|ENV|BASH_FUNC_.*|BASHOPTS|SHELLOPTS|PS4|PROMPT_COMMAND|IFS|CDPATH|SHELL|HOME|"
    r"XDG_[A-Z_]*|GIT_[A-Z_]*|PAGER|[A-Z_]*PAGER|EDITOR|VISUAL|[A-Z_]*EDITOR|LESS[A-Z_]*|MANOPT|BROWSER|"
    r"PYTHON[A-Z_]*|PERL[A-Z0-9_]*|RUBY[A-Z_]*|GEM_[A-Z_]*|NODE_[A-Z_]*|NPM_CONFIG_[A-Z_]*|JAVA_TOOL_OPTIONS|"
    r"_JAVA_OPTIONS|JDK_JAVA_OPTIONS|CLASSPATH|TAR_OPTIONS|GZIP|XZ_OPT|ZSTD_[A-Z_]*|BZIP2|RSYNC_[A-Z_]*|"
    r"SSH_ASKPASS|SUDO_ASKPASS|[A-Z_]*ASKPASS|[A-Z_]*_COMMAND|[A-Z_]*_CMD|[A-Z_]*_PROGRAM|[A-Z_]*_PROG|"
    r"GCONV_PATH|LOCPATH|NLSPATH|TMPDIR|MAIL[A-Z_]*|SYSTEMD_[A-Z_]*|LUA_[A-Z_]*|TCLLIBPATH|R_[A-Z_]*|"
    r"PHP[A-Z_]*|OPENSSL_[A-Z_]*|MALLOC_[A-Z_]*|GLIBC_TUNABLES|HOSTALIASES|RESOLV_[A-Z_]*|ZDOTDIR|INPUTRC|"
    r"TERMINFO[A-Z_]*|FPATH|MODULEPATH|[A-Z_]*PATH|[A-Z_]*_HOME|[A-Z_]*RC|[A-Z_]*_OPTS|[A-Z_]*_OPTIONS|"
    r"[A-Z_]*_FLAGS|ZIP|ZIPOPT|UNZIP|UNZIPOPT|MAKEFLAGS|MAKEFILES|MFLAGS|GNUMAKEFLAGS|BZIP|XZ_DEFAULTS|LZ4|"
    r"GREP_OPTIONS|KUBECONFIG|SSH_AUTH_SOCK|GNUPGHOME|PROMPT_DIRTRIM|HISTFILE|GETCONF_DIR|NETRC|WGETRC|CURL_HOME|"
    r"GROFF_[A-Z_]*|TEXINPUTS|MANPATH|MANROFFOPT|PYTHONSTARTUP|POSIXLY_CORRECT|QUOTING_STYLE|TIME_STYLE|"
    r"SYSTEMD_[A-Z_]*|DEBUGINFOD_[A-Z_]*|VALGRIND_[A-Z_]*|ASAN_OPTIONS|[A-Z_]*_PRELOAD)$")


SYSTEM_BIN_DIRS = frozenset({"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"})


def env_problem(name: str, value: str | None = None) -> str | None:
    """Why setting the environment variable ``name`` (to ``value`` when known) for a command makes the line
    opaque (None: harmless). A PATH of system directories only is harmless."""
    if name == "PATH" and value is not None and value and all(p in SYSTEM_BIN_DIRS for p in value.split(":")):
        return None
    if DANGEROUS_ENV.match(name):
        return f"setting {name} changes which program runs or makes it run code"
    return None


# package managers and build tools run scripts from packages (setup.py, npm lifecycle scripts): only their
# read-only subcommands are seen as harmless
PACKAGE_TOOLS: dict[str, frozenset[str]] = {
    "pip": frozenset({"list", "show", "freeze", "help", "check", "search", "index", "inspect", "debug"}),
    "pip3": frozenset({"list", "show", "freeze", "help", "check", "search", "index", "inspect", "debug"}),
    "npm": frozenset({"ls", "list", "view", "info", "show", "help", "outdated", "search", "config", "root", "bin",
                      "prefix", "whoami", "ping", "audit", "doctor"}),
    "yarn": frozenset({"list", "info", "why", "help", "outdated", "config"}),
    "pnpm": frozenset({"list", "ls", "outdated", "why", "help"}),
    "gem": frozenset({"list", "search", "info", "help", "env", "query", "specification", "contents"}),
    "cpan": frozenset(), "cpanm": frozenset(), "composer": frozenset({"show", "info", "outdated", "licenses"}),
    "bundle": frozenset({"list", "info", "outdated", "show"}), "poetry": frozenset({"show", "env", "check"}),
    "uv": frozenset({"--version", "version", "pip", "tree"}), "pipenv": frozenset({"graph", "--venv"}),
    "conda": frozenset({"list", "info", "search", "env"}), "mamba": frozenset({"list", "info", "search"}),
    "apt": frozenset({"list", "show", "search", "policy", "depends", "rdepends", "changelog"}),
    "apt-cache": frozenset({"show", "search", "policy", "depends", "rdepends", "showpkg", "madison", "pkgnames",
                            "stats", "showsrc"}),
}
COPIERS = frozenset({"cp", "ln", "install", "rsync", "mv", "dd", "cat", "tee", "link"})
SYSTEM_PROGRAM = re.compile(r"^(/usr)?(/local)?/s?bin/[^/]+$")
# files that other programs read as configuration or run: writing one plants code for later
SENSITIVE_FILE = re.compile(r"(^|/)\.git/|(^|/)hooks/|(^|/)\.(bashrc|bash_profile|bash_login|bash_logout|profile|"
                            r"zshrc|zshenv|zprofile|zlogin|kshrc|cshrc|tcshrc|inputrc|gitconfig|vimrc|exrc|gvimrc|"
                            r"lessfilter|lesskey|mailcap|netrc|wgetrc|curlrc|pythonrc|perldb|gdbinit|npmrc|"
                            r"pam_environment|xinitrc|xsession)$|(^|/)\.ssh/(config|rc|environment)$|"
                            r"(^|/)\.config/|(^|/)(Makefile|makefile|GNUmakefile)$|/etc/")
COMPRESSORS = frozenset({"gzip", "gunzip", "bzip2", "bunzip2", "xz", "unxz", "lzma", "unlzma", "pigz", "unpigz",
                         "pbzip2", "lzip", "lunzip", "compress", "uncompress", "zstd", "unzstd", "lz4", "lzop",
                         "brotli"})
KEEP_FLAGS = frozenset({"--keep", "--stdout", "--to-stdout", "--test", "--list", "-", "--help", "--version"})
DELETERS = frozenset({"wipe", "srm", "trash", "trash-put", "tmpreaper", "tmpwatch", "shred"})

# ---------------------------------------------------------------------------------------------------------------
# awk: only programs that run commands are opaque (system(), "cmd" | getline, print | "cmd", |&)

AWK_GRAMMAR = Grammar("F:f:v:e:E:i:l:bcCd::D::ghL::nNo::Op::MPrSstVYZ:W:", {
    "field-separator": REQUIRED, "file": REQUIRED, "assign": REQUIRED, "source": REQUIRED, "exec": REQUIRED,
    "include": REQUIRED, "load": REQUIRED, "characters-as-bytes": NONE, "traditional": NONE, "copyright": NONE,
    "dump-variables": OPTIONAL, "debug": OPTIONAL, "gen-pot": NONE, "help": NONE, "lint": OPTIONAL,
    "bignum": NONE, "use-lc-numeric": NONE, "non-decimal-data": NONE, "pretty-print": OPTIONAL,
    "optimize": NONE, "profile": OPTIONAL, "posix": NONE, "re-interval": NONE, "no-optimize": NONE,
    "sandbox": NONE, "lint-old": NONE, "version": NONE, "csv": NONE, "locale": REQUIRED})
AWK_CODE_FILES = {"-f", "--file", "-E", "--exec", "-i", "--include", "-l", "--load", "-W"}
AWK_WRITES_FILES = {"-d", "--dump-variables", "-p", "--profile", "-o", "--pretty-print", "-D", "--debug"}


def _strip_awk(prog: str, after_paren: bool = False) -> str | None:
    """The awk program with string and regex literals blanked (None: unterminated, cannot tell);
    ``after_paren``: read a ``/`` after ``)`` as a regex (``if (x) /re/``) instead of a division."""
    out: list[str] = []
    i, n = 0, len(prog)
    prev = ""  # last significant character outside literals
    while i < n:
        c = prog[i]
        if c == "#":
            j = prog.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == '"':
            j = i + 1
            while j < n and prog[j] != '"':
                j += 2 if prog[j] == "\\" else 1
            if j >= n:
                return None
            out.append('""')
            prev = '"'
            i = j + 1
            continue
        if c == "/" and (prev == "" or prev in "(,{};!~=?:&|\n" or (after_paren and prev == ")") or re.search(
                r"\b(print|printf|return|in|else|do)\s*$", "".join(out))):
            j = i + 1
            while j < n and prog[j] != "/":
                if prog[j] == "\n":
                    return None
                if prog[j] == "[":  # a bracket expression may hold '/' and '"'
                    k = prog.find("]", j + 2 if prog.startswith(("[]", "[^]"), j) else j + 1)
                    if k < 0:
                        return None
                    j = k + 1
                    continue
                j += 2 if prog[j] == "\\" else 1
            if j >= n:
                return None
            out.append("//")
            prev = "/"
            i = j + 1
            continue
        out.append(c)
        if not c.isspace():
            prev = c
        i += 1
    return "".join(out)


def awk_problem(prog: str) -> str | None:
    """Why an awk program can run a command. Whether ``/`` starts a regex or divides depends on context the
    reader may get wrong (``if (x) /"/``), so the program is read both ways and the names are looked for in
    the raw text too."""
    if re.search(r"\bsystem\b", prog):
        return "awk program calls system()"
    if "@" in prog:
        return "awk program loads code or calls a function by name (@f())"
    readings = [c for c in (_strip_awk(prog, False), _strip_awk(prog, True)) if c is not None]
    if not readings:  # awk reads it one of these ways; a reading that does not parse is not awk's
        return "awk program with an unterminated string or regex"
    if any(re.search(r"(?<!\|)\|(?!\|)", code) for code in readings):
        return "awk program pipes to or from a command"
    return None


def inspect_awk(args: Sequence[str]) -> Effects:
    eff = Effects()
    s = scan(AWK_GRAMMAR, args)
    if s.error:
        eff.opaque.append(f"awk: {s.error}")
        return eff
    for opt, _ in s.options:
        if opt in AWK_CODE_FILES:
            eff.opaque.append(f"awk {opt} runs a program from a file (its contents are not visible)")
            return eff
    programs = s.values("-e", "--source")
    if not programs:
        if not s.operands:
            if s.has("--version", "-V", "--help", "-h", "--copyright", "-C"):
                return eff
            eff.opaque.append("awk with no program")
            return eff
        programs = [args[s.operands[0]]]
    for prog in programs:
        why = awk_problem(prog)
        if why and not s.has("--sandbox", "-S"):
            eff.opaque.append(why)
    return eff


# ---------------------------------------------------------------------------------------------------------------
# sed: the e command and the e flag of s run commands; a script from a file is not visible

SED_GRAMMAR = Grammar("nrsuzEe:f:l:i::bs", {
    "quiet": NONE, "silent": NONE, "debug": NONE, "expression": REQUIRED, "file": REQUIRED,
    "follow-symlinks": NONE, "in-place": OPTIONAL, "line-length": REQUIRED, "null-data": NONE,
    "zero-terminated": NONE, "posix": NONE, "regexp-extended": NONE, "separate": NONE, "sandbox": NONE,
    "unbuffered": NONE, "binary": NONE, "help": NONE, "version": NONE})


def _sed_read_delim(s: str, i: int, d: str, regex: bool = True) -> int:
    """Index just past the unescaped delimiter ``d`` from ``s[i]``, or -1. In a regex a bracket expression
    (``[/]``) holds the delimiter as an ordinary character."""
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "[" and regex:
            j = i + 1
            if j < n and s[j] == "^":
                j += 1
            if j < n and s[j] == "]":
                j += 1
            while j < n and s[j] != "]":
                if s.startswith(("[:", "[.", "[="), j):
                    k = s.find(s[j + 1] + "]", j + 2)
                    if k < 0:
                        return -1
                    j = k + 2
                    continue
                if s[j] == "\n":
                    return -1
                j += 1
            if j >= n:
                return -1
            i = j + 1
            continue
        if c == "\n" and d != "\n":
            return -1
        if c == d:
            return i + 1
        i += 1
    return -1


def sed_problem(script: str) -> str | None:
    """Why a sed script runs a command (the e command, s///e), or cannot be read; None if it cannot."""
    i, n = 0, len(script)

    def to_eol(k: int) -> int:
        j = script.find("\n", k)
        return n if j < 0 else j

    while i < n:
        c = script[i]
        if c in " \t\n;":
            i += 1
            continue
        # addresses
        for _ in range(2):
            if i < n and (script[i].isdigit() or script[i] == "$"):
                i += 1
                while i < n and (script[i].isdigit() or script[i] == "~"):
                    i += 1
            elif i < n and script[i] == "/":
                i = _sed_read_delim(script, i + 1, "/")
                if i < 0:
                    return "sed script with an unterminated address"
                while i < n and script[i] in "IM":
                    i += 1
            elif i < n and script[i] == "\\" and i + 1 < n:
                i = _sed_read_delim(script, i + 2, script[i + 1])
                if i < 0:
                    return "sed script with an unterminated address"
                while i < n and script[i] in "IM":
                    i += 1
            elif i < n and script[i] in "+~":
                i += 1
                while i < n and script[i].isdigit():
                    i += 1
            while i < n and script[i] in " \t":
                i += 1
            if i < n and script[i] == ",":
                i += 1
                while i < n and script[i] in " \t":
                    i += 1
                continue
            break
        while i < n and script[i] in " \t!":
            i += 1
        if i >= n:
            return None
        c = script[i]
        i += 1
        if c in "{}=dDgGhHnNpPxzFlqQLv":
            if c in "lqQLv":  # optional number or version
                while i < n and script[i] in " \t0123456789.":
                    i += 1
            continue
        if c == "#":
            i = to_eol(i)
            continue
        if c in "aic":
            if i < n and script[i] == "\\":
                i += 1
            while True:  # text lines; a trailing backslash continues
                j = to_eol(i)
                if j > i and script[j - 1] == "\\" and j < n:
                    i = j + 1
                    continue
                i = j
                break
            continue
        if c in "rRwW":
            i = to_eol(i)
            continue
        if c in ":btT":  # a label ends at whitespace or ';' (GNU sed)
            while i < n and script[i] in " \t":
                i += 1
            while i < n and script[i] not in "; \t\n":
                i += 1
            continue
        if c == "e":
            return "sed's e command runs a command"
        if c in "sy":
            if i >= n or script[i] in "\n\\":
                return "sed script: bad s or y command"
            d = script[i]
            j = _sed_read_delim(script, i + 1, d)
            k = _sed_read_delim(script, j, d, regex=False) if j >= 0 else -1
            if k < 0:
                return f"sed script: unterminated {c} command"
            i = k
            if c == "s":
                while i < n and script[i] not in ";\n}":
                    f = script[i]
                    if f == "e":
                        return "sed's s///e runs the pattern space as a command"
                    if f in "wW":
                        i = to_eol(i)
                        break
                    if f not in "gpiImM0123456789 \t":
                        return f"sed script: unknown s flag {f!r}"
                    i += 1
            continue
        return f"sed script: unknown command {c!r}"
    return None


def inspect_sed(args: Sequence[str]) -> Effects:
    eff = Effects()
    s = scan(SED_GRAMMAR, args)
    if s.error:
        eff.opaque.append(f"sed: {s.error}")
        return eff
    if s.has("-f", "--file"):
        eff.opaque.append("sed -f runs a script from a file (its contents are not visible)")
        return eff
    scripts = s.values("-e", "--expression")
    if not scripts:
        if not s.operands:
            return eff
        scripts = [args[s.operands[0]]]
    if s.has("--sandbox"):
        return eff
    for script in scripts:
        why = sed_problem(script)
        if why:
            eff.opaque.append(why)
    return eff


# ---------------------------------------------------------------------------------------------------------------
# git: -c and subcommands that run commands; unknown subcommands are aliases or external git-* programs

def _words(text: str) -> list[str]:
    return text.split()


GIT_GRAMMAR = Grammar("+C:c:hpPv", {
    "exec-path": OPTIONAL, "html-path": NONE, "man-path": NONE, "info-path": NONE, "paginate": NONE,
    "no-pager": NONE, "git-dir": REQUIRED, "work-tree": REQUIRED, "namespace": REQUIRED, "bare": NONE,
    "no-replace-objects": NONE, "no-lazy-fetch": NONE, "literal-pathspecs": NONE, "glob-pathspecs": NONE,
    "noglob-pathspecs": NONE, "icase-pathspecs": NONE, "no-optional-locks": NONE, "list-cmds": REQUIRED,
    "attr-source": REQUIRED, "config-env": REQUIRED, "super-prefix": REQUIRED, "help": NONE, "version": NONE,
    "no-advice": NONE})
GIT_SAFE_CONFIG = re.compile(
    r"^(color\..*|column\..*|core\.(quotepath|abbrev|autocrlf|safecrlf|filemode|ignorecase|precomposeunicode|"
    r"longpaths)|log\.[a-z]+|user\.(name|email)|author\.(name|email)|committer\.(name|email)|advice\..*|"
    r"init\.defaultbranch|safe\.directory|i18n\..*|pull\.(rebase|ff)|push\.(default|autosetupremote)|"
    r"fetch\.prune|status\.[a-z]+|grep\.[a-z]+|blame\.[a-z]+|diff\.(renames|noprefix|mnemonicprefix|"
    r"algorithm|context|statgraphwidth|relative|colormoved)|merge\.(ff|conflictstyle|log)|format\.pretty|"
    r"pretty\.[a-z0-9_-]+|rerere\.enabled|http\.sslverify|protocol\.version|transfer\.fsckobjects|gc\.auto)$",
    re.I)
GIT_SUBCOMMANDS = frozenset(_words("""
add am annotate apply archive bisect blame branch bundle cat-file check-attr check-ignore check-mailmap
check-ref-format checkout checkout-index cherry cherry-pick citool clean clone column commit commit-graph
commit-tree config count-objects describe diff diff-files diff-index diff-tree difftool fast-export fast-import
fetch fetch-pack filter-branch for-each-ref for-each-repo format-patch fsck gc get-tar-commit-id grep
hash-object help index-pack init instaweb interpret-trailers log ls-files ls-remote ls-tree mailinfo mailsplit
maintenance merge merge-base merge-file merge-index merge-tree mergetool mktag mktree multi-pack-index mv
name-rev notes pack-objects pack-refs prune prune-packed pull push range-diff read-tree rebase reflog remote
repack replace request-pull rerere reset restore rev-list rev-parse revert rm send-email send-pack shortlog show
show-branch show-index show-ref sparse-checkout stash status stripspace submodule switch symbolic-ref tag
unpack-objects update-index update-ref upload-archive var verify-commit verify-pack verify-tag version
whatchanged worktree write-tree"""))
# subcommands that run a command given on their command line (or an editor/tool they choose)
GIT_RUNS = {"bisect": ("run",), "submodule": ("foreach",), "rebase": ("-x", "--exec", "-i", "--interactive"),
            "filter-branch": ("*",), "difftool": ("*",), "mergetool": ("*",), "instaweb": ("*",),
            "send-email": ("*",), "citool": ("*",), "for-each-repo": ("*",), "apply": ("*",), "am": ("*",),
            "grep": ("-O", "--open-files-in-pager"), "archive": ("--exec", "--remote"),
            "clone": ("-u", "--upload-pack", "--template", "-c", "--config"),
            "fetch": ("--upload-pack",), "pull": ("--upload-pack",), "ls-remote": ("--upload-pack",),
            "push": ("--receive-pack", "--exec"), "fetch-pack": ("--upload-pack", "--exec"),
            "send-pack": ("--receive-pack", "--exec"), "config": ("-e", "--edit"),
            "commit": ("--edit", "-e"), "tag": ("-e", "--edit"), "add": ("-e", "--edit", "-i", "--interactive",
                                                                          "-p", "--patch"),
            "merge": ("-e", "--edit"), "notes": ("edit",),
            "log": ("--ext-diff",), "show": ("--ext-diff",), "diff": ("--ext-diff", "--textconv")}
# subcommands that page their output when a terminal is attached (the pager reads keys: ``!cmd``)
GIT_PAGES = frozenset({"log", "show", "diff", "blame", "grep", "shortlog", "reflog", "whatchanged", "annotate",
                       "branch", "tag", "help", "cherry", "range-diff"})
GIT_LISTS = frozenset({"branch", "tag"})  # they page only when listing
GIT_DELETES = frozenset({"rm", "clean"})


def inspect_git(args: Sequence[str], terminal: bool) -> Effects:
    eff = Effects()
    s = scan(GIT_GRAMMAR, args)
    if s.error:
        eff.opaque.append(f"git: {s.error}")
        return eff
    for opt, val in s.options:
        if opt == "-c" or opt == "--config-env":
            key = (val or "").split("=", 1)[0]
            if not GIT_SAFE_CONFIG.match(key):
                eff.opaque.append(f"git -c {key}: a configuration key that can run commands is not seen through")
        if opt == "--exec-path" and val:
            eff.opaque.append("git --exec-path=DIR runs git programs from that directory")
    if eff.opaque:
        return eff
    if not s.operands:
        return eff
    sub = args[s.operands[0]]
    rest = [args[i] for i in s.operands[1:]]
    if sub not in GIT_SUBCOMMANDS:
        eff.opaque.append(f"git {sub}: not a git command the bastion knows (an alias or an external git-{sub})")
        return eff
    runs = GIT_RUNS.get(sub, ())
    if "*" in runs:
        eff.opaque.append(f"git {sub} runs a command, an editor or a tool, or applies changes it reads")
        return eff
    for a in rest:
        if "*" in runs or any(a == r or a.startswith(r + "=") or (r.startswith("--") and len(a) > 3 and
                                                                    r.startswith(a.split("=")[0]) and
                                                                    a.startswith("--"))
                              or (len(r) == 2 and r[0] == "-" and a.startswith("-") and not a.startswith("--")
                                  and r[1] in a[1:]) for r in runs):
            eff.opaque.append(f"git {sub} {a if '*' not in runs else ''}".rstrip() + " runs a command or an editor")
            return eff
    if sub == "commit" and not any(a in ("-m", "-F", "-C", "--no-edit", "--fixup", "--amend") or
                                   a.startswith(("-m", "--message", "-F", "--file", "--fixup", "-C",
                                                 "--reuse-message")) for a in rest):
        eff.opaque.append("git commit without a message runs an editor")
    if sub == "config" and not _git_config_reads(rest):
        eff.opaque.append("git config writes a key that can run commands")
    if sub in ("merge", "pull", "revert", "cherry-pick", "tag") and terminal and "--no-edit" not in rest and \
            sub != "tag":
        eff.opaque.append(f"git {sub} may start an editor on the terminal")
    listing = sub not in GIT_LISTS or not [a for a in rest if not a.startswith("-")] or \
        any(a in ("-l", "--list", "-a", "--all", "-r", "--remotes", "-v", "-vv") for a in rest)
    if terminal and sub in GIT_PAGES and listing and not s.has("-P", "--no-pager"):
        eff.opaque.append(f"git {sub} pages its output with a terminal attached (a pager runs commands)")
    if sub in GIT_DELETES or (sub == "stash" and any(
            a in ("-u", "--include-untracked", "-a", "--all") or (a.startswith("-") and not a.startswith("--") and
                                                                  set(a[1:]) & {"u", "a"}) for a in rest)) or (
            sub == "reset" and "--hard" in rest):
        eff.also.append("rm")  # they delete files of the work tree (untracked ones, or new ones on reset --hard)
    return eff


GIT_CONFIG_GRAMMAR = Grammar("ef:lz", {
    "global": NONE, "system": NONE, "local": NONE, "worktree": NONE, "file": REQUIRED, "blob": REQUIRED,
    "get": NONE, "get-all": NONE, "get-regexp": NONE, "get-urlmatch": NONE, "replace-all": NONE, "add": NONE,
    "unset": NONE, "unset-all": NONE, "rename-section": NONE, "remove-section": NONE, "list": NONE,
    "fixed-value": NONE, "edit": NONE, "get-color": NONE, "get-colorbool": NONE, "type": REQUIRED, "bool": NONE,
    "int": NONE, "bool-or-int": NONE, "path": NONE, "expiry-date": NONE, "null": NONE, "name-only": NONE,
    "includes": NONE, "no-includes": NONE, "show-origin": NONE, "show-scope": NONE, "default": REQUIRED,
    "comment": REQUIRED, "all": NONE, "regexp": NONE, "value": REQUIRED, "url": REQUIRED})
GIT_CONFIG_READS = frozenset({"--get", "--get-all", "--get-regexp", "--get-urlmatch", "--list", "-l", "--get-color",
                              "--get-colorbool"})


def _git_config_reads(rest: Sequence[str]) -> bool:
    """True when ``git config ARGS`` only reads, or writes a key known not to run anything (read as git does:
    ``git config KEY VALUE get`` writes KEY, ``get`` being a value pattern)."""
    s = scan(GIT_CONFIG_GRAMMAR, rest)
    if s.error or s.has("-e", "--edit", "-f", "--file", "--blob", "--rename-section", "--remove-section"):
        return s.has("-l", "--list") and not s.has("-e", "--edit") and not s.error
    ops = [rest[i] for i in s.operands]
    if any(o in GIT_CONFIG_READS for o, _ in s.options):
        return True
    if ops[:1] in (["get"], ["list"]):  # git >= 2.46 subcommands, only in the first position
        return True
    if ops[:1] == ["set"]:
        ops = ops[1:]
        return bool(ops) and bool(GIT_SAFE_CONFIG.match(ops[0]))
    if ops[:1] in (["unset"], ["rename-section"], ["remove-section"], ["edit"]):
        return False
    if len(ops) <= 1 and not s.has("--unset", "--unset-all", "--add", "--replace-all"):
        return True  # ``git config KEY`` reads it
    return bool(ops) and bool(GIT_SAFE_CONFIG.match(ops[0]))


# ---------------------------------------------------------------------------------------------------------------
# tar, rsync, ssh/scp, zip, and other tools with a command option

TAR_EXEC_LONG = ("checkpoint-action", "to-command", "use-compress-program", "rsh-command", "rmt-command",
                 "info-script", "new-volume-script")
TAR_LONG_ALL = TAR_EXEC_LONG + ("remove-files", "checkpoint", "to-stdout", "totals", "transform", "touch",
                                "mode", "owner", "group", "numeric-owner", "files-from", "file", "index-file")


def _long_hits(arg: str, names: Sequence[str], all_names: Sequence[str] = ()) -> str | None:
    """The option of ``names`` that ``--arg`` spells (exactly or as a GNU abbreviation); None if none."""
    if not arg.startswith("--") or len(arg) < 3:
        return None
    name = arg[2:].split("=", 1)[0]
    exact = [n for n in names if n == name]
    if exact:
        return exact[0]
    if name in all_names:
        return None
    hits = [n for n in names if n.startswith(name)]
    return hits[0] if hits else None


def inspect_tar(args: Sequence[str]) -> Effects:
    eff = Effects()
    for k, a in enumerate(args):
        hit = _long_hits(a, TAR_EXEC_LONG, TAR_LONG_ALL)
        if hit:
            eff.opaque.append(f"tar --{hit} runs a command")
            return eff
        if _long_hits(a, ("remove-files",), TAR_LONG_ALL):
            eff.also.append("rm")
        if a.startswith("-") and not a.startswith("--") and ("I" in a[1:] or "F" in a[1:]):
            eff.opaque.append(f"tar {a}: -I and -F run a program")
            return eff
        if k == 0 and not a.startswith("-") and re.fullmatch(r"[A-Za-z]+", a) and ("I" in a or "F" in a):
            eff.opaque.append(f"tar {a}: -I and -F run a program")
            return eff
    return eff


RSYNC_ARG_SHORT = "BfT@"


def inspect_rsync(args: Sequence[str]) -> Effects:
    eff = Effects()
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        hit = _long_hits(a, ("rsh", "rsync-path", "remote-option", "daemon", "config", "remove-source-files",
                             "remove-sent-files", "delete", "delete-before", "delete-during", "delete-delay",
                             "delete-after", "delete-excluded", "delete-missing-args", "chmod", "chown", "usermap",
                             "groupmap", "copy-as", "write-devices"))
        if hit in ("rsh", "rsync-path"):
            value = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
            eff.lines.append(value)
            eff.steps.append(f"rsync --{hit} runs {value!r}")
            i += 1 if "=" in a else 2
            continue
        if hit in ("remote-option", "daemon", "config", "copy-as", "write-devices"):
            eff.opaque.append(f"rsync --{hit} is not seen through")
            return eff
        if hit in ("remove-source-files", "remove-sent-files") or (hit or "").startswith("delete"):
            eff.also.append("rm")
        if hit in ("chmod",):
            eff.also.append("chmod")
        if hit in ("chown", "usermap", "groupmap"):
            eff.also.append("chown")
        if a.startswith("-") and not a.startswith("--"):
            for j, c in enumerate(a[1:], 1):
                if c in RSYNC_ARG_SHORT:
                    break
                if c in "eM":
                    value = a[j + 1:] or (args[i + 1] if i + 1 < len(args) else "")
                    if c == "M":
                        eff.opaque.append("rsync -M passes options to the remote rsync")
                        return eff
                    eff.lines.append(value)
                    eff.steps.append(f"rsync -e runs {value!r}")
                    if not a[j + 1:]:
                        i += 1
                    break
        i += 1
    return eff


SSH_ARG_SHORT = "BbcDEeFIiJLlmOoPpQRSWw"
SSH_SAFE_OPTIONS = frozenset(o.lower() for o in (
    "BatchMode", "ConnectTimeout", "StrictHostKeyChecking", "UserKnownHostsFile", "Port", "User", "IdentityFile",
    "IdentitiesOnly", "LogLevel", "ServerAliveInterval", "ServerAliveCountMax", "Compression", "HostKeyAlias",
    "PasswordAuthentication", "PubkeyAuthentication", "PreferredAuthentications", "ConnectionAttempts",
    "HostName", "CheckHostIP", "GlobalKnownHostsFile", "NumberOfPasswordPrompts", "KbdInteractiveAuthentication",
    "HashKnownHosts", "VisualHostKey", "UpdateHostKeys", "Ciphers", "MACs", "KexAlgorithms", "HostKeyAlgorithms",
    "TCPKeepAlive", "AddressFamily", "BindAddress", "ExitOnForwardFailure", "RequestTTY", "ForwardAgent",
    "ForwardX11", "ClearAllForwardings", "EscapeChar", "CertificateFile", "PubkeyAcceptedAlgorithms",
    "PubkeyAcceptedKeyTypes", "RekeyLimit", "FingerprintHash", "VerifyHostKeyDNS", "GSSAPIAuthentication",
    "ControlMaster", "ControlPath", "ControlPersist", "SendEnv", "SetEnv", "LocalForward", "RemoteForward",
    "DynamicForward", "ProxyJump", "AddKeysToAgent", "Tunnel", "StreamLocalBindUnlink", "IPQoS",
    "ObscureKeystrokeTiming"))


def _ssh_option(value: str) -> str:
    return re.split(r"[\s=]", value.strip(), maxsplit=1)[0].lower()


def inspect_ssh(prog: str, args: Sequence[str]) -> Effects:
    """ssh/scp/sftp/slogin: options that run a local command, and (ssh) the remote command, judged as a line."""
    eff = Effects()
    short_args = SSH_ARG_SHORT + ("S" if prog == "ssh" else "") + ("D" if prog == "sftp" else "")
    i, host_seen = 0, False
    while i < len(args):
        a = args[i]
        if a == "--" and not host_seen:
            i += 1
            if i < len(args):
                host_seen = True
                i += 1
            break
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                c = a[j]
                if c in short_args:
                    value = a[j + 1:] or (args[i + 1] if i + 1 < len(args) else "")
                    if not a[j + 1:]:
                        i += 1
                    if c == "o" and _ssh_option(value) not in SSH_SAFE_OPTIONS:
                        eff.opaque.append(f"{prog} -o {_ssh_option(value)}: an option that can run a command or "
                                          f"load code is not seen through")
                    elif c == "F":
                        eff.opaque.append(f"{prog} -F: a config file can run commands (ProxyCommand, Match exec)")
                    elif c == "I" or (c == "S" and prog in ("scp", "sftp")) or (c == "D" and prog == "sftp"):
                        eff.opaque.append(f"{prog} -{c} runs or loads a program")
                    elif c == "b" and prog == "sftp":
                        eff.opaque.append("sftp -b runs a batch file (its `!` lines run commands)")
                    break
                if not c.isalnum() and c not in "46":
                    eff.opaque.append(f"{prog}: unknown option -{c}")
                    break
                j += 1
            if eff.opaque:
                return eff
            i += 1
            continue
        if prog != "ssh":
            if re.search(r"[`$;|&()<>]", a) and ":" in a:
                eff.opaque.append(f"{prog}: a remote path with shell syntax runs in the remote shell")
                return eff
            i += 1
            continue
        if not host_seen:
            host_seen = True
            i += 1
            continue
        break
    if prog == "ssh" and i < len(args):
        eff.lines.append(" ".join(args[i:]))
        eff.steps.append(f"ssh: the remote command {' '.join(args[i:])!r} is judged as a command line")
    elif prog in ("ssh", "slogin") and host_seen:
        eff.opaque.append(f"{prog} with no command starts a shell on the remote host")
    if prog == "sftp" and not eff.opaque:
        eff.opaque.append("sftp reads commands (`!` runs a local command)")
    return eff


def inspect_zip(args: Sequence[str]) -> Effects:
    eff = Effects()
    for a in args:
        if a == "-TT" or _long_hits(a, ("unzip-command",)) or (a.startswith("-") and not a.startswith("--") and
                                                              "TT" in a):
            eff.opaque.append("zip -TT/--unzip-command runs a command")
            return eff
        if a in ("-m", "--move") or (a.startswith("-") and not a.startswith("--") and "m" in a[1:]):
            eff.also.append("rm")
    return eff


def inspect_find(args: Sequence[str]) -> Effects:
    """find's -exec/-execdir/-ok/-okdir run a command: each is judged (with ``{}`` standing for file names)."""
    eff = Effects()
    i, n = 0, len(args)
    while i < n:
        a = args[i]
        if a in ("-exec", "-execdir", "-ok", "-okdir"):
            j = i + 1
            while j < n and args[j] != ";" and not (args[j] == "+" and args[j - 1] == "{}"):
                j += 1  # like find: ';' ends the command, '+' only right after '{}'
            if j >= n:
                eff.opaque.append(f"find {a} without a terminating ';' or '+'")
                return eff
            if j == i + 1:
                eff.opaque.append(f"find {a} without a command")
                return eff
            eff.argvs.append((i + 1, j))
            eff.replace = "{}"
            eff.steps.append(f"find {a} runs {' '.join(args[i + 1:j])!r}")
            i = j + 1
            continue
        if a in ("-fprint", "-fprint0", "-fprintf", "-fls"):
            eff.steps.append(f"find {a} writes a file")
        if a in ("-D",) and i + 1 < n:
            i += 2
            continue
        i += 1
    return eff


COMPILERS = re.compile(r"^((x86_64|aarch64|i686|arm)[-\w]*-)?(gcc|g\+\+|cc|c\+\+|cpp|clang|clang\+\+)(-[\d.]+)?$")
COMPILER_RUNS = ("-wrapper", "-fplugin", "-B", "-specs", "--specs", "-fdump-", "-Xclang", "-load", "@")
ROFF = frozenset({"groff", "troff", "nroff", "grog", "gtroff", "eqn", "pic", "tbl", "soelim", "grap", "refer"})
OPAQUE_TOOLS = {
    "socat": "socat addresses run commands (EXEC:, SYSTEM:) and change files (unlink-late, perm-late)",
    "patch": "patch applies a patch it reads (files deleted, modes changed) that the bastion does not see",
    "savelog": "savelog rotates (moves, deletes, chmods) files",
    "systemd-tmpfiles": "systemd-tmpfiles creates, deletes and chmods what its configuration says",
    "msgexec": "msgexec runs a command", "msgfilter": "msgfilter runs a command",
    "memusage": "memusage runs a program", "heaptrack": "heaptrack runs a program", "sotruss": "sotruss runs a "
    "program", "choom": "choom runs a program", "scriptlive": "scriptlive runs a shell",
    "scriptreplay": "scriptreplay", "dpkg-architecture": "dpkg-architecture -c runs a command",
    "run_erl": "run_erl runs a command", "make-first-existing-target": "make-first-existing-target runs make",
    "ctest": "ctest runs scripts", "rename": "rename runs Perl "
    "code (and renames files)", "prename": "prename runs Perl code", "file-rename": "file-rename runs Perl code",
    "run-mailcap": "run-mailcap runs commands", "xdg-open": "xdg-open runs a program",
}
SYSTEMCTL_PAGES = frozenset({"status", "show", "cat", "help", "list-units", "list-unit-files", "list-sockets",
                             "list-timers", "list-jobs", "list-dependencies", "list-machines", "show-environment"})


def _copies_mode(prog: str, args: Sequence[str]) -> bool:
    """cp -p/-a, rsync -p/-a/-E and install (0755 unless -m) set the mode of an existing destination."""
    if prog == "install":
        return not any(a in ("-d", "--directory") for a in args)
    shorts = "pa" if prog == "cp" else "paE" if prog == "rsync" else ""
    longs = ("--preserve", "--archive", "--perms", "--executability", "--attributes-only")
    return bool(shorts) and any(
        a.startswith(longs) and not a.startswith("--preserve=") or re.match(r"--preserve=.*(mode|all)", a) or
        (a.startswith("-") and not a.startswith("--") and set(a[1:]) & set(shorts)) for a in args)


def inspect_other(prog: str, args: Sequence[str], args_open: bool = False) -> Effects:
    """Tools with one option that runs a command."""
    eff = Effects()
    checks: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
        # program: (long options that run a command (GNU abbreviations too), short options that do)
        "sort": (("compress-program",), ()),
        "split": (("filter",), ()),
        "tcpdump": ((), ("-z",)),
        "diff": (("diff-program",), ()),
        "sdiff": (("diff-program",), ()),
        "dpkg": (("pre-invoke", "post-invoke", "status-logger", "command-fd"), ()),
        "apt": ((), ("-o",)),
        "apt-get": ((), ("-o",)),
        "man": (("pager", "html", "browser", "preprocessor"), ("-P", "-H", "-p")),
        "less": ((), ("+",)),
        "more": ((), ("+",)),
        "gpg": (("exec-path", "photo-viewer"), ()),
        "wget": (("use-askpass", "execute"), ("-e",)),
        "nmap": (("script",), ()),
        "ssh-keygen": ((), ("-D",)),
        "cpio": (("rsh-command",), ()),
        "nc": (("exec", "sh-exec", "lua-exec"), ("-e", "-c")),
        "ncat": (("exec", "sh-exec", "lua-exec"), ("-e", "-c")),
        "netcat": (("exec", "sh-exec", "lua-exec"), ("-e", "-c")),
    }
    if prog in OPAQUE_TOOLS and not (args and all(a in INFO_ONLY for a in args)):
        eff.opaque.append(OPAQUE_TOOLS[prog])
        return eff
    if COMPILERS.match(prog) and any(a.startswith(COMPILER_RUNS) for a in args):
        eff.opaque.append(f"{prog} runs or loads a program given in its options (-wrapper, -fplugin, -B, specs)")
        return eff
    if prog in ROFF and any(a == "-U" or (a.startswith("-") and not a.startswith("--") and "U" in a[1:])
                            for a in args):
        eff.opaque.append(f"{prog} -U (unsafe mode) runs commands from the document")
        return eff
    if prog == "kubectl" and any(a.startswith(("--kubeconfig", "--exec", "--token", "--server")) or
                                 a in ("-s",) for a in args):
        eff.opaque.append("kubectl with another kubeconfig can run its credential plugin")
        return eff
    if prog == "ln":
        for a in args:
            if not a.startswith("-") and SENSITIVE_FILE.search(a):
                eff.opaque.append(f"ln links {a}: a file that programs read as configuration or run")
                return eff
        if any(a in ("-f", "--force") or (a.startswith("-") and not a.startswith("--") and "f" in a[1:])
               for a in args):
            eff.also.append("rm")  # ln -f replaces (removes) the destination
    if prog in ("tar", "gtar", "bsdtar"):
        extract = any(a.startswith(("--extract", "--get")) or (not a.startswith("--") and "x" in a.lstrip("-")
                                                                 and re.fullmatch(r"-?[A-Za-z]+", a) is not None)
                      for a in args[:1]) or any(a in ("-x", "--extract", "--get") for a in args)
        if extract and any(a in ("-p", "--preserve-permissions", "--same-permissions", "--preserve") or
                           (re.fullmatch(r"-?[A-Za-z]+", a) and "p" in a.lstrip("-") and not a.startswith("--"))
                           for a in args):
            eff.also.append("chmod")
    longs, shorts = checks.get(prog, ((), ()))
    for a in args:
        hit = _long_hits(a, longs) if longs else None
        if hit:
            eff.opaque.append(f"{prog} --{hit} runs a command")
            return eff
        if any(a.startswith(s) if s == "+" else (a.startswith("-") and not a.startswith("--") and s[1] in a[1:])
               for s in shorts):
            eff.opaque.append(f"{prog} {a[:2]} runs a command or reads configuration that can")
            return eff
    if prog in PACKAGE_TOOLS:
        sub = next((a for a in args if not a.startswith("-")), None)
        if not (all(a in INFO_ONLY for a in args) and args) and sub not in PACKAGE_TOOLS[prog]:
            eff.opaque.append(f"{prog} {sub or ''}".rstrip() + " runs package scripts or code")
            return eff
    if prog == "dpkg" and any(a in ("-i", "--install", "--unpack", "--configure", "-x", "--extract") or
                              a.startswith(("--install", "--configure")) for a in args):
        eff.opaque.append("dpkg --install runs the package's maintainer scripts")
        return eff
    if prog in COPIERS:
        for a in args:
            src = a.split("=", 1)[1] if prog == "dd" and a.startswith("if=") else a
            if SYSTEM_PROGRAM.match(posixpath.normpath(src)) and not src.endswith("/"):
                eff.also.append(posixpath.basename(src))  # a copy of rm under another name is rm
        operands = [a for a in args if not a.startswith("-")]
        targets = {"dd": [a.split("=", 1)[1] for a in args if a.startswith("of=")], "tee": operands,
                   "cat": []}.get(prog, operands[-1:])
        targets += [v for k, v in zip(args, args[1:], strict=False) if k in ("-t", "--target-directory")]
        targets += [a.split("=", 1)[1] for a in args if a.startswith("--target-directory=")]
        for a in targets:
            if SENSITIVE_FILE.search(a):
                eff.opaque.append(f"{prog} writes {a}: a file that programs read as configuration or run")
                return eff
    if _copies_mode(prog, args):
        eff.also.append("chmod")  # the destination gets the source's mode (or install's 0755)
    keeps = any(a in KEEP_FLAGS or (a.startswith("-") and not a.startswith("--") and set(a[1:]) & set("kctl"))
                for a in args)
    files = [a for a in args if not a.startswith("-")]
    if prog in COMPRESSORS and (files or args_open) and not keeps and (prog not in ("zstd", "lz4") or "--rm" in args):
        eff.also.append("rm")  # gzip F replaces F by F.gz: the original is deleted
    if prog in DELETERS:
        eff.also.append("rm")
    if prog in ("install", "mkdir", "mkfifo", "mknod") and any(
            a in ("-m", "--mode") or a.startswith(("--mode=", "-m")) or (
                prog == "install" and a.startswith("-") and not a.startswith("--") and "m" in a[1:])
            for a in args):
        eff.also.append("chmod")
    if prog == "install" and any(a in ("-o", "-g", "--owner", "--group") or a.startswith(("--owner=", "--group="))
                                 for a in args):
        eff.also.append("chown")
    if prog in ("setfacl", "chacl"):
        eff.also.append("chmod")
    return eff


INSPECTED = frozenset({"awk", "gawk", "mawk", "nawk", "busybox-awk", "sed", "gsed", "git", "tar", "gtar", "bsdtar",
                       "rsync", "ssh", "scp", "sftp", "slogin", "zip", "zipnote", "zipsplit", "find", "sort", "split",
                       "tcpdump", "diff", "sdiff", "dpkg", "apt", "apt-get", "man", "less", "more", "gpg", "wget",
                       "nmap", "ssh-keygen", "cpio", "nc", "ncat", "netcat", "socat", "install", "mkdir"})


def runs_commands(prog: str) -> bool:
    """Whether some arguments of ``prog`` make it run a command or code: then arguments it gets from its input
    (``xargs prog``) could be exactly those."""
    fam = base_name(prog)
    return fam in INTERPRETERS or prog in INTERPRETERS or prog in INSPECTED or prog in RUNNERS or \
        prog in EDITORS or prog in PAGERS or bool(EDITOR_NAME.match(prog)) or bool(COMPILERS.match(prog)) or \
        prog in PACKAGE_TOOLS or prog in OPAQUE_TOOLS or prog in ROFF


def inspect(prog: str, args: Sequence[str], *, terminal: bool, interactive: bool, args_open: bool = False) -> Effects:
    """What ``prog args...`` runs besides itself (``prog`` is the base name, wrappers already removed)."""
    fam = base_name(prog)
    if LOADER.match(prog):
        return Effects(opaque=[f"{prog} is the dynamic loader: it runs the program given to it"])
    if fam in INTERPRETERS or prog in INTERPRETERS:
        eff = Effects()
        if fam in ("awk", "gawk", "mawk", "nawk"):
            return inspect_awk(args)
        if args and all(a in INFO_ONLY or (a == "-v" and fam in VERSION_V) for a in args):
            return eff
        if not args:
            what = "starts a shell" if fam in SHELLS else "reads code or commands from its input"
        elif fam in SHELLS:
            what = "runs a shell: code from a string, a file or its input"
        else:
            what = "runs code (from a string, a file or its input)"
        eff.opaque.append(f"{prog} {what}")
        return eff
    if fam in ("awk", "gawk", "mawk", "nawk", "busybox-awk"):
        return inspect_awk(args)
    if prog in RUNNERS and not (args and all(a in INFO_ONLY for a in args)) and \
            tuple(args) not in RUNNER_LISTS.get(prog, ()):
        return Effects(opaque=[RUNNERS[prog]])
    if prog in ("sed", "gsed"):
        return inspect_sed(args)
    if prog == "git":
        return inspect_git(args, terminal and not interactive)
    if prog in ("tar", "gtar", "bsdtar"):
        eff = inspect_tar(args)
        eff.also += inspect_other(prog, args, args_open).also
        return eff
    if prog == "rsync":
        eff = inspect_rsync(args)
        operands = [a for a in args if not a.startswith("-")]
        if _copies_mode(prog, args) and not (operands and ":" in operands[-1]):  # a local destination
            eff.also.append("chmod")
        return eff
    if prog in ("ssh", "scp", "sftp", "slogin"):
        return inspect_ssh(prog, args)
    if prog in ("zip", "zipnote", "zipsplit"):
        return inspect_zip(args)
    if prog == "find":
        return inspect_find(args)
    editor = prog in EDITORS or bool(EDITOR_NAME.match(prog))
    if editor and args and all(a in INFO_ONLY for a in args):
        return Effects()
    if not interactive and editor:
        eff = Effects()
        eff.opaque.append(f"{prog} is an editor: it reads commands (`:!cmd`) from the operator")
        return eff
    if editor and any(a.startswith("+") or a in ("-c", "--cmd", "-S", "-s", "-u", "-e", "-es", "-E",
                                                          "-Es", "-x", "--eval", "-l", "--load", "--script", "-f",
                                                          "--funcall", "-batch", "--batch")
                               or a.startswith(("-c", "--cmd", "--eval", "-es")) for a in args):
        eff = Effects()
        eff.opaque.append(f"{prog} runs commands given on its command line")
        return eff
    if terminal and not interactive and prog in PAGERS and "--no-pager" not in args and not (
            prog == "systemctl" and not set(args) & SYSTEMCTL_PAGES):
        eff = Effects()
        eff.opaque.append(f"{prog} with a terminal reads keys from the operator (`!cmd` runs a command)")
        return eff
    return inspect_other(prog, args, args_open)
