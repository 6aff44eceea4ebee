"""The split of a first commit (`agent.dataplane.nft.firstfill`): step 1 is the script with
exactly the peer sets' elements and the fingerprint rule taken out, step 2 holds exactly those;
anything not in the renderer's layout is left to the whole commit."""

from __future__ import annotations

import random
import re

import pytest

from agent.dataplane.nft import firstfill, pending
from agent.dataplane.nft import render as render_nft
from tests.support import firstfill as cases
from tests.support import rulesets


def _script(rs: object, with_pending: bool = True) -> str:
    rendered = render_nft.render(rs, ("eth0",))  # type: ignore[arg-type]
    return (pending.delete_script() if with_pending else "") + rendered.script


def _joined(split: firstfill.Split, with_pending: bool) -> str:
    """The whole script back from the split: the preludes, each fill's elements in its set,
    the rule of chain `state`."""
    text = split.script
    for fill in split.fills:
        head = re.search(rf"  set {re.escape(fill.name)} \{{\n(    [^\n]+\n)+?(?=  \}}\n)", text)
        assert head is not None, fill.name
        elements = f"    elements = {{\n      {fill.texts}\n    }}\n"
        text = text[: head.end()] + elements + text[head.end() :]
    state = f"  chain {render_nft.STATE_CHAIN} {{\n"
    assert text.count(state + "  }\n") == 1
    text = text.replace(state, f'{state}    return comment "{split.state}"\n')
    return (pending.delete_script() if with_pending else "") + render_nft.delete_script() + text


@pytest.mark.parametrize("seed", range(60))
def test_the_two_steps_hold_the_whole_script(seed: int) -> None:
    rs, ifaces = rulesets.random_case(random.Random(seed))
    with_pending = seed % 2 == 0
    rendered = render_nft.render(rs, ifaces)
    script = (pending.delete_script() if with_pending else "") + rendered.script
    split = firstfill.split(script, 0)
    assert split is not None
    assert _joined(split, with_pending) == script
    assert split.pending is with_pending
    assert split.state == f"podseg state={rendered.fingerprint}"
    # step 1 deletes nothing and carries no fingerprint; step 2 fills only peer sets
    assert "delete" not in split.script and "podseg state=" not in split.script
    assert all(render_nft.is_peer_set(f.name) for f in split.fills)
    held = {s.name: s for t in rendered.tables for s in t.sets}
    filled = {f.name for f in split.fills}
    assert filled == {n for n, s in held.items() if s.elements and render_nft.is_peer_set(n)}
    assert split.elements == sum(len(held[n].elements) for n in filled)
    for fill in split.fills:
        named = held[fill.name]
        assert fill.exact is (named.flags == ())
        assert fill.family == (6 if named.type.startswith("ipv6") else 4)
        assert fill.texts.split(firstfill.SEPARATOR) == list(named.elements)


def test_the_tiers_sets_stay_in_step_one() -> None:
    rs = cases.broad(peers=100, denied=("198.18.3.1", "198.18.3.2"))
    split = firstfill.split(_script(rs), 0)
    assert split is not None
    assert "198.18.3.1" in split.script  # the Admin tier's Deny set
    assert not any("admin" in f.name for f in split.fills)
    kinds = {(f.family, f.exact) for f in split.fills}
    assert kinds == {(4, False), (6, False), (4, True), (6, True)}


def test_peer_set_names_are_told_from_the_others() -> None:
    rs = cases.broad(peers=10, denied=("198.18.3.1",))
    rendered = render_nft.render(rs, ("eth0",))
    names = {s.name for t in rendered.tables for s in t.sets}
    peer = {n for n in names if render_nft.is_peer_set(n)}
    assert "ingress_admin0_a4" in names - peer and "nd_link6" in names - peer
    expected = {"ingress_any4", "ingress_exact6", "ingress_p0_tcp_8000_8010_v6", "egress_exact4"}
    assert expected <= peer
    assert all(n.startswith(("ingress_", "egress_")) and "admin" not in n for n in peer)


def test_few_elements_are_not_split() -> None:
    script = _script(cases.broad(peers=10))
    split = firstfill.split(script, 0)
    assert split is not None and split.elements < firstfill.LEAST
    assert firstfill.split(script) is None
    assert firstfill.split(_script(cases.broad(peers=200))) is not None


def test_what_is_not_the_renderers_layout_is_not_split() -> None:
    script = _script(cases.broad(peers=200))
    assert firstfill.split(script, 0) is not None
    body = script[len(pending.delete_script() + render_nft.delete_script()) :]
    assert firstfill.split(body, 0) is None  # no delete prelude: not a whole commit
    listing = script.replace("\n    elements = {\n", "\n    elements = { ")  # another layout
    assert firstfill.split(listing, 0) is None
    no_state = re.sub(r'    return comment "podseg state=[0-9a-f]+"\n', "", script)
    assert firstfill.split(no_state, 0) is None
    assert firstfill.split(script + script[-60:], 0) is None  # more after the tables


def test_a_peer_set_of_another_type_is_not_guessed() -> None:
    script = _script(cases.broad(peers=200))
    odd = script.replace(
        "  set ingress_exact4 {\n    type ipv4_addr . inet_proto . inet_service\n",
        "  set ingress_exact4 {\n    type ipv4_addr . inet_proto . inet_service\n"
        "    flags interval\n",
    )
    assert odd != script and firstfill.split(odd, 0) is None
