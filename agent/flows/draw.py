"""The workload map as SVG, and as a self-contained HTML page around it (`podseg map`). Pure.

Why SVG written by hand: the picture is a few boxes, nodes and curves; SVG text needs no
library, diffs well, and the HTML page embeds it inline with its styles, so opening the page
fetches nothing from anywhere (it may be viewed offline or attached to a ticket). Every node
and edge carries `data-` attributes naming what it shows, so a browser test can read the
rendered page back.
"""

from __future__ import annotations

import html

from agent.flows import graph, layout

COLOURS = {"allowed": "#2e7d32", "dropped": "#c62828", "would-drop": "#ef6c00"}
DASHES = {"allowed": "", "dropped": "6 4", "would-drop": "2 4"}
LEGEND_H = 40
FONT = "DejaVu Sans, Verdana, sans-serif"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _markers() -> list[str]:
    out = ["<defs>"]
    for verdict, colour in COLOURS.items():
        out.append(
            f'<marker id="arrow-{verdict}" viewBox="0 0 10 10" refX="10" refY="5" '
            'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    return out


def _box(box: layout.Box) -> str:
    return (
        f'<g class="namespace" data-namespace="{_esc(box.namespace)}">'
        f'<rect x="{_num(box.x)}" y="{_num(box.y)}" width="{_num(box.w)}" height="{_num(box.h)}" '
        'rx="10" fill="#f4f6fa" stroke="#8a94a6" stroke-width="1.2"/>'
        f'<text x="{_num(box.x + 12)}" y="{_num(box.y + 18)}" font-size="13" '
        f'font-weight="bold" fill="#3b4252">{_esc(box.namespace)}</text></g>'
    )


def _node(node: layout.Node) -> str:
    fill, stroke = ("#fff8e1", "#b28704") if node.external else ("#ffffff", "#4c566a")
    dash = ' stroke-dasharray="4 3"' if node.external else ""
    cx = node.x + node.w / 2
    return (
        f'<g class="node" data-node="{_esc(node.id)}" data-kind="{_esc(node.detail)}">'
        f'<rect x="{_num(node.x)}" y="{_num(node.y)}" width="{_num(node.w)}" '
        f'height="{_num(node.h)}" rx="6" fill="{fill}" stroke="{stroke}" '
        f'stroke-width="1.4"{dash}/>'
        f'<text x="{_num(cx)}" y="{_num(node.y + 17)}" font-size="13" text-anchor="middle" '
        f'fill="#2e3440">{_esc(node.label)}</text>'
        f'<text x="{_num(cx)}" y="{_num(node.y + 32)}" font-size="10" text-anchor="middle" '
        f'fill="#6b7385">{_esc(node.detail)}</text></g>'
    )


def _edge(edge: layout.Edge) -> str:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = edge.points
    colour = COLOURS[edge.verdict]
    dash = f' stroke-dasharray="{DASHES[edge.verdict]}"' if DASHES[edge.verdict] else ""
    d = f"M{_num(x0)},{_num(y0)} C{_num(x1)},{_num(y1)} {_num(x2)},{_num(y2)} {_num(x3)},{_num(y3)}"
    lx, ly = edge.label_at
    width = 6.6 * len(edge.label) + 8
    return (
        f'<g class="edge" data-src="{_esc(edge.src)}" data-dst="{_esc(edge.dst)}" '
        f'data-verdict="{edge.verdict}" data-ports="{_esc(edge.label)}">'
        f"<title>{_esc(edge.src)} → {_esc(edge.dst)}: {_esc(edge.label)} ({edge.verdict})</title>"
        f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.8"{dash} '
        f'marker-end="url(#arrow-{edge.verdict})"/>'
        f'<rect x="{_num(lx - width / 2)}" y="{_num(ly - 8)}" width="{_num(width)}" height="15" '
        'rx="3" fill="#ffffff" fill-opacity="0.85"/>'
        f'<text x="{_num(lx)}" y="{_num(ly + 3.5)}" font-size="11" text-anchor="middle" '
        f'fill="{colour}">{_esc(edge.label)}</text></g>'
    )


def _legend(y: float) -> list[str]:
    out = [f'<g class="legend" transform="translate(16,{_num(y)})">']
    x = 0
    for verdict, colour in COLOURS.items():
        dash = f' stroke-dasharray="{DASHES[verdict]}"' if DASHES[verdict] else ""
        out.append(
            f'<line x1="{x}" y1="10" x2="{x + 36}" y2="10" stroke="{colour}" '
            f'stroke-width="2.2"{dash}/>'
            f'<text x="{x + 44}" y="14" font-size="12" fill="#2e3440">{verdict}</text>'
        )
        x += 140
    out.append(
        f'<rect x="{x}" y="2" width="28" height="16" rx="4" fill="#fff8e1" stroke="#b28704" '
        f'stroke-dasharray="4 3"/><text x="{x + 36}" y="14" font-size="12" fill="#2e3440">'
        "external network</text></g>"
    )
    return out


def svg(lay: layout.Layout) -> str:
    """The map as a standalone SVG document."""
    width, height = max(lay.width, 560), lay.height + LEGEND_H
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" height="{_num(height)}" '
        f'viewBox="0 0 {_num(width)} {_num(height)}" font-family="{FONT}">',
        f'<rect width="{_num(width)}" height="{_num(height)}" fill="#ffffff"/>',
        *_markers(),
        *(_box(b) for b in lay.boxes),
        *(_edge(e) for e in lay.edges),
        *(_node(n) for n in lay.nodes),
        *_legend(lay.height + 8),
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def page(lay: layout.Layout, graph_doc: graph.FlowGraph, namespace: str | None) -> str:
    """A self-contained HTML page showing the map (no script, no external resource)."""
    since = graph_doc.since.strftime("%Y-%m-%d %H:%M UTC") if graph_doc.since else "start"
    until = graph_doc.until.strftime("%Y-%m-%d %H:%M UTC")
    scope = f"namespace {namespace}" if namespace else "all namespaces"
    title = f"podseg map: {scope}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title>"
        "<style>body{margin:16px;font-family:" + FONT + ";color:#2e3440;background:#fff}"
        "h1{font-size:18px;margin:0 0 4px}p{margin:0 0 12px;font-size:13px;color:#4c566a}"
        "table{border-collapse:collapse;margin-top:16px;font-size:12px}"
        "th,td{text-align:left;padding:3px 10px;border-bottom:1px solid #e0e4ea}"
        ".dropped td{color:#c62828}.would-drop td{color:#ef6c00}"
        "</style></head><body>"
        f"<h1>{_esc(title)}</h1>"
        f"<p>Flows seen from {_esc(since)} to {_esc(until)}: {len(lay.nodes)} endpoints, "
        f"{len(lay.edges)} edges.</p>\n" + svg(lay) + _table(lay) + "</body></html>\n"
    )


def _table(lay: layout.Layout) -> str:
    """The edges as a table under the picture: readable where the picture is crowded."""
    rows = "".join(
        f'<tr class="{e.verdict}"><td>{_esc(e.src)}</td><td>{_esc(e.dst)}</td>'
        f"<td>{_esc(e.label)}</td><td>{e.verdict}</td><td>{e.count}</td></tr>"
        for e in sorted(lay.edges, key=lambda e: (e.src, e.dst, e.verdict))
    )
    return (
        '<table class="edges"><thead><tr><th>source</th><th>destination</th><th>ports</th>'
        f"<th>verdict</th><th>seen</th></tr></thead><tbody>{rows}</tbody></table>\n"
    )
