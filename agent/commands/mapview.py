"""`podseg map [-n NAMESPACE] [--flows FILE] -o FILE.html|.svg|.png`: a picture of the workload
graph (namespaces as boxes, workloads and external networks as nodes, edges coloured by
verdict with their ports, a legend).

The layout and the SVG are pure (`agent.flows.layout`, `agent.flows.draw`); this module writes
the file. A PNG is the HTML page rendered by headless Chromium in a subprocess with a timeout;
without Chromium, one line and exit 2.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile

from agent.commands import flowsource
from agent.flows import draw, graph, layout

FORMATS = (".html", ".svg", ".png")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
RENDER_TIMEOUT = 90.0


class MapError(Exception):
    """The map cannot be written (one line for the user)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="only this namespace's workloads and peers")
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="map.html, map.svg or map.png"
    )
    flowsource.add_arguments(parser)


def known_namespaces(graph_doc: graph.FlowGraph) -> list[str]:
    return sorted(set(graph_doc.namespaces) | {w.namespace for w in graph_doc.workloads})


def chromium() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise MapError("a PNG needs Chromium (Debian package `chromium`); write .html or .svg instead")


def render_png(svg_text: str, width: float, height: float, out: pathlib.Path) -> None:
    """Screenshot `svg_text` at its size with headless Chromium."""
    browser = chromium()
    with tempfile.TemporaryDirectory(prefix="podseg-map-") as tmp:
        page = pathlib.Path(tmp) / "map.html"
        page.write_text(
            "<!DOCTYPE html><html><head><meta charset='utf-8'><style>"
            "html,body{margin:0;padding:0;background:#fff}</style></head><body>"
            + svg_text
            + "</body></html>",
            encoding="utf-8",
        )
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={tmp}/profile",
            f"--window-size={int(width) + 1},{int(height) + 1}",
            f"--screenshot={out.resolve()}",
            page.as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, timeout=RENDER_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise MapError(
                f"Chromium did not render the map within {RENDER_TIMEOUT:.0f} s"
            ) from None
        if done.returncode != 0 or not out.is_file():
            last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise MapError(f"Chromium failed to render the map (exit {done.returncode}): {last}")


def main(args: argparse.Namespace) -> int:
    out = pathlib.Path(args.output)
    if out.suffix.lower() not in FORMATS:
        raise MapError(f"-o {args.output}: the file name must end in .html, .svg or .png")
    graph_doc = flowsource.graph_from(args)
    if args.namespace and args.namespace not in known_namespaces(graph_doc):
        known = ", ".join(known_namespaces(graph_doc)) or "none"
        raise MapError(f"no namespace {args.namespace!r} in the flow graph (it has: {known})")
    lay = layout.layout(graph_doc, args.namespace)
    suffix = out.suffix.lower()
    try:
        if suffix == ".html":
            out.write_text(draw.page(lay, graph_doc, args.namespace), encoding="utf-8")
        elif suffix == ".svg":
            out.write_text(draw.svg(lay), encoding="utf-8")
        else:
            width, height = max(lay.width, 560), lay.height + draw.LEGEND_H
            render_png(draw.svg(lay), width, height, out)
    except OSError as exc:
        raise MapError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {out} ({len(lay.nodes)} endpoints, {len(lay.edges)} edges)", file=sys.stderr)
    return 0
