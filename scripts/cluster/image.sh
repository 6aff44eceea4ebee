#!/usr/bin/env bash
# Turn a root filesystem directory into an OCI image and load it into the test
# cluster's containerd (namespace k8s.io, where the kubelet's CRI looks), with
# no registry involved.  Usable as a command or sourced for its functions.
#
#   bash scripts/cluster/image.sh import ROOTFS NAME ENTRYPOINT_JSON [CMD_JSON] [K=V ...]
#       e.g. image.sh import /tmp/rootfs podseg/agent:dev '["/venv/bin/podseg"]' '["agent"]'
#       NAME is stored fully qualified as the kubelet asks for it (docker.io/podseg/agent:dev);
#       pods use it with imagePullPolicy: Never or IfNotPresent.
#   bash scripts/cluster/image.sh standard     # pause, agnhost, busybox for the e2e suite
#   bash scripts/cluster/image.sh list
set -euo pipefail
_img_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=config.sh
. "$_img_here/config.sh"

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# image_archive ROOTFS NAME ENTRYPOINT_JSON CMD_JSON OUT [K=V ...]
image_archive() {
  local rootfs=$1 name=$2 ep=$3 cmd=$4 out=$5; shift 5
  local envs=() e
  for e in "$@"; do envs+=(--env "$e"); done
  mkdir -p "$(dirname "$out")"
  python3 "$_img_here/oci-image.py" --rootfs "$rootfs" --name "$name" \
    --entrypoint "$ep" --cmd "$cmd" --mtime 0 ${envs[@]+"${envs[@]}"} --out "$out" >/dev/null
}

# image_load ARCHIVE NAME: import into containerd (unpacked for the CRI snapshotter)
image_load() {
  local archive=$1 name=$2
  ctr_k8s images import "$archive" >/dev/null
  local have; have=$(ctr_k8s images ls -q)   # (not piped into grep -q: SIGPIPE + pipefail)
  grep -qxF "$name" <<<"$have" || { echo "image: $name missing after import of $archive" >&2; return 1; }
}

# image_ref NAME: the fully qualified name the kubelet will ask for
# (podseg/agent:dev -> docker.io/podseg/agent:dev, busybox -> docker.io/library/busybox:latest)
image_ref() {
  local n=$1 first=${1%%/*}
  case "$n" in */*) ;; *) n=library/$n ;; esac
  case "$first" in *.*|*:*|localhost) [ "$first" != "$1" ] || n=docker.io/$n ;; *) n=docker.io/$n ;; esac
  case "${n##*/}" in *:*|*@*) ;; *) n=$n:latest ;; esac
  echo "$n"
}

# image_import ROOTFS NAME ENTRYPOINT_JSON [CMD_JSON] [K=V ...]
image_import() {
  local rootfs=$1 name ep=$3 cmd=${4:-[]}
  name=$(image_ref "$2")
  shift 3; [ $# -gt 0 ] && shift
  local out
  out=$PSG_CLUSTER_CACHE/images/$(echo "$name" | tr '/:' '__').tar
  image_archive "$rootfs" "$name" "$ep" "$cmd" "$out" "$@"
  image_load "$out" "$name"
  echo "image: $name imported"
}

# A minimal rootfs: busybox-static as /bin/sh etc., passwd/group, tmp.
_base_rootfs() {
  local r=$1
  mkdir -p "$r"/{bin,etc,tmp,proc,sys,dev,root,var/run}
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/busybox"
  local a
  for a in sh ash cat echo ls ps sleep wget nc ip ifconfig hostname env grep sed true false \
           mkdir rm cp mv ln date id kill printf head tail test wc nslookup ping touch uname; do
    ln -sf busybox "$r/bin/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
  : > "$r/etc/hosts"; : > "$r/etc/resolv.conf"
}

# standard_archives: (re)write the archives of the images the cluster and e2e.test
# use, from the built binaries; skipped while bin/.stamp is unchanged.
standard_archives() {
  local dir=$PSG_CLUSTER_CACHE/images stamp
  stamp="$(cat "$BIN/.stamp" 2>/dev/null)-$(sha256sum "$_img_here/image.sh" "$_img_here/oci-image.py" | sha256sum | cut -c1-16)"
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then return 0; fi
  command -v busybox >/dev/null || { echo "image: busybox-static missing (apt-get install busybox-static)" >&2; return 1; }
  local tmp; tmp=$(mktemp -d "${TMPDIR:-/tmp}/psg-images.XXXXXX")
  mkdir -p "$tmp/pause" && cp "$BIN/psg-pause" "$tmp/pause/pause"
  image_archive "$tmp/pause" "$PAUSE_IMAGE" '["/pause"]' '[]' "$dir/pause.tar"
  _base_rootfs "$tmp/agnhost" && cp "$BIN/agnhost" "$tmp/agnhost/agnhost"
  image_archive "$tmp/agnhost" "$AGNHOST_IMAGE" '["/agnhost"]' '["pause"]' "$dir/agnhost.tar"
  _base_rootfs "$tmp/busybox"
  image_archive "$tmp/busybox" "$BUSYBOX_IMAGE" '[]' '["sh"]' "$dir/busybox.tar"
  rm -rf "$tmp"
  echo "$stamp" > "$dir/.stamp"
}

# standard_images: make sure pause, agnhost and busybox are in containerd
standard_images() {
  standard_archives
  local have; have=$(ctr_k8s images ls -q)
  local n
  for n in pause:"$PAUSE_IMAGE" agnhost:"$AGNHOST_IMAGE" busybox:"$BUSYBOX_IMAGE"; do
    grep -qxF "${n#*:}" <<<"$have" || image_load "$PSG_CLUSTER_CACHE/images/${n%%:*}.tar" "${n#*:}"
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    import) shift; [ $# -ge 3 ] || { sed -n '6,8p' "$0" >&2; exit 2; }; image_import "$@" ;;
    standard) standard_images; echo "image: standard images present" ;;
    list) ctr_k8s images ls ;;
    *) sed -n '2,10p' "$0" >&2; exit 2 ;;
  esac
fi
