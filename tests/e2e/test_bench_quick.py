"""Every benchmark of scripts/bench runs in --quick mode and reports what the benchmarks promise:
medians, p99, same-run ratios, and each target as met or not (the `RESULT {json}` line)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(name: str, *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench" / f"{name}.py"), "--quick", *extra],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, done.stdout
    result: dict[str, Any] = json.loads(lines[0].removeprefix("RESULT "))
    assert result["benchmark"] == name and result["quick"] is True
    return result


def _targets(result: dict[str, Any], names: set[str]) -> None:
    assert {t["target"] for t in result["targets"]} == names
    for t in result["targets"]:
        assert isinstance(t["met"], bool) and t["measured"] and t["goal"]


def test_time_to_enforce_quick() -> None:
    result = run("time_to_enforce", "--backend", "nftables")
    assert result["backend"] == "nftables"
    assert set(result["kinds"]) == {"pod_labels", "namespace_labels", "policy", "pod_ip"}
    for figures in result["kinds"].values():
        assert figures["n"] >= 1 and 0 < figures["median"] <= figures["p99"]
        assert figures["pods_median"] >= 1
    # peer changes are committed as set-element patches, not table rewrites
    assert result["kinds"]["pod_ip"]["patched_share"] == 1.0
    assert result["apply_patch_ms"]["n"] >= 1
    assert all(s > 0 for s in result["cold_start_s"] + result["restart_s"])
    _targets(result, {"2a", "2b"})


def test_packet_cost_quick() -> None:
    result = run("packet_cost")
    sizes = result["sizes"]
    assert set(sizes) == {"0", "100", "10000"}
    assert sizes["0"]["latency_ratio"] == 1.0
    for figures in sizes.values():
        assert figures["latency_p50_us"] > 0 and figures["gbps"] > 0
    _targets(result, {"2c"})


def test_footprint_quick() -> None:
    result = run("footprint")
    assert result["agent_rss_mib"] > 0 and result["worker_rss_mib"] > 0
    assert "per_cached_pod_kib" in result
    _targets(result, {"2d"})


def test_pure_path_quick() -> None:
    result = run("pure_path")
    assert set(result["passes"]) == {"pod_labels", "namespace_labels", "policy", "pod_ip"}
    for stage in ("compile", "render", "removes_allows", "patch", "pure"):
        figures = result["stages"][stage]
        assert figures["n"] >= 1 and 0 <= figures["median"] <= figures["p99"]
    assert result["stages"]["pure"]["median"] > 0
    assert result["same_run_ratios"]["removes_allows"] > 0
    _targets(result, {"2a-pure"})


def test_incremental_calc_quick() -> None:
    result = run("incremental_calc")
    assert result["mismatches"] == 0
    assert result["same_run_ratios"]["full_over_incremental"] > 0
    assert result["incremental"]["median"] > 0 and result["full"]["p99"] > 0
    _targets(result, {"flip-calc-full", "flip-calc-incremental"})


@pytest.mark.parametrize("name", ["compile_scale"])
def test_pure_benchmarks_quick(name: str) -> None:
    result = run(name)
    assert result["sizes"]["100"]["ratio"] == 1.0


def test_list_decode_quick() -> None:
    result = run("list_decode", "--baseline", str(ROOT))
    for way in ("baseline_json", "json", "typed"):
        assert result[way]["page_ms"]["median"] > 0 and result[way]["page_ms"]["p99"] > 0
    assert result["ratio_typed_json"] > 0 and result["ratio_typed_baseline"] > 0
    _targets(result, {"list_decode"})


def test_containment_backends_quick() -> None:
    result = run("containment_backends")
    for measure in ("apply_ms", "counters_ms"):
        for name in ("nftables", "iptables"):
            assert result[measure][name]["n"] > 0 and result[measure][name]["median"] > 0
        assert result[measure]["ratio_iptables_to_nftables"] > 0


def test_flow_tools_quick() -> None:
    result = run("flow_tools")
    for stage in ("recommend", "whatif", "map"):
        assert result["stages"][stage]["n"] > 0 and result["stages"][stage]["median"] > 0
    assert result["same_run_ratios"]["whatif_over_map"] > 0
    _targets(result, {"whatif-per-flow", "map-per-flow"})


def test_flip_latency_quick() -> None:
    result = run("flip_latency")
    assert result["mismatches"] == 0
    assert result["changed_per_flip"] == [5, 5]
    modes = ("nft", "nft_render", "ipt", "ipt_render", "ipt_whole")
    for mode in modes:
        figures = result["modes"][mode]
        assert figures["n"] >= 1 and 0 < figures["median"] <= figures["p99"]
    # label flips are committed as element patches on both backends, never whole, and the
    # derived modes derive every one of them
    for mode in ("nft", "nft_render", "ipt", "ipt_render"):
        assert result["modes"][mode]["patched"] == 5 * result["modes"][mode]["n"]
    for mode in ("nft", "ipt", "nft_1t", "ipt_1t"):  # *_1t: through a one-thread worker
        assert result["modes"][mode]["derived"] == 5 * result["modes"][mode]["n"]
        assert result["modes"][mode]["patched"] == 5 * result["modes"][mode]["n"]
    assert result["same_run_ratios"]["nft_over_nft_1t"] > 0
    # a flip changes address sets (rbtree) or hash sets, never a concatenated interval set
    touched = result["nft_sets_touched"]
    assert "pipapo" not in touched and touched["rbtree"]["per_patch"] >= 1
    assert result["modes"]["ipt_whole"]["patched"] == 0
    assert result["same_run_ratios"]["ipt_over_nft"] > 0
    assert result["same_run_ratios"]["nft_render_over_nft"] > 0
    _targets(result, {f"flip-{mode}" for mode in modes} | {"flip-ipt-over-nft"})


def test_flip_latency_against_a_baseline_quick() -> None:
    # The checkout against itself: both sides' rounds run and compare, nothing mismatches.
    result = run("flip_latency", "--baseline", str(ROOT), "--modes", "nft,nft_1t")
    assert result["mismatches"] == 0
    for side in ("this", "baseline"):
        for mode in ("nft", "nft_1t"):
            for part in ("total", "batch", "prep", "own"):
                figures = result["figures"][side][mode][part]
                assert figures["n"] >= 1 and 0 < figures["median"] <= figures["p99"]
    assert set(result["ratios"]) == {"nft", "nft_1t"} and result["ratios"]["nft"]["total"] > 0
    _targets(result, {"flip-nft"})


def test_worker_memory_quick() -> None:
    result = run("worker_memory")
    pss = result["pss_mib"]
    assert set(pss) == {"cold", "start", "big", "shrunk"} and all(v > 0 for v in pss.values())
    assert result["kept_mib"] == pytest.approx(pss["shrunk"] - pss["start"])
    _targets(result, {"worker-memory"})


def test_cni_add_quick() -> None:
    result = run("cni_add")
    for key in ("add_ms", "exec_ms", "pending_only_ms", "agent_answer_ms", "agent_pass_ms"):
        assert result[key]["n"] >= 1 and 0 < result[key]["median"] <= result[key]["p99"], key
    assert result["same_run_ratios"]["add_over_exec"] > 0
    _targets(result, {"cni-add"})


def test_flow_store_quick() -> None:
    result = run("flow_store")
    assert result["max_rows"] == result["cap"] and result["query_rows"] == result["cap"]
    assert 0 < result["write_ms"]["median"] <= result["write_ms"]["p99"]
    assert result["query_ms"]["n"] >= 3
    _targets(result, {"flow-store-write"})


def test_admin_tier_quick() -> None:
    result = run("admin_tier", "--backend", "nftables")
    for kind in ("networkpolicy_ms", "admin_ms"):
        figures = result[kind]
        assert figures["n"] >= 1 and 0 < figures["median"] <= figures["p99"]
    # an Admin-tier edit reaches every local pod (all are its subjects)
    assert result["admin_ms"]["pods_median"] == result["sizes"]["local_pods"]
    assert result["ratio"] > 0 and result["ratio_p99"] > 0 and result["load_average"] >= 0
    # like for like: both edits reach the same local pods (every pod of one namespace)
    same = result["same_pods"]
    assert same["admin_ms"]["pods_median"] == same["networkpolicy_ms"]["pods_median"] >= 1
    assert same["ratio"] > 0 and same["ratio_p99"] > 0
    names = {"admin edit within the NetworkPolicy targets", "2a networkpolicy", "2a admin"}
    _targets(result, names | {f"{name}, like for like" for name in names})


def test_churn_quick() -> None:
    result = run("churn")
    # every change was written, the agent drained them and its tables equal a fresh agent's
    assert result["events"] == sum(result["counts"].values()) and result["counts"]["delete"] >= 1
    assert result["differ"] == 0
    assert result["passes"] >= 1 and 0 < result["pass_ms"]["median"] <= result["pass_ms"]["p99"]
    assert result["drain_s"] > 0 and result["pss_mib_max"] > 0 and result["cold_start_s"] > 0
    _targets(result, {"churn_latency", "churn_memory", "churn_nothing_lost"})


def test_cold_start_quick() -> None:
    """Against this checkout as its own baseline: both agents program every local pod."""
    result = run("cold_start", "--baseline", str(ROOT))
    for figures in (result, result["baseline"]):
        assert 0 < figures["ready_s"]["median"] <= figures["ready_s"]["p99"]
        assert figures["pss_mib"] > figures["agent_pss_mib"] > 0 and figures["compile_ms"] > 0
    assert result["ratio_ready"] > 0 and result["ratio_pss"] > 0
    _targets(result, {"cold_start", "tree_memory"})


def test_peer_race_quick() -> None:
    """--quick needs no cluster: the prober against a local listener and the table's shape."""
    result = run("peer_race")
    assert result["probe_deny_ms"] > 0
    assert set(result["enforcers"]) == {"podseg", "kube-network-policies", "kube-router"}
    assert set(result["ratios"]) == {"kube-network-policies", "kube-router"}
    assert result["ratios"]["kube-router"]["flip p50 (ms)"] > 0
    assert result["targets"] == []


def test_nft_set_cost_quick() -> None:
    result = run("nft_set_cost")
    assert result["sizes"] == [100, 1000]
    for kind in ("pipapo", "rbtree", "hash"):
        for figures in result["kinds"][kind].values():
            assert figures["n"] >= 1 and 0 < figures["median"] <= figures["p99"]
    assert result["same_run_ratios"]["pipapo_over_rbtree"] > 0
    _targets(result, {"set-change"})


def test_first_commit_quick() -> None:
    result = run("first_commit")
    for way in ("old", "new"):
        figures = result["figures"][f"{way}_total"]
        assert figures["n"] == 3 and 0 < figures["median"] <= figures["p99"]
    assert result["figures"]["part_netlink_elements"]["median"] > 0
    assert result["ratios"]["total"] > 0
    _targets(result, {"first-commit"})


def test_derive_cost_quick() -> None:
    result = run("derive_cost")
    for name in ("nftables", "iptables"):
        figures = result["this"][name]
        assert figures["derive_ms"]["n"] >= 1
        assert 0 < figures["derive_ms"]["median"] <= figures["derive_ms"]["p99"]
        assert figures["kept_bytes"] > 0
    assert result["same_run_ratios"]["ipt_over_nft"] > 0
    _targets(result, {"derive-nft"})


def test_worker_threads_quick() -> None:
    result = run("worker_threads")
    for figures in result["rounds"].values():
        assert figures["n"] >= 1 and 0 < figures["median"] <= figures["p99"]
    assert set(result["rounds"]) == {"1", "2"} and result["same_run_ratio"] > 0
    _targets(result, {"worker-threads"})
