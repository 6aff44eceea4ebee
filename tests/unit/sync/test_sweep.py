"""The sweep's decision (agent.sync.sweep.select): only tables of pods that are gone are deleted,
never a current target, never a namespace holding the named pod's addresses, never in doubt."""

from __future__ import annotations

from agent import model
from agent.calc import ruleset
from agent.dataplane.nft import render as render_nft
from agent.sync import sweep


def owned(owner: str, ino: int = 7, addrs: tuple[str, ...] = ("198.18.0.9",)) -> sweep.Owned:
    return sweep.Owned(f"/run/netns/n{ino}", ino, owner, False, frozenset(addrs))


def pod(key: str, *ips: str, node: str = "node-1") -> model.Pod:
    ns, name = key.split("/")
    return model.Pod(namespace=ns, name=name, node_name=node, ips=tuple(ips))


def reasons(decisions: list[sweep.Decision]) -> dict[str, str]:
    return {d.owned.owner: d.reason for d in decisions}


def test_gone_pod_is_swept_live_pod_is_kept() -> None:
    pods = {"x/a": pod("x/a", "198.18.0.1")}
    found = [owned("x/a", 1, ("198.18.0.1",)), owned("x/gone", 2, ("198.18.0.2",))]
    assert reasons(sweep.select(found, pods, tracked_inos=set())) == {"x/gone": "pod_gone"}


def test_current_target_is_never_swept_even_if_its_comment_is_stale() -> None:
    found = [owned("x/gone", 3)]
    assert sweep.select(found, {}, tracked_inos={3}) == []


def test_pod_on_another_node_holding_its_addresses_is_kept() -> None:
    # One kernel, several sandbox "nodes": the other agent's pod must not lose its table.
    pods = {"x/remote": pod("x/remote", "198.18.1.5", "fd00:198:18::5", node="node-2")}
    found = [owned("x/remote", 4, ("198.18.1.5", "fd00:198:18:0:0:0:0:5"))]
    assert sweep.select(found, pods, tracked_inos=set()) == []


def test_stale_sandbox_of_a_recreated_pod_is_swept() -> None:
    pods = {"x/a": pod("x/a", "198.18.0.20")}
    found = [owned("x/a", 5, ("198.18.0.10",))]
    assert reasons(sweep.select(found, pods, tracked_inos=set())) == {"x/a": "stale_sandbox"}


def test_named_pod_without_ip_keeps_its_table() -> None:
    pods = {"x/a": pod("x/a")}
    assert sweep.select([owned("x/a", 6, ())], pods, tracked_inos=set()) == []


def test_truncated_owner_matches_by_prefix() -> None:
    long_name = "p" * 120
    pods = {f"x/{long_name}": pod(f"x/{long_name}", "198.18.0.1")}
    kept = sweep.Owned("/n", 8, "x/" + "p" * 90, True, frozenset({"198.18.0.1"}))
    gone = sweep.Owned("/m", 9, "y/" + "p" * 90, True, frozenset({"198.18.0.2"}))
    assert reasons(sweep.select([kept, gone], pods, set())) == {"y/" + "p" * 90: "pod_gone"}


def test_parse_owner_reads_what_render_writes() -> None:
    def comment_of(namespace: str, name: str) -> str | None:
        rs = ruleset.PodRuleset(namespace=namespace, pod=name)
        script = render_nft.render(rs, ["eth0"]).script
        return render_nft.parse_comment(script)

    assert sweep.parse_owner(comment_of("x", "a")) == ("x/a", False)
    owner, truncated = sweep.parse_owner(comment_of("x", "b" * 200)) or ("", False)
    assert truncated and owner.startswith("x/bbb") and len(owner) < 100
    assert sweep.parse_owner("podseg fp=zz pod=x/a") is None
    assert sweep.parse_owner("someone else's table") is None
    assert sweep.parse_owner(None) is None


def test_a_pending_table_is_never_taken_for_a_leftover() -> None:
    """podseg-cni's pending table names its pod in a comment of its own form; the sweep's
    owner parser does not take it, so a pending pod's table is never swept."""
    assert sweep.parse_owner("podseg pending pod=x/web-1 cid=c0ffee") is None
