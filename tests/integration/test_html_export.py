"""`bastion replay --html`: one offline file that plays in headless Chromium (driven over the DevTools protocol),
makes no network request, lists the markers and jumps to them, and stays inert with hostile recorded content."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.html import export_html
from tests.support.chromium import Chromium, find_chromium

TERM = 'document.querySelector(".ap-term-text") ? document.querySelector(".ap-term-text").innerText : ""'


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    binary = find_chromium()
    if binary is None:
        pytest.fail("chromium is needed (scripts/setup --test installs it)")
    c = Chromium(binary)
    try:
        yield c
    finally:
        c.close()


def write_cast(path: Path, events: list[list[object]], width: int = 60, height: int = 8) -> Path:
    header = {"version": 2, "width": width, "height": height, "timestamp": 0, "env": {}, "title": "t"}
    path.write_text("\n".join(json.dumps(x) for x in [header, *events]) + "\n")
    return path


def test_export_plays_offline_and_jumps_to_markers(tmp_path: Path, chromium: Chromium) -> None:
    cast = write_cast(tmp_path / "s.cast", [
        [0.1, "o", "$ rm -rf /srv\r\n"], [0.2, "m", "policy: block by rule 'no-rm': rm -rf /srv"],
        [0.5, "o", "\x1b[31mblocked\x1b[0m\r\n"], [1.0, "m", "approval #7: approved (by bob)"],
        [1.5, "o", "LAST-WORD-ON-SCREEN\r\n"]])
    page = export_html(cast, tmp_path / "s.html", title="Session X", info={"user": "alice"}, autoplay=True,
                       speed=2)
    chromium.open(page.as_uri())
    assert chromium.wait_for('document.body && document.body.dataset.state === "ended"')
    screen = chromium.wait_for(f'({TERM}).includes("LAST-WORD-ON-SCREEN") && {TERM}')
    assert "blocked" in screen and "$ rm -rf /srv" in screen  # played, rendered by the player
    assert set(chromium.requests) == {page.as_uri()}  # nothing but the file itself
    labels = chromium.eval('Array.from(document.querySelectorAll("#decisions button")).map(b => b.innerText)')
    assert labels == ["0:00policy: block by rule 'no-rm': rm -rf /srv", "0:01approval #7: approved (by bob)"]
    chromium.eval('document.querySelectorAll("#decisions button")[1].click()')
    t = chromium.wait_for("window.bastionPlayer.getCurrentTime()")
    assert 0.9 <= t <= 1.1  # jumped to the approval marker
    assert "alice" in chromium.eval('document.querySelector("table.info").innerText')


def test_hostile_recording_stays_text(tmp_path: Path, chromium: Chromium) -> None:
    evil = '</script><script>document.title="pwned"</script><img src=x onerror=alert(1)>'
    cast = write_cast(tmp_path / "e.cast", [[0.1, "o", evil + "\r\nEND\r\n"], [0.2, "m", evil]])
    page = export_html(cast, tmp_path / "e.html", title=evil, info={"note": evil}, autoplay=True)
    chromium.open(page.as_uri())
    assert chromium.wait_for(f'({TERM}).includes("END")')
    assert chromium.eval("document.title") != "pwned" and chromium.eval('document.querySelectorAll("img").length') == 0
    assert chromium.eval('document.querySelectorAll("script").length') == 3  # cast data, the player, the glue
    assert evil in chromium.eval('document.querySelector("#decisions button").innerText')
    assert set(chromium.requests) == {page.as_uri()}
