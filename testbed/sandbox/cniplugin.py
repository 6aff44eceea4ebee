"""Driving the podseg-cni plugin binary the way a container runtime does: its network
configuration (with prevResult) on stdin, CNI_COMMAND / CNI_CONTAINERID / CNI_NETNS /
CNI_IFNAME / CNI_ARGS / CNI_PATH in the environment, the result or error JSON on stdout.

Shared by tests/e2e/test_cni.py and scripts/bench/cni_add.py; `build` compiles the plugin with
deploy/cni/build.sh (Go), once per output directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from testbed.sandbox import topology

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "cni" / "build.sh"
CNI_VERSION = "1.0.0"


def go_available() -> bool:
    return shutil.which("go") is not None or os.path.exists("/usr/local/go/bin/go")


def build(outdir: pathlib.Path) -> pathlib.Path:
    """deploy/cni/build.sh into `outdir`; the plugin's path."""
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/local/go/bin"
    subprocess.run(["bash", str(BUILD), str(outdir)], check=True, env=env, timeout=600)
    return outdir / "podseg-cni"


def prev_result(pod: topology.SandboxPod, node: topology.SandboxNode) -> dict[str, Any]:
    """What a bridge plugin before podseg-cni reports for `pod` (CNI 1.0.0 result)."""
    ips: list[dict[str, Any]] = [
        {"address": f"{pod.ipv4}/16", "gateway": node.ipv4, "interface": 0}
    ]
    if pod.ipv6:
        ips.append({"address": f"{pod.ipv6}/64", "gateway": node.ipv6, "interface": 0})
    return {
        "cniVersion": CNI_VERSION,
        "interfaces": [{"name": pod.interface, "sandbox": pod.netns_path}],
        "ips": ips,
        "dns": {},
    }


def network_config(prev: Mapping[str, Any] | None, **keys: Any) -> dict[str, Any]:
    """podseg-cni's entry of a conflist as the runtime hands it over (name, version, prevResult)."""
    conf: dict[str, Any] = {"cniVersion": CNI_VERSION, "name": "psg-net", "type": "podseg-cni"}
    conf.update(keys)
    if prev is not None:
        conf["prevResult"] = dict(prev)
    return conf


@dataclasses.dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.stdout)


def run(
    binary: pathlib.Path,
    command: str,
    conf: Mapping[str, Any],
    *,
    netns: str = "",
    container_id: str = "",
    pod: tuple[str, str] | None = None,
    ifname: str = "eth0",
    timeout: float = 30.0,
) -> Outcome:
    """One plugin invocation, exactly as a runtime makes it."""
    args = "IgnoreUnknown=1"
    if pod is not None:
        args += f";K8S_POD_NAMESPACE={pod[0]};K8S_POD_NAME={pod[1]}"
        args += f";K8S_POD_INFRA_CONTAINER_ID={container_id}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": args,
        "CNI_PATH": str(binary.parent),
    }
    started = time.monotonic()
    done = subprocess.run(
        [str(binary)],
        input=json.dumps(conf),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def tables(netns_path: str) -> set[str]:
    """`<family> <name>` of every nftables table in the namespace."""
    listing = subprocess.run(
        ["nsenter", f"--net={netns_path}", "nft", "list", "tables"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return {line.removeprefix("table ").strip() for line in listing.splitlines() if line.strip()}
