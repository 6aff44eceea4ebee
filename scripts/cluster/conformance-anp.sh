#!/usr/bin/env bash
# Run the network-policy-api conformance suite (sigs.k8s.io/network-policy-api/conformance,
# ClusterNetworkPolicy Admin and Baseline tiers) against the running test cluster
# (bash scripts/cluster.sh conformance-anp [options] [-- extra test flags]).
#
#   --build-only     build the suite's test binary, run nothing
#   --run RE         go test -run pattern (default: ^TestConformance$, every case)
#   --features LIST  --supported-features (default: ClusterNetworkPolicy,
#                    ClusterNetworkPolicyNamedPorts,ClusterNetworkPolicyEgressNodePeers)
#   --timeout D      whole-run timeout (default 1h)
#   --no-podseg      run against the cluster as it is (default: install podseg first)
#   --backend B      podseg's backend, nftables (default) or iptables: PODSEG_BACKEND of the
#                    installed agent DaemonSet, rolled out before the suite starts
#
# The binary ($BIN/anp-conformance.test) is `go test -c` of the module's conformance package
# with the module's own go.sum, built in a copy of the module whose base/manifests.yaml (embedded
# in the binary) is derived for this test bed by anp-base-manifests.py: no SCTP servers (the
# kernel has no SCTP module, they could not listen) and one serving replica of the two
# host-network `centaur` pods (one node cannot give both the same host ports).  Rebuilt when the
# version or the derived file changes.  The suite's pods run registry.k8s.io/e2e-test-images/agnhost:2.45
# and start their servers with /bin/bash -c: that image is our agnhost (built from source by
# build.sh) on the busybox root of image.sh, with a /bin/bash that hands over to busybox sh.
# Skipped by name: the four cases that send only SCTP (sctp_cases below).  Cases that probe
# SCTP after TCP and UDP fail at their first SCTP probe; anp-summary.py tells those apart.
# Output: $PSG_CLUSTER_LOGS/conformance-anp/<time>/{test.log,summary.txt}; exit status 1 when
# a case failed other than at an SCTP probe or no case ran (anp-summary.py), else 0.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/config.sh"
. "$here/image.sh"
version=v0.3.0
module=sigs.k8s.io/network-policy-api
image=registry.k8s.io/e2e-test-images/agnhost:2.45
run='^TestConformance$'
features=ClusterNetworkPolicy,ClusterNetworkPolicyNamedPorts,ClusterNetworkPolicyEgressNodePeers
# the cases that send only SCTP: skipped by name (-test.skip), as conformance.sh skips
# [Feature:SCTPConnectivity]
sctp_cases=(CNPAdminTierIngressSCTP CNPAdminTierEgressSCTP CNPBaselineTierIngressSCTP CNPBaselineTierEgressSCTP)
timeout=1h podseg=1 build_only=0 backend=nftables extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) build_only=1 ;;
    --run) run=$2; shift ;;
    --features) features=$2; shift ;;
    --timeout) timeout=$2; shift ;;
    --no-podseg) podseg=0 ;;
    --backend) backend=$2; shift ;;
    --) shift; extra=("$@"); break ;;
    *) sed -n '2,26p' "$0" >&2; exit 2 ;;
  esac
  shift
done

# module_dir: moddir, the module's directory in the module cache (downloaded when missing)
module_dir() {
  command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
  command -v go >/dev/null || { echo "conformance-anp: no go toolchain" >&2; return 1; }
  mkdir -p "$PSG_CLUSTER_CACHE/gomod"
  moddir=$(cd /tmp && GOMODCACHE=$PSG_CLUSTER_CACHE/gomod GOFLAGS=-mod=mod GOTOOLCHAIN=local \
    go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$moddir" ] || { echo "conformance-anp: $module@$version not downloaded" >&2; return 1; }
}

build() {
  local bin=$BIN/anp-conformance.test stamp=$BIN/anp-conformance.stamp
  local work=$PSG_CLUSTER_CACHE/anp-conformance dir=$moddir want
  mkdir -p "$BIN" "$PSG_CLUSTER_CACHE/gomod" "$PSG_CLUSTER_CACHE/gocache" "$work"
  export GOMODCACHE=$PSG_CLUSTER_CACHE/gomod GOCACHE=$PSG_CLUSTER_CACHE/gocache
  export CGO_ENABLED=0 GOFLAGS="-p=2 -buildvcs=false -trimpath -mod=readonly" GOTOOLCHAIN=local
  # the base manifests of this test bed (no SCTP servers, one serving centaur replica:
  # anp-base-manifests.py) replace the upstream file (embedded in the binary) in a copy of the
  # module: go refuses -overlay for files in the module cache
  python3 "$here/anp-base-manifests.py" "$dir/conformance/base/manifests.yaml" "$work/manifests.yaml" ||
    { echo "conformance-anp: the base manifests could not be derived" >&2; return 1; }
  want="$version $(sha256sum < "$work/manifests.yaml" | cut -c1-16)"
  if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  local log=$PSG_CLUSTER_CACHE/build-anp.log t0=$SECONDS
  echo "conformance-anp: building $module/conformance@$version (log: $log)"
  rm -rf "$work/src" && cp -r "$dir" "$work/src" && chmod -R u+w "$work/src" &&
    cp "$work/manifests.yaml" "$work/src/conformance/base/manifests.yaml" || return 1
  (cd "$work/src" && go test -c -o "$bin" ./conformance) > "$log" 2>&1 ||
    { echo "conformance-anp: build failed (see $log)" >&2; return 1; }
  echo "$want" > "$stamp"
  echo "conformance-anp: built in $((SECONDS - t0))s"
}

# agnhost_image: the suite's agnhost image, loaded into the node's containerd
agnhost_image() {
  local have; have=$(ctr_k8s images ls -q)
  grep -qxF "$image" <<<"$have" && return 0
  local tmp out=$PSG_CLUSTER_CACHE/images/agnhost-2.45.tar
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/psg-anp-image.XXXXXX")
  _base_rootfs "$tmp" && cp "$BIN/agnhost" "$tmp/agnhost"
  printf '#!/bin/sh\nexec /bin/sh "$@"\n' > "$tmp/bin/bash" && chmod 755 "$tmp/bin/bash"
  image_archive "$tmp" "$image" '["/agnhost"]' '["pause"]' "$out"
  rm -rf "$tmp"
  image_load "$out" "$image"
}

kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
# a ClusterNetworkPolicy with a named port (experimental channel), created as a server-side dry run
schema_probe='apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: conformance-anp-schema-probe}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {conformance-anp: probe}}}
  egress:
  - action: Accept
    to: [{pods: {namespaceSelector: {}, podSelector: {}}}]
    protocols: [{destinationNamedPort: web}]'

# crd_channel FILE [wait]: the ClusterNetworkPolicy CRD of FILE, server-side applied; with
# `wait`, polls (with a deadline) until the API server keeps a destinationNamedPort
crd_channel() {
  local file=$1 got i
  kc apply --server-side --force-conflicts --field-manager=conformance-anp -f "$file" >/dev/null || return 1
  [ "${2:-}" = wait ] || return 0
  for i in $(seq 1 60); do
    got=$(kc create --dry-run=server -f - \
      -o 'jsonpath={.spec.egress[0].protocols[0].destinationNamedPort}' <<<"$schema_probe" 2>&1) &&
      [ "$got" = web ] && return 0
    sleep 0.5
  done
  echo "conformance-anp: the API server did not take the CRD of $file: $got" >&2
  return 1
}

module_dir
build
[ "$build_only" = 1 ] && exit 0
"$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" get --raw /readyz >/dev/null 2>&1 ||
  { echo "conformance-anp: the cluster is not up (bash scripts/cluster.sh up)" >&2; exit 1; }
agnhost_image
if [ "$podseg" = 1 ]; then
  bash "$here/podseg.sh" install || { echo "conformance-anp: podseg could not be installed" >&2; exit 1; }
  # the DaemonSet's env as installed, plus the backend (apply -k leaves an env var it never set)
  env=PODSEG_BACKEND-; [ "$backend" = nftables ] || env=PODSEG_BACKEND=$backend
  "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" -n podseg-system set env daemonset/podseg-agent \
    -c agent "$env" >/dev/null &&
    "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" -n podseg-system rollout status \
      daemonset/podseg-agent --timeout=180s ||
    { echo "conformance-anp: podseg's $backend backend did not roll out" >&2; exit 1; }
  echo "conformance-anp: podseg installed, backend $backend"
fi
# The experimental features (named ports, node peers) are fields of the experimental channel's
# CRD; the standard one of deploy/crds/ prunes them.  The module's experimental CRD for the
# run, deploy/crds/' again afterwards.
case ",$features," in
  *,ClusterNetworkPolicyNamedPorts,* | *,ClusterNetworkPolicyEgressNodePeers,*)
    trap 'crd_channel "$here/../../deploy/crds/policy.networking.k8s.io_clusternetworkpolicies.yaml" ||
      echo "conformance-anp: the ClusterNetworkPolicy CRD of deploy/crds/ not restored" >&2' EXIT
    crd_channel "$moddir/config/crd/experimental/policy.networking.k8s.io_clusternetworkpolicies.yaml" wait ||
      exit 1
    echo "conformance-anp: the experimental channel's ClusterNetworkPolicy CRD is installed for the run" ;;
esac
out=$LOGS/conformance-anp/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
echo "conformance-anp: skipping ${sctp_cases[*]}: SCTP traffic, the kernel has no SCTP module"
skip="^TestConformance\$/^($(IFS='|'; echo "${sctp_cases[*]}"))\$"
t0=$SECONDS
set +e
(cd "$out" && KUBECONFIG=$KUBECONFIG_ADMIN "$BIN/anp-conformance.test" -test.v -test.run "$run" \
   -test.skip "$skip" -test.timeout "$timeout" -supported-features "$features" \
   ${extra[@]+"${extra[@]}"}) > "$out/test.log" 2>&1
rc=$?
set -e
{
  echo "took $((SECONDS - t0))s, podseg backend $backend (installed: $podseg), test binary exit $rc"
  python3 "$here/anp-summary.py" "$out/test.log" "${sctp_cases[@]}"
} | tee "$out/summary.txt"
summary_rc=${PIPESTATUS[0]}
echo "conformance-anp: log $out/test.log, summary $out/summary.txt"
exit "$summary_rc"
