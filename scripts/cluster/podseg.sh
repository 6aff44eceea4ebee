#!/usr/bin/env bash
# podseg on the test cluster, installed as a user installs it (README, "Install on a cluster"):
# `kubectl apply -k` of kustomize overlays that only swap the image reference for the one
# built from this checkout (podseg-image.sh: the Dockerfile's build script, no registry).
#
#   bash scripts/cluster.sh podseg install     build/import the image, apply -k deploy/, rollout status
#   bash scripts/cluster.sh podseg uninstall   docs/operations.md "Uninstall": delete the agent,
#                                              run deploy/cleanup/, delete -k everything
#   bash scripts/cluster.sh podseg status      the agent DaemonSet and its pods
#   bash scripts/cluster.sh podseg overlays DIR   write the overlays (base, cleanup, responder) to DIR
#
# The overlays live in $PSG_CLUSTER_STATE/podseg-overlays/{base,cleanup,responder}; each is
#   resources: [<relative path to deploy/...>]
#   images: [{name: ghcr.io/podseg/podseg, newName: <local repo>, newTag: <version-hash>}]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=config.sh
. "$here/config.sh"
kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
die() { echo "podseg: ERROR: $*" >&2; exit 1; }
say() { echo "podseg: $*"; }
UPSTREAM_IMAGE=ghcr.io/podseg/podseg

# overlays DIR REF: one overlay per kustomization, each only swapping the image
overlays() {
  local out=$1 ref=$2 name src rel
  for name in base cleanup responder; do
    src=$repo/deploy; [ "$name" = base ] || src=$repo/deploy/$name
    mkdir -p "$out/$name"
    rel=$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$src" "$out/$name")
    cat > "$out/$name/kustomization.yaml" <<EOF
# Written by scripts/cluster/podseg.sh: $src with the image built from this checkout.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel
images:
  - name: $UPSTREAM_IMAGE
    newName: ${ref%:*}
    newTag: ${ref##*:}
EOF
  done
}

cluster_up() {
  kc get --raw /readyz >/dev/null 2>&1 || die "the cluster is not up (bash scripts/cluster.sh up)"
}

cmd_install() {
  cluster_up
  local ref dir=$STATE/podseg-overlays
  ref=$(bash "$here/podseg-image.sh" import | tail -1) || die "the image could not be built or imported"
  overlays "$dir" "$ref"
  say "kubectl apply -k deploy/ with image $ref"
  kc apply -k "$dir/base" >/dev/null || die "kubectl apply -k $dir/base failed"
  kc -n podseg-system rollout status daemonset/podseg-agent --timeout=180s >/dev/null ||
    die "daemonset/podseg-agent did not roll out within 180s (kubectl -n podseg-system describe pods; logs: kubectl -n podseg-system logs ds/podseg-agent)"
  say "installed: daemonset/podseg-agent rolled out ($ref)"
}

cmd_uninstall() {
  cluster_up
  local dir=$STATE/podseg-overlays
  [ -d "$dir/base" ] || { say "not installed by this script (no $dir)"; return 0; }
  kc -n podseg-system delete daemonset podseg-agent --wait=true --ignore-not-found >/dev/null
  kc apply -k "$dir/cleanup" >/dev/null
  kc -n podseg-system rollout status daemonset/podseg-cleanup --timeout=180s >/dev/null ||
    die "daemonset/podseg-cleanup did not finish within 180s"
  kc delete -k "$dir/cleanup" --ignore-not-found >/dev/null
  kc delete -k "$dir/responder" --ignore-not-found >/dev/null
  kc delete -k "$dir/base" --ignore-not-found --wait=true >/dev/null
  say "uninstalled (cleanup ran on every node)"
}

case "${1:-}" in
  install) cmd_install ;;
  uninstall) cmd_uninstall ;;
  status) cluster_up; kc -n podseg-system get daemonset,pods -o wide ;;
  overlays) [ $# -ge 2 ] || die "usage: podseg.sh overlays DIR [REF]"
            overlays "$2" "${3:-$(bash "$here/podseg-image.sh" ref)}" ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
