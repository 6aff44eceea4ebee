#!/usr/bin/env bash
# Installs everything podseg needs on a Debian machine, as root: system tools (apt) and a
# virtualenv (.venv) with the project and its dev tools. Idempotent and quick when done before.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# prometheus + promtool: the drop-metrics e2e test scrapes the agent with a real server;
# ipset: the iptables backend keeps peers in ipsets.
for tool in nft:nftables ip:iproute2 conntrack:conntrack iptables:iptables sysctl:procps \
            prometheus:prometheus promtool:prometheus ipset:ipset; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
done
[ -e /usr/lib/x86_64-linux-gnu/libnftables.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libnftables.so.1 ] \
  || ls /usr/lib/*/libnftables.so.1 >/dev/null 2>&1 || need_apt+=(libnftables1)
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1 \
   || ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  need_apt+=(python3 python3-venv)
  PY=python3
elif ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
# Benchmarks (scripts/bench/packet_cost.py): TCP latency (sockperf) and throughput (iperf3).
for tool in iperf3:iperf3 sockperf:sockperf; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool##*:}")
done
# podseg map -o map.png renders the map in headless Chromium (tests/e2e/test_map_browser.py too);
# DejaVu gives it the font the map is drawn with.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
# Go builds the podseg-cni plugin (deploy/cni/build.sh); the machine's own Go comes first.
[ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Two editable installs: podseg[dev] (the runtime agent/ plus the dev tools) and podseg-testbed
# (testbed/: API emulator, netns sandbox, `podseg demo`), which the tests and the demo need.
stamp=.venv/.podseg-installed
want=$(cat pyproject.toml testbed/pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv and installing podseg[dev] and podseg-testbed"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  log=$(mktemp)
  if ! { .venv/bin/python -m pip install -q --upgrade pip \
         && .venv/bin/python -m pip install -q -e '.[dev]' -e ./testbed; } >"$log" 2>&1; then
    cat "$log"; echo "setup: pip install failed" >&2; exit 1
  fi
  rm -f "$log"
  .venv/bin/python -c 'import agent, kubernetes, pyroute2, prometheus_client, structlog, aiohttp'
  .venv/bin/python -I -c 'import testbed.emulator.server, testbed.sandbox.cluster, testbed.demo'
  echo "$want" > "$stamp"
fi
