#!/usr/bin/env bash
# podseg on the test cluster, installed as a user installs it (README, "Install on a cluster"):
# `kubectl apply -k` of kustomize overlays that only swap the image reference for the one
# built from this checkout (podseg-image.sh: the Dockerfile's build script, no registry).
#
#   bash scripts/cluster.sh podseg install     build/import the image, apply -k deploy/, rollout status
#   bash scripts/cluster.sh podseg uninstall   docs/operations.md "Uninstall": delete the agent,
#                                              run deploy/cleanup/, delete -k everything
#   bash scripts/cluster.sh podseg status      the agent DaemonSet and its pods
#   bash scripts/cluster.sh podseg crds        prometheus-operator's ServiceMonitor, PodMonitor and
#                                              PrometheusRule CRDs (for deploy/monitoring/), from
#                                              the operator's Go module (go mod download)
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
# prometheus-operator release whose CRDs the monitoring manifests are checked against
PROMETHEUS_OPERATOR=github.com/prometheus-operator/prometheus-operator@v0.86.1

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

# why_not_ready: the agent pods' waiting or readiness state, on one line
why_not_ready() {
  kc -n podseg-system get pods -l app.kubernetes.io/component=agent -o \
    jsonpath='{range .items[*]}{.metadata.name}: {.status.phase} {.status.containerStatuses[0].state.waiting.reason} {.status.containerStatuses[0].state.waiting.message}; {end}' 2>/dev/null |
    tr '\n' ' ' | cut -c1-300
}

cmd_install() {
  cluster_up
  local ref dir=$STATE/podseg-overlays
  ref=$(bash "$here/podseg-image.sh" import | tail -1) || die "the image could not be built or imported"
  overlays "$dir" "$ref"
  say "kubectl apply -k deploy/ with image $ref"
  kc apply -k "$dir/base" >/dev/null || die "kubectl apply -k $dir/base failed"
  kc -n podseg-system rollout status daemonset/podseg-agent --timeout=180s >/dev/null ||
    die "podseg-agent did not become ready within 180s: $(why_not_ready) (log: kubectl -n podseg-system logs ds/podseg-agent; kubelet: $LOGS/kubelet.log)"
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

cmd_crds() {
  cluster_up
  command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
  command -v go >/dev/null || die "no go toolchain (the CRDs come from the operator's Go module)"
  local dir crd
  dir=$(cd /tmp && GOMODCACHE=$PSG_CLUSTER_CACHE/gomod GOFLAGS=-mod=mod \
        go mod download -json "$PROMETHEUS_OPERATOR" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir/example/prometheus-operator-crd" ] || die "no CRDs in $PROMETHEUS_OPERATOR ($dir)"
  for crd in servicemonitors podmonitors prometheusrules; do
    kc apply --server-side --force-conflicts -f "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml" >/dev/null ||
      die "could not apply the $crd CRD"
  done
  kc wait --for=condition=Established --timeout=60s \
    crd/servicemonitors.monitoring.coreos.com crd/podmonitors.monitoring.coreos.com \
    crd/prometheusrules.monitoring.coreos.com >/dev/null || die "the CRDs were not established"
  say "prometheus-operator CRDs ($PROMETHEUS_OPERATOR) established"
}

case "${1:-}" in
  install) cmd_install ;;
  crds) cmd_crds ;;
  uninstall) cmd_uninstall ;;
  status) cluster_up; kc -n podseg-system get daemonset,pods -o wide ;;
  overlays) [ $# -ge 2 ] || die "usage: podseg.sh overlays DIR [REF]"
            overlays "$2" "${3:-$(bash "$here/podseg-image.sh" ref)}" ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
