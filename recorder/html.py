"""One standalone, offline HTML file that plays a recording: asciinema-player (npm, pinned by
``recorder/web/package-lock.json``, installed by ``scripts/setup``) and the cast inlined, the policy markers listed
beside the player (click to jump), and what the caller says about the session. A Content-Security-Policy forbids
every network request, so the file behaves the same on an air-gapped laptop.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from recorder.asciicast import iter_events, read_header

__all__ = ["PlayerAssetsMissing", "export_html", "player_assets"]

WEB = Path(__file__).resolve().parent / "web"
BUNDLE = Path("node_modules/asciinema-player/dist/bundle")


class PlayerAssetsMissing(RuntimeError):
    """asciinema-player is not installed where the exporter looks for it."""


def player_assets() -> tuple[str, str]:
    """(JavaScript, CSS) of asciinema-player: from ``$BASTION_PLAYER_DIR`` or ``recorder/web/node_modules``."""
    base = Path(os.environ["BASTION_PLAYER_DIR"]) if os.environ.get("BASTION_PLAYER_DIR") else WEB / BUNDLE
    try:
        return ((base / "asciinema-player.min.js").read_text(encoding="utf-8"),
                (base / "asciinema-player.css").read_text(encoding="utf-8"))
    except OSError as e:
        raise PlayerAssetsMissing(f"asciinema-player is not installed ({e.filename}): run scripts/setup, or "
                                  f"npm ci --prefix {WEB}") from None


def _script_json(obj: object) -> str:
    """JSON that is safe inside a <script> element (no ``</script>``, no ``<!--``)."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _clock(t: float) -> str:
    t = int(t)
    return f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}" if t >= 3600 else f"{t // 60}:{t % 60:02d}"


CSP = ("default-src 'none'; script-src 'unsafe-inline' 'wasm-unsafe-eval'; style-src 'unsafe-inline'; img-src data:; "
       "font-src data:; worker-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>{player_css}</style>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.2em; margin: 0 0 .5em; }}
table.info {{ border-collapse: collapse; margin-bottom: 1em; font-size: .9em; }}
table.info th {{ text-align: left; padding: .1em 1em .1em 0; color: #555; font-weight: normal; }}
table.info td {{ font-family: ui-monospace, monospace; word-break: break-all; }}
.layout {{ display: flex; gap: 1.5em; align-items: flex-start; }}
#player {{ flex: 1 1 auto; min-width: 0; }}
#decisions {{ flex: 0 0 26em; max-height: 80vh; overflow-y: auto; font-size: .85em; }}
#decisions button {{ display: block; width: 100%; text-align: left; border: 0; border-bottom: 1px solid #ddd;
  background: none; padding: .35em .2em; cursor: pointer; font: inherit; }}
#decisions button:hover {{ background: #f2f2f2; }}
#decisions .t {{ font-family: ui-monospace, monospace; color: #666; margin-right: .6em; }}
.block {{ color: #a40000; }} .approval {{ color: #8a5a00; }}
</style>
</head>
<body data-state="loading">
<h1>{title}</h1>
<table class="info">{info_rows}</table>
<div class="layout">
<div id="player"></div>
<div id="decisions"><strong>Markers: policy decisions and approvals</strong>{marker_rows}</div>
</div>
<script type="application/json" id="cast">{cast_json}</script>
<script>{player_js}</script>
<script>
(function () {{
  var cast = JSON.parse(document.getElementById("cast").textContent);
  var player = AsciinemaPlayer.create({{data: cast}}, document.getElementById("player"), {opts});
  window.bastionPlayer = player;
  player.addEventListener("play", function () {{ document.body.dataset.state = "playing"; }});
  player.addEventListener("ended", function () {{ document.body.dataset.state = "ended"; }});
  var buttons = document.querySelectorAll("#decisions button");
  for (var i = 0; i < buttons.length; i++) {{
    buttons[i].addEventListener("click", function (e) {{
      player.seek(parseFloat(e.currentTarget.dataset.t));
    }});
  }}
}})();
</script>
</body>
</html>
"""


def _marker_class(label: str) -> str:
    low = label.lower()
    if "block" in low or "denied" in low or "refused" in low:
        return "block"
    if "approval" in low:
        return "approval"
    return ""


def export_html(cast: Path | str, out: Path | str, *, title: str | None = None,
                info: Mapping[str, str] | None = None, speed: float = 1.0, autoplay: bool = False,
                extra_markers: Sequence[tuple[float, str]] = ()) -> Path:
    """Write the standalone player page for ``cast`` to ``out``; returns ``out``. ``extra_markers``: moments kept
    beside the recording (auditors' bookmarks), listed with its own markers in time order."""
    cast = Path(cast)
    header = read_header(cast)  # a bad file fails here
    js, css = player_assets()
    text = cast.read_text(encoding="utf-8", errors="replace")
    markers = sorted([*((ev.time, ev.data) for ev in iter_events(cast) if ev.code == "m"), *extra_markers],
                     key=lambda m: m[0])
    title = title or header.get("title") or cast.name
    info_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                        for k, v in (info or {}).items())
    marker_rows = "".join(
        f'<button data-t="{t:.3f}" class="{_marker_class(label)}"><span class="t">{_clock(t)}</span>'
        f"{html.escape(label)}</button>" for t, label in markers) or "<p>none</p>"
    opts = {"cols": header["width"], "rows": header["height"], "speed": speed, "autoPlay": autoplay,
            "preload": True, "fit": "width", "idleTimeLimit": 5, "terminalFontFamily": "ui-monospace, monospace"}
    page = PAGE.format(csp=CSP, title=html.escape(str(title)), player_css=css.replace("</style", "<\\/style"),
                       info_rows=info_rows, marker_rows=marker_rows, cast_json=_script_json(text),
                       player_js=js.replace("</script", "<\\/script"), opts=_script_json(opts))
    out = Path(out)
    out.write_text(page, encoding="utf-8")
    return out
