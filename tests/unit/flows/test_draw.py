"""The map's SVG and HTML: well-formed, one element per node and edge naming what it shows,
colours by verdict, a legend, names escaped, and a page that fetches nothing."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from agent.flows import draw, layout
from tests.support import flowgraphs as fg

SVG = "{http://www.w3.org/2000/svg}"


def _parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def test_svg_has_every_node_and_edge_of_the_layout() -> None:
    lay = layout.layout(fg.shop())
    root = _parse(draw.svg(lay))
    groups = list(root.iter(f"{SVG}g"))
    nodes = {g.get("data-node") for g in groups if g.get("class") == "node"}
    assert nodes == {n.id for n in lay.nodes}
    edges = [g for g in groups if g.get("class") == "edge"]
    assert {(g.get("data-src"), g.get("data-dst"), g.get("data-verdict")) for g in edges} == {
        (e.src, e.dst, e.verdict) for e in lay.edges
    }
    for g in edges:
        path = g.find(f"{SVG}path")
        assert path is not None
        assert path.get("stroke") == draw.COLOURS[g.get("data-verdict") or ""]
    boxes = {g.get("data-namespace") for g in groups if g.get("class") == "namespace"}
    assert boxes == {"shop", "monitoring", "kube-system"}
    legend = next(g for g in groups if g.get("class") == "legend")
    assert {t.text for t in legend.iter(f"{SVG}text")} >= {"allowed", "dropped", "would-drop"}


def test_names_are_escaped() -> None:
    doc = fg.make([fg.workload("x", 'a<b>"&')], [fg.flow('x/a<b>"&', "203.0.113.0/24", 443)])
    root = _parse(draw.svg(layout.layout(doc)))
    assert 'x/a<b>"&' in {g.get("data-node") for g in root.iter(f"{SVG}g")}


def test_the_page_is_self_contained() -> None:
    doc = fg.shop()
    page = draw.page(layout.layout(doc), doc, None)
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+[^\s\"']*", page))
    assert urls == {"http://www.w3.org/2000/svg"}  # the SVG namespace, never fetched
    assert not re.search(r"<(script|link|img|iframe)\b|@import|url\((?!#)", page)
    assert page.count("<svg") == 1
    assert "podseg map: all namespaces" in page


def test_the_page_lists_every_edge_with_its_count() -> None:
    doc = fg.shop()
    lay = layout.layout(doc)
    page = draw.page(lay, doc, None)
    rows = re.findall(r'<tr class="([\w-]+)"><td>([^<]*)</td><td>([^<]*)</td>', page)
    assert sorted(rows) == sorted((e.verdict, e.src, e.dst) for e in lay.edges)
    assert "<td>TCP 5432</td><td>dropped</td><td>6</td>" in page  # the debug pod's probes
    assert sum(e.count for e in lay.edges) == sum(f.count for f in doc.flows)
