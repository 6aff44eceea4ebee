#!/usr/bin/env bash
# Build the podseg test cluster's binaries from the Go module pins in this folder.
#
#   bash scripts/cluster/build.sh [--force]
#
# Output: $PSG_CLUSTER_CACHE/bin (default /var/cache/podseg-cluster/bin):
#   psg-kube   multi-call: kube-apiserver kube-controller-manager kube-scheduler
#              kubelet kube-proxy kubectl etcd (symlinks with those names beside it)
#   e2e.test   upstream e2e suite (go test -c k8s.io/kubernetes/test/e2e)
#   agnhost    upstream test image binary, static
#   ginkgo     ginkgo CLI at the version Kubernetes pins (parallel e2e runs)
#   psg-pause  our pod sandbox process, static
#   psg-relay  our loopback -> node namespace TCP relay
# The module and build caches live beside it (gomod/, gocache/) so that a rebuild
# after a pin change is incremental and nothing lands in the user's own caches.
# Nothing is rebuilt while the hash of the pins (go.mod, go.sum, our Go sources
# and this script) matches bin/.stamp.  Timings go to bin/build-times.tsv and the
# full go output to $PSG_CLUSTER_CACHE/build.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PSG_CLUSTER_CACHE:-/var/cache/podseg-cluster}
bin=$cache/bin
log=$cache/build.log
force=0
[ "${1:-}" = --force ] && force=1

kube_version=$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p; s/^[[:space:]]*k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/go.mod" | head -1)
[ -n "$kube_version" ] || { echo "build: no k8s.io/kubernetes version in $here/go.mod" >&2; exit 1; }

pins_hash() {
  ( cd "$here" && cat go.mod go.sum build.sh $(find cmd -name '*.go' | LC_ALL=C sort) ) | sha256sum | cut -d' ' -f1
}
want=$(pins_hash)
if [ "$force" = 0 ] && [ -f "$bin/.stamp" ] && [ "$(cat "$bin/.stamp")" = "$want" ]; then
  echo "build: binaries up to date in $bin (Kubernetes $kube_version)"
  exit 0
fi

command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "build: no go toolchain in PATH or /usr/local/go/bin" >&2; exit 1; }
mkdir -p "$bin" "$cache/gomod" "$cache/gocache"
export GOMODCACHE=$cache/gomod GOCACHE=$cache/gocache
export CGO_ENABLED=0 GOFLAGS="-p=2 -buildvcs=false -trimpath -mod=readonly" GOTOOLCHAIN=local
: > "$log"
times=$bin/build-times.tsv.new
printf 'step\tseconds\n' > "$times"

# Version stamps the kubelet/apiserver skew checks and `kubectl version` read.
# gitTreeState "archive" is what Kubernetes' own scripts use for a build from a
# source archive; the build date is the release's publication time, so the
# binaries do not change from one build to the next.
info=$(go mod download -json "k8s.io/kubernetes@$kube_version" | sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p')
build_date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info")
major=${kube_version#v}; major=${major%%.*}
minor=${kube_version#v*.}; minor=${minor%%.*}
ldx=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldx+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldx+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=archive -X $pkg.buildDate=$build_date"
done
ldflags="-s -w$ldx"

step() {  # step NAME CMD... : run, time, log, one line of progress
  local name=$1; shift
  local t0=$SECONDS
  printf 'build: %-10s ... ' "$name"
  echo "=== $name: $*" >> "$log"
  if ! "$@" >> "$log" 2>&1; then
    echo "FAILED after $((SECONDS - t0))s (see $log)"
    exit 1
  fi
  printf '%s\t%s\n' "$name" "$((SECONDS - t0))" >> "$times"
  echo "$((SECONDS - t0))s"
}

cd "$here"
echo "build: Kubernetes $kube_version into $bin (log: $log)"
step download go list -f '{{with .Error}}{{.}}{{end}}' -deps -test ./cmd/... k8s.io/kubernetes/test/e2e \
  k8s.io/kubernetes/test/images/agnhost github.com/onsi/ginkgo/v2/ginkgo
step small    go build -ldflags "$ldflags" -o "$bin/" ./cmd/psg-pause ./cmd/psg-relay
step psg-kube go build -ldflags "$ldflags" -o "$bin/" ./cmd/psg-kube
step agnhost  go build -ldflags "$ldflags" -o "$bin/" k8s.io/kubernetes/test/images/agnhost
step ginkgo   go build -ldflags "-s -w" -o "$bin/" github.com/onsi/ginkgo/v2/ginkgo
step e2e.test go test -c -ldflags "$ldflags" -o "$bin/e2e.test" k8s.io/kubernetes/test/e2e

for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd; do
  ln -sfn psg-kube "$bin/$c"
done
mv "$times" "$bin/build-times.tsv"
echo "$want" > "$bin/.stamp"
echo "build: done in ${SECONDS}s; sizes: $(du -sh "$bin" | cut -f1) bin, $(du -sh "$cache/gomod" | cut -f1) module cache, $(du -sh "$cache/gocache" | cut -f1) build cache"
