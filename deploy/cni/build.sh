#!/usr/bin/env bash
# Builds the podseg-cni chained CNI plugin (a static binary) into OUTDIR.
# Usage: deploy/cni/build.sh OUTDIR        build OUTDIR/podseg-cni
#        deploy/cni/build.sh --test        run the plugin's Go unit tests
#        deploy/cni/build.sh --test OUTDIR both
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
run_tests=0
out=""
for arg in "$@"; do
  case "$arg" in
    --test) run_tests=1 ;;
    -*) echo "build.sh: unknown option $arg" >&2; exit 2 ;;
    *) out="$arg" ;;
  esac
done
if [[ $run_tests -eq 0 && -z "$out" ]]; then
  echo "usage: build.sh [--test] [OUTDIR]" >&2
  exit 2
fi
command -v go >/dev/null || { echo "build.sh: go not found (scripts/setup.sh installs it)" >&2; exit 2; }
if [[ -n "$out" ]]; then
  mkdir -p "$out"
  out="$(cd "$out" && pwd)"  # relative to the caller's directory, not this one
fi
cd "$here"
if [[ $run_tests -eq 1 ]]; then
  go test ./...
fi
if [[ -n "$out" ]]; then
  mkdir -p "$out"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/podseg-cni" .
fi
