"""`podseg map` seen through a real browser: the HTML page loaded in headless Chromium holds
every endpoint and every edge of the flow graph (read back from the DOM Chromium built), and
the PNG it renders shows the three verdict colours at the map's size."""

from __future__ import annotations

import collections
import html.parser
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from agent.flows import draw, layout
from tests.support import flowgraphs as fg
from tests.support import png

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="needs Chromium (Debian package `chromium`; scripts/setup.sh)"
)


class _Groups(html.parser.HTMLParser):
    """The `<g>` elements of the rendered DOM with their data- attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "g":
            self.groups.append({k: v or "" for k, v in attrs})


def _dom(page: pathlib.Path) -> str:
    assert BROWSER is not None
    with tempfile.TemporaryDirectory(prefix="psg-chromium-") as profile:
        done = subprocess.run(
            [
                BROWSER,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={profile}",
                "--dump-dom",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_page_in_chromium_shows_every_endpoint_and_edge(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "map.html"
    done = fg.podseg("map", "--flows", str(fg.SHOP), "-o", str(page))
    assert done.returncode == 0, done.stderr
    parser = _Groups()
    parser.feed(_dom(page))
    doc = fg.shop()
    ends = {layout.node_id(e) for f in doc.flows for e in (f.key.src, f.key.dst)}
    nodes = {g["data-node"] for g in parser.groups if g.get("class") == "node"}
    assert nodes == ends
    edges = {
        (g["data-src"], g["data-dst"], g["data-verdict"])
        for g in parser.groups
        if g.get("class") == "edge"
    }
    assert edges == {
        (layout.node_id(f.key.src), layout.node_id(f.key.dst), f.key.verdict) for f in doc.flows
    }
    ports = {
        (g["data-src"], g["data-dst"]): g["data-ports"]
        for g in parser.groups
        if g.get("class") == "edge"
    }
    assert ports[("shop/cart", "shop/db")] == "TCP 5432"
    assert {g["data-namespace"] for g in parser.groups if g.get("class") == "namespace"} == {
        "shop",
        "monitoring",
        "kube-system",
    }


def _near(pixel: tuple[int, int, int], colour: str) -> bool:
    want = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return all(abs(a - b) <= 12 for a, b in zip(pixel, want, strict=True))


def test_the_png_shows_the_map(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "map.png"
    done = fg.podseg("map", "--flows", str(fg.SHOP), "-o", str(out))
    assert done.returncode == 0, done.stderr
    width, height, pixels = png.read(out.read_bytes())
    lay = layout.layout(fg.shop())
    assert (width, height) in {
        (int(max(lay.width, 560)) + d, int(lay.height + draw.LEGEND_H) + e)
        for d in (0, 1)
        for e in (0, 1)
    }
    counts = collections.Counter(
        verdict
        for pixel in pixels
        for verdict, colour in draw.COLOURS.items()
        if _near(pixel, colour)
    )
    assert all(counts[v] > 50 for v in draw.COLOURS), counts
    white = sum(1 for p in pixels if p == (255, 255, 255))
    assert 0.5 < white / len(pixels) < 0.99
