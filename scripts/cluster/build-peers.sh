#!/usr/bin/env bash
# Build the peer policy enforcers of the side-by-side race (scripts/bench/peer_race.py)
# from their Go modules, as build.sh builds Kubernetes: no code of theirs is kept in
# this repository, only the versions below; `go install MODULE/PKG@VERSION` builds
# each with its own go.mod and go.sum (checked against the checksum database).
#
#   bash scripts/cluster/build-peers.sh [--force]
#
# Output: $PSG_CLUSTER_CACHE/bin (default /var/cache/podseg-cluster/bin):
#   kube-network-policies   sigs.k8s.io/kube-network-policies/cmd (nfqueue + nftables)
#   kube-router             github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
#                           (run with only its network policy controller: iptables + ipset)
# kube-router: the module proxy lists v2.1.0 only (reported security flaws in
# dependencies); it runs only inside the test cluster's node namespace.
# Nothing is rebuilt while the hash of this script matches bin/.peers-stamp.
set -euo pipefail
KNP_VERSION=v0.8.0
KUBE_ROUTER_VERSION=v2.1.0
cache=${PSG_CLUSTER_CACHE:-/var/cache/podseg-cluster}
bin=$cache/bin
log=$cache/build-peers.log
force=0
[ "${1:-}" = --force ] && force=1

want=$(sha256sum "$0" | cut -d' ' -f1)
if [ "$force" = 0 ] && [ -f "$bin/.peers-stamp" ] && [ "$(cat "$bin/.peers-stamp")" = "$want" ] &&
   [ -x "$bin/kube-network-policies" ] && [ -x "$bin/kube-router" ]; then
  echo "build-peers: up to date in $bin (kube-network-policies $KNP_VERSION, kube-router $KUBE_ROUTER_VERSION)"
  exit 0
fi
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "build-peers: no go toolchain in PATH or /usr/local/go/bin" >&2; exit 1; }
mkdir -p "$bin" "$cache/gomod" "$cache/gocache"
export GOMODCACHE=$cache/gomod GOCACHE=$cache/gocache
export CGO_ENABLED=0 GOFLAGS="-p=2 -buildvcs=false -trimpath" GOTOOLCHAIN=local
: > "$log"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step() {  # step NAME PKG@VERSION OUTNAME [LDFLAGS]
  local name=$1 pkg=$2 out=$3 ld=${4:-} t0=$SECONDS
  printf 'build-peers: %-22s ... ' "$name"
  echo "=== $name: go install $pkg" >> "$log"
  if ! (cd "$tmp" && GOBIN=$tmp/$name go install -ldflags "-s -w $ld" "$pkg") >> "$log" 2>&1; then
    echo "FAILED after $((SECONDS - t0))s (see $log)"
    exit 1
  fi
  mv "$tmp/$name"/* "$bin/$out"
  echo "$((SECONDS - t0))s"
}

step kube-network-policies "sigs.k8s.io/kube-network-policies/cmd@$KNP_VERSION" kube-network-policies
step kube-router "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION" kube-router \
  "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"
echo "$want" > "$bin/.peers-stamp"
echo "build-peers: done in ${SECONDS}s into $bin"
