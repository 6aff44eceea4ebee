"""The netlink encoding of set elements (`agent.dataplane.nft.setelem`): a first commit's
elements read from the script's text encode exactly as the same elements from numbers (the
encoding the element patches use, checked against the kernel in tests/kernel), and a
transaction splits its element lists below the 64 KiB limit of one attribute."""

from __future__ import annotations

import random

import pytest

from agent.calc import ruleset
from agent.dataplane import netlink
from agent.dataplane.nft import firstfill, pending, setelem
from agent.dataplane.nft import render as render_nft
from tests.support import firstfill as cases
from tests.support import rulesets

TOP4, TOP6 = (1 << 32) - 1, (1 << 128) - 1


def _numbers(member: object, exact: bool) -> tuple[int, ...]:
    if isinstance(member, ruleset.AddrRange):
        return (member.first, member.last)
    assert isinstance(member, ruleset.PeerPort)
    if not exact:
        return (member.addrs.first, member.addrs.last)
    addrs, ports = member.addrs, member.ports
    return (addrs.first, addrs.last, member.protocol, ports.first, ports.last)


def _check(rs: ruleset.PodRuleset) -> int:
    """Every peer set of `rs`: its text encoded as its members' numbers are; how many."""
    rendered = render_nft.render(rs, ("eth0",))
    split = firstfill.split(pending.delete_script() + rendered.script, 0)
    assert split is not None
    held = {s.name: s for s in rendered.tables[0].sets}
    for fill in split.fills:
        members = held[fill.name].members
        numbers = tuple(_numbers(m, fill.exact) for m in members)
        if fill.exact:
            expected = setelem._port_elements(fill.family, numbers, interval=False)
        else:
            expected = setelem._addr_elements(fill.family, numbers)
        setelem.clear_cache()
        made = setelem.encode_fill(fill)
        assert made == setelem.chunks(expected) and b"".join(made) == b"".join(expected)
        assert setelem.encode_fill(fill) == made  # kept
    return len(split.fills)


@pytest.mark.parametrize("seed", range(40))
def test_text_encodes_as_numbers_do(seed: int) -> None:
    rs, _ = rulesets.random_case(random.Random(seed))
    rendered = render_nft.render(rs, ("eth0",))
    if firstfill.split(pending.delete_script() + rendered.script, 0) is not None:
        _check(rs)


def test_every_kind_of_peer_set_and_the_last_addresses() -> None:
    tops = (
        ruleset.AddrRange(4, TOP4 - 7, TOP4),  # a prefix up to the last address: no end
        ruleset.AddrRange(6, TOP6, TOP6),
        ruleset.AddrRange(4, 0, 0),
    )
    assert _check(cases.broad(peers=50, allowed=tops)) >= 10


def test_a_big_fill_is_split_into_messages_below_the_attribute_limit() -> None:
    rs = cases.broad(peers=3000, egress=False)
    split = firstfill.split(pending.delete_script() + render_nft.render(rs, ("eth0",)).script)
    assert split is not None
    data, acked = setelem.fill_batch("podseg", "state", split.state, split.fills, 4096, "pend")
    bodies = list(netlink.messages(data))
    kinds = [h.type & 0xFF for h, _ in bodies]
    assert kinds[0] == setelem.NFNL_MSG_BATCH_BEGIN and kinds[-1] == setelem.NFNL_MSG_BATCH_END
    assert kinds[-3:-1] == [setelem.NFT_MSG_NEWTABLE, setelem.NFT_MSG_DELTABLE]
    assert kinds[-4] == setelem.NFT_MSG_NEWRULE
    assert [h.seq for h, _ in bodies[1:-1]] == acked
    elements = 0
    per_set: dict[str, int] = {}
    for header, body in bodies[1:-4]:
        assert header.type & 0xFF == setelem.NFT_MSG_NEWSETELEM
        found = netlink.attrs(body, netlink.NFGENMSG.size)
        listed = found[setelem.NFTA_SET_ELEM_LIST_ELEMENTS]
        assert len(listed) + netlink.ATTR.size < 1 << 16
        name = found[setelem.NFTA_SET_ELEM_LIST_SET].rstrip(b"\0").decode()
        per_set[name] = per_set.get(name, 0) + 1
        elements += sum(1 for _ in netlink.iter_attrs(listed))
    assert max(per_set.values()) > 1  # the big sets took several messages
    made = [chunk for f in split.fills for chunk in setelem.encode_fill(f)]
    assert elements == sum(sum(1 for _ in netlink.iter_attrs(chunk)) for chunk in made)
    dropped = netlink.attrs(bodies[-2][1], netlink.NFGENMSG.size)
    assert dropped[setelem.NFTA_TABLE_NAME] == b"pend\0"


def test_without_a_table_to_drop_the_rule_ends_the_transaction() -> None:
    fill = firstfill.Fill("ingress_any4", 4, False, "198.18.0.1")
    data, acked = setelem.fill_batch("podseg", "state", "podseg state=" + "0" * 16, [fill], 8192)
    kinds = [h.type & 0xFF for h, _ in netlink.messages(data)]
    assert kinds[1:-1] == [setelem.NFT_MSG_NEWSETELEM, setelem.NFT_MSG_NEWRULE]
    assert len(acked) == 2


def test_chunks_keep_whole_elements_below_the_limit() -> None:
    elements = [bytes([n % 251]) * (8 + n % 40) for n in range(5000)]
    made = setelem.chunks(elements)
    assert b"".join(made) == b"".join(elements) and len(made) > 1
    assert all(len(chunk) <= setelem.LIST_MAX for chunk in made)
    sizes = iter(map(len, elements))
    for chunk in made:  # each chunk ends at an element's end
        taken = 0
        while taken < len(chunk):
            taken += next(sizes)
        assert taken == len(chunk)
    assert setelem.chunks([b"x" * (setelem.LIST_MAX + 1)]) == [b"x" * (setelem.LIST_MAX + 1)]
    assert setelem.chunks([]) == []
