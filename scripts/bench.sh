#!/usr/bin/env bash
# Runs every benchmark of scripts/bench/ (issue 8) and collects their RESULT lines.
#   bash scripts/bench.sh [--backend nftables|iptables] [--quick]
# As root. Full run on the 2-core development machine: about 8 minutes (time_to_enforce ~4,
# packet_cost ~2, footprint ~1, compile_scale ~1, pure_path a few seconds); --quick: about
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
