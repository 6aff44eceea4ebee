#!/usr/bin/env bash
# Runs five benchmarks of scripts/bench/ (time to enforce, packet cost, footprint, compile scale,
# pure path) and collects their `RESULT {json}` lines.
#   bash scripts/bench.sh [--backend nftables|iptables] [--quick]
# As root. Full run on the 2-core development machine: about 4 minutes with nftables
# (time_to_enforce ~1.5, packet_cost ~1.5, footprint ~0.5, compile_scale ~0.5, pure_path a few
# seconds), about 8 with iptables (its time_to_enforce events take ~0.9 s each); --quick: about
# 1.5 minutes.
# Results: bench-results-<backend>.jsonl (one JSON object per benchmark) in the repo root;
# `.venv/bin/python scripts/bench/side_by_side.py bench-results-*.jsonl` compares backends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
backend=nftables
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[$i]}" = "--backend" ] && backend=${args[$((i + 1))]}
done
out="bench-results-${backend}.jsonl"
: > "$out"
for bench in time_to_enforce packet_cost footprint compile_scale pure_path; do
  echo "== $bench $*"
  .venv/bin/python "scripts/bench/$bench.py" "$@" | tee /dev/stderr | sed -n 's/^RESULT //p' >> "$out"
done 2>&1
echo "== results in $out"
