"""Keyframes for fast seeking: built once when a recording closes (``build`` + ``save``, into ``FILE.cast.idx``),
each one the screen at a moment (as ANSI text that repaints it) and the byte offset of the next event. Seeking to
any time paints the keyframe before it and writes at most one keyframe interval of output on top.

Also holds the markers and the duration, so a player can list and jump to policy decisions without a full read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recorder.asciicast import CastError, Event, parse_line, read_header

__all__ = ["Keyframe", "SeekIndex", "build", "events_from", "load", "load_or_build", "save", "sidecar"]

VERSION = 1
KEYFRAME_BYTES = 256 * 1024
"""Output between keyframes: a seek writes at most about this much to the terminal."""
KEYFRAME_SECONDS = 120.0


@dataclass
class Keyframe:
    t: float
    offset: int  # byte offset of the first event after this keyframe
    screen: str  # ANSI text that clears the terminal and paints this screen
    width: int
    height: int


@dataclass
class SeekIndex:
    size: int  # of the cast file when indexed (a different size: stale)
    width: int
    height: int
    duration: float
    data_offset: int  # byte offset of the first event
    markers: list[tuple[float, str]] = field(default_factory=list)
    keyframes: list[Keyframe] = field(default_factory=list)

    def keyframe_before(self, t: float) -> Keyframe | None:
        best = None
        for k in self.keyframes:
            if k.t > t:
                break
            best = k
        return best


def sidecar(cast: Path | str) -> Path:
    return Path(str(cast) + ".idx")


def events_from(path: Path | str, offset: int) -> Iterator[tuple[int, Event]]:
    """Events from byte ``offset`` on, each with the offset just after its line; bad lines are skipped."""
    with open(path, "rb") as f:
        f.seek(offset)
        pos = offset
        for raw in f:
            pos += len(raw)
            try:
                evs = parse_line(raw.decode("utf-8", "replace"))
            except ValueError:
                continue
            for ev in evs:
                yield pos, ev


def complete_events(path: Path | str, offset: int, max_bytes: int = 1 << 20) -> tuple[int, list[Event]]:
    """For a recording still being written: the events of the complete lines from ``offset`` on (at most about
    ``max_bytes``; a partial last line waits for its newline), and the offset just after them."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(max_bytes)
        while b"\n" not in data and len(data) >= max_bytes:  # one event longer than the window
            more = f.read(max_bytes)
            if not more:
                break
            data += more
    end = data.rfind(b"\n") + 1
    events = []
    for raw in data[:end].splitlines():
        try:
            events += parse_line(raw.decode("utf-8", "replace"))
        except ValueError:
            continue
    return offset + end, events


# -- screens as ANSI -------------------------------------------------------------------------------------------
def _color_codes() -> tuple[dict[str, int], dict[str, int]]:
    from pyte import graphics as g

    fg = {name: code for code, name in g.FG_ANSI.items()}
    bg = {name: code for code, name in g.BG_ANSI.items()}
    fg.update({name: code for code, name in g.FG_AIXTERM.items()})
    bg.update({name: code for code, name in g.BG_AIXTERM.items()})
    return fg, bg


_FG: dict[str, int] = {}  # filled on first use (pyte is imported lazily)
_BG: dict[str, int] = {}


def _sgr(ch: Any) -> str:
    codes = ["0"]
    for attr, code in (("bold", "1"), ("italics", "3"), ("underscore", "4"), ("blink", "5"), ("reverse", "7"),
                       ("strikethrough", "9")):
        if getattr(ch, attr):
            codes.append(code)
    for value, table, base in ((ch.fg, _FG, "38"), (ch.bg, _BG, "48")):
        if value == "default":
            continue
        if value in table:
            codes.append(str(table[value]))
        elif len(value) == 6:
            try:
                r, g, b = int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
            except ValueError:
                continue
            codes.append(f"{base};2;{r};{g};{b}")
    return "\x1b[" + ";".join(codes) + "m"


def paint(screen: Any) -> str:
    """ANSI text that clears a terminal and paints ``screen`` (a pyte Screen), cursor included."""
    if not _FG:
        fg, bg = _color_codes()
        _FG.update(fg)
        _BG.update(bg)
    out = ["\x1b[0m\x1b[H\x1b[2J"]
    for y in range(screen.lines):
        row = screen.buffer[y]
        xs = [x for x in row if row[x].data != " " or row[x].bg != "default" or row[x].reverse]
        if not xs:
            continue
        out.append(f"\x1b[{y + 1};1H")
        last = ""
        for x in range(max(xs) + 1):
            ch = row[x]
            sgr = _sgr(ch)
            if sgr != last:
                out.append(sgr)
                last = sgr
            out.append(ch.data or " ")
        out.append("\x1b[0m")
    out.append(f"\x1b[{screen.cursor.y + 1};{screen.cursor.x + 1}H")
    if screen.cursor.hidden:
        out.append("\x1b[?25l")
    return "".join(out)


# -- building, saving, loading ---------------------------------------------------------------------------------
def build(path: Path | str, *, every_bytes: int = KEYFRAME_BYTES, every_seconds: float = KEYFRAME_SECONDS) -> SeekIndex:
    """Read the whole cast once through a terminal emulator, taking keyframes as it goes."""
    import pyte

    path = Path(path)
    header = read_header(path)
    with open(path, "rb") as f:
        data_offset = len(f.readline())
    width, height = header["width"], header["height"]
    screen = pyte.Screen(width, height)
    stream = pyte.Stream(screen)
    idx = SeekIndex(size=path.stat().st_size, width=width, height=height, duration=0.0, data_offset=data_offset)
    since_bytes, since_t = 0, 0.0
    for pos, ev in events_from(path, data_offset):
        idx.duration = max(idx.duration, ev.time)
        if ev.code == "o":
            stream.feed(ev.data)
            since_bytes += len(ev.data)
        elif ev.code == "r":
            cols, _, rows = ev.data.partition("x")
            if cols.isdigit() and rows.isdigit() and 0 < int(cols) <= 1000 and 0 < int(rows) <= 1000:
                screen.resize(int(rows), int(cols))
        elif ev.code == "m":
            idx.markers.append((ev.time, ev.data))
        if since_bytes >= every_bytes or (since_bytes and ev.time - since_t >= every_seconds):
            idx.keyframes.append(Keyframe(ev.time, pos, paint(screen), screen.columns, screen.lines))
            since_bytes, since_t = 0, ev.time
    return idx


def save(idx: SeekIndex, cast: Path | str) -> Path:
    """Write the sidecar atomically (a half-written index is never read)."""
    dest = sidecar(cast)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"version": VERSION, **asdict(idx)}, f, separators=(",", ":"))
    os.replace(tmp, dest)
    return dest


def load(cast: Path | str) -> SeekIndex | None:
    """The sidecar index of ``cast`` if it exists and matches the file; None otherwise."""
    try:
        raw = json.loads(sidecar(cast).read_text(encoding="utf-8"))
        if raw.get("version") != VERSION or raw.get("size") != Path(cast).stat().st_size:
            return None
        raw.pop("version")
        raw["markers"] = [(float(t), str(label)) for t, label in raw["markers"]]
        raw["keyframes"] = [Keyframe(**k) for k in raw["keyframes"]]
        return SeekIndex(**raw)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def load_or_build(cast: Path | str) -> SeekIndex:
    """The sidecar if valid, else an index built now (and saved next to the cast when that directory allows)."""
    idx = load(cast)
    if idx is not None:
        return idx
    try:
        idx = build(cast)
    except OSError as e:
        raise CastError(f"{cast}: cannot read: {e.strerror or e}") from e
    try:
        save(idx, cast)
    except OSError:
        pass
    return idx
