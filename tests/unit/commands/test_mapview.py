"""`podseg map` as a user runs it: the SVG and the HTML page written, the namespace filter,
and one line with exit 2 for an unknown namespace, a bad file name, or a PNG without
Chromium."""

from __future__ import annotations

import os
import pathlib
import xml.etree.ElementTree as ET

from tests.support import flowgraphs as fg

SVG = "{http://www.w3.org/2000/svg}"
FLOWS = str(fg.SHOP)


def _nodes(svg_text: str) -> set[str]:
    root = ET.fromstring(svg_text)
    return {g.get("data-node") or "" for g in root.iter(f"{SVG}g") if g.get("class") == "node"}


def test_svg_and_html(tmp_path: pathlib.Path) -> None:
    svg, page = tmp_path / "map.svg", tmp_path / "map.html"
    done = fg.podseg("map", "--flows", FLOWS, "-o", str(svg))
    assert done.returncode == 0, done.stderr
    assert "11 endpoints, 16 edges" in done.stderr
    assert "shop/db" in _nodes(svg.read_text())
    done = fg.podseg("map", "--flows", FLOWS, "-o", str(page), "-n", "monitoring")
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "podseg map: namespace monitoring" in text
    svg_part = text[text.index("<svg") : text.index("</svg>") + len("</svg>")]
    assert "shop/db" not in _nodes(svg_part)
    assert "monitoring/prometheus" in _nodes(svg_part)


def test_unknown_namespace_and_bad_output_name(tmp_path: pathlib.Path) -> None:
    done = fg.podseg("map", "--flows", FLOWS, "-n", "nope", "-o", str(tmp_path / "m.svg"))
    assert "no namespace 'nope'" in fg.one_line_error(done, "map")
    done = fg.podseg("map", "--flows", FLOWS, "-o", str(tmp_path / "m.pdf"))
    assert ".html, .svg or .png" in fg.one_line_error(done, "map")
    assert not (tmp_path / "m.svg").exists()


def test_png_without_chromium_is_one_line(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty))
    done = fg.podseg("map", "--flows", FLOWS, "-o", str(tmp_path / "m.png"), env=env)
    assert "needs Chromium" in fg.one_line_error(done, "map")
    assert not (tmp_path / "m.png").exists()
