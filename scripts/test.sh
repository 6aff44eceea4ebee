#!/usr/bin/env bash
# The whole test suite, as CI runs it (README: `bash scripts/test.sh`):
#   1. scripts/setup.sh (this machine's packages, .venv), ruff, ruff format, mypy --strict;
#   2. pytest over every tier but the real cluster's (extra arguments go to pytest);
#   3. the real-cluster tier: `scripts/cluster.sh up` (builds Kubernetes from its Go module pins
#      when not cached: ~15 min cold), podseg's image from the Dockerfile's build script, then
#      tests/cluster (podseg installed as README says), then the upstream NetworkPolicy e2e suite
#      against the cluster with podseg installed (`scripts/cluster.sh conformance`), then the
#      network-policy-api conformance suite (`scripts/cluster.sh conformance-anp`: fails on a
#      case failing other than at an SCTP probe), then `scripts/cluster.sh down`, always, also
#      after a failure.
# The cluster tier runs after the other root tiers, never beside them (docs/development.md).
#
#   bash scripts/test.sh [PYTEST ARGS]             everything
#   bash scripts/test.sh --cluster [PYTEST ARGS]   only tests/cluster; brings the cluster up if
#                                                  needed (and down again if it did)
#   bash scripts/test.sh --no-cluster [PYTEST ARGS]  everything but the cluster tier
# PSG_CONFORMANCE_ARGS: extra arguments of `scripts/cluster.sh conformance` (e.g. --procs 2);
# PSG_CONFORMANCE_ANP_ARGS: of `scripts/cluster.sh conformance-anp` (e.g. --backend iptables).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=all
case "${1:-}" in
  --cluster) mode=cluster; shift ;;
  --no-cluster) mode=local; shift ;;
esac

bash scripts/setup.sh

# The cluster is taken down on any exit once this script has brought it up.
cluster_started=0
cluster_down() {
  if [ "$cluster_started" = 1 ]; then
    echo "== cluster down"
    bash scripts/cluster.sh down || echo "test: cluster.sh down failed" >&2
  fi
}
trap cluster_down EXIT

cluster_tier() {
  echo "== cluster up"
  if [ "$mode" = all ] || ! bash scripts/cluster.sh status >/dev/null 2>&1; then
    cluster_started=1
  fi
  local t0=$SECONDS rc=0
  bash scripts/cluster.sh up
  echo "== pytest tests/cluster (podseg on a real Kubernetes)"
  PSG_CLUSTER_REQUIRED=1 .venv/bin/pytest -q -ra -p no:cacheprovider "$@" tests/cluster || rc=$?
  echo "test: cluster tier took $((SECONDS - t0))s"
  return $rc
}

if [ "$mode" = cluster ]; then
  cluster_tier "$@"
  exit $?
fi

echo "== ruff"; .venv/bin/ruff check agent testbed tests scripts
echo "== ruff format"; .venv/bin/ruff format --check agent testbed tests scripts
echo "== mypy --strict agent testbed"; .venv/bin/mypy
echo "== podseg-cni: go test, build into .build/cni (the e2e tests run it)"
[ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"
bash deploy/cni/build.sh --test .build/cni
echo "== pytest"
failed=0
.venv/bin/pytest -q -ra --ignore=tests/cluster "$@" tests || failed=1
[ "$mode" = local ] && exit $failed

cluster_tier "$@" || failed=1
echo "== conformance: upstream NetworkPolicy e2e specs with podseg installed"
# shellcheck disable=SC2086  # PSG_CONFORMANCE_ARGS: words on purpose
bash scripts/cluster.sh conformance ${PSG_CONFORMANCE_ARGS:-} || failed=1
echo "== conformance-anp: upstream network-policy-api suite (ClusterNetworkPolicy) with podseg installed"
# shellcheck disable=SC2086  # PSG_CONFORMANCE_ANP_ARGS: words on purpose
bash scripts/cluster.sh conformance-anp ${PSG_CONFORMANCE_ANP_ARGS:-} || failed=1
exit $failed
