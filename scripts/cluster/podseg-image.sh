#!/usr/bin/env bash
# Build podseg's image for the test cluster from the repository's own build definition, with
# no container registry and no container engine, and import it into the cluster's containerd.
#
#   bash scripts/cluster/podseg-image.sh build    # build (or reuse) the archive; print its reference
#   bash scripts/cluster/podseg-image.sh import   # build, then import into the running cluster
#   bash scripts/cluster/podseg-image.sh ref      # the reference the current sources give (no build)
#
# How, step by step (the Dockerfile's single RUN is step 3):
#   1. a Debian bookworm root filesystem: `debootstrap --variant=minbase` from the Debian mirror
#      ($PSG_DEBIAN_MIRROR), with the apt sources and policy-rc.d of debian:bookworm-slim;
#      cached as a tar keyed by suite, mirror and debootstrap version;
#   2. the build context the Dockerfile gets (.dockerignore: pyproject.toml, README.md, agent/,
#      scripts/image/build-rootfs.sh) copied into it;
#   3. `chroot ROOTFS sh build-rootfs.sh SRC`, the same script the Dockerfile runs, inside a
#      private mount namespace (/proc/sys read-only, so no package script can change a sysctl
#      of the machine); the context is removed again;
#   4. an OCI archive with ENV, ENTRYPOINT, CMD and LABEL read from the Dockerfile
#      (dockerfile-config.py), named $PODSEG_IMAGE_REPO:<version>-<hash of every input>.
# The archive is cached in $PSG_CLUSTER_CACHE/podseg-image/ under that hash: unchanged sources
# import in seconds. Log: $PSG_CLUSTER_LOGS/podseg-image.log.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=config.sh
. "$here/config.sh"
: "${PSG_DEBIAN_MIRROR:=http://deb.debian.org/debian}"
: "${PSG_DEBIAN_SECURITY:=http://deb.debian.org/debian-security}"
suite=bookworm
dir=$PSG_CLUSTER_CACHE/podseg-image
log=$LOGS/podseg-image.log
work=""

die() { echo "podseg-image: ERROR: $* (log: $log)" >&2; exit 1; }
say() { echo "podseg-image: $*" >&2; }

# The build context, as .dockerignore defines it (checked by tests/cluster/test_image_build.py).
context_files() {
  (cd "$repo" && { echo pyproject.toml; echo README.md; echo scripts/image/build-rootfs.sh;
                   find agent -name __pycache__ -prune -o -type f -print;
                   find deploy/cni -type f -print; } | LC_ALL=C sort)
}

base_key() {
  echo "$suite minbase $PSG_DEBIAN_MIRROR $PSG_DEBIAN_SECURITY $(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null)" \
    "$(sed -n '/^write_base_config()/,/^}/p' "$0")" | sha256sum | cut -c1-16
}

input_hash() {
  {
    base_key
    (cd "$repo" && sha256sum Dockerfile .dockerignore)
    sha256sum "$here/podseg-image.sh" "$here/dockerfile-config.py" "$here/oci-image.py"
    context_files | (cd "$repo" && xargs -d '\n' sha256sum)
  } | sha256sum | cut -c1-12
}

image_ref() {
  local version
  version=$(sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' "$repo/agent/__init__.py")
  [ -n "$version" ] || die "no __version__ in agent/__init__.py"
  echo "$PODSEG_IMAGE_REPO:$version-$(input_hash)"
}

# What debian:bookworm-slim has and debootstrap does not write: deb822 sources with the
# updates and security suites, and a policy-rc.d that keeps package scripts from starting
# services.
write_base_config() {
  local r=$1
  rm -f "$r/etc/apt/sources.list"
  cat > "$r/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $PSG_DEBIAN_MIRROR
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $PSG_DEBIAN_SECURITY
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"
  chmod 755 "$r/usr/sbin/policy-rc.d"
  : > "$r/etc/resolv.conf"
  rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"* "$r/dev/"*
}

# base_tar: the cached minbase root filesystem as a tar (numeric owners, devices, links)
base_tar() {
  local tar=$dir/base-$suite-$(base_key).tar
  if [ -f "$tar" ]; then echo "$tar"; return 0; fi
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  local work t0=$SECONDS
  work=$(mktemp -d "$dir/base.XXXXXX")
  say "debootstrap --variant=minbase $suite from $PSG_DEBIAN_MIRROR"
  # debootstrap mounts /proc and /sys inside the target while it installs: keep those mounts
  # in a private mount namespace, gone with it even if debootstrap fails half-way.
  if ! unshare --mount --propagation private -- \
       debootstrap --variant=minbase "$suite" "$work/rootfs" "$PSG_DEBIAN_MIRROR" >> "$log" 2>&1; then
    rm -rf --one-file-system "$work"
    die "debootstrap of $suite from $PSG_DEBIAN_MIRROR failed"
  fi
  write_base_config "$work/rootfs"
  tar -C "$work/rootfs" --numeric-owner -cpf "$tar.tmp" . >> "$log" 2>&1 || die "could not archive the base"
  mv "$tar.tmp" "$tar"
  rm -rf --one-file-system "$work"
  say "base root filesystem in $((SECONDS - t0))s: $tar ($(du -m "$tar" | cut -f1) MB)"
  echo "$tar"
}

# chroot_build ROOTFS: step 3, in a private mount namespace (mounts vanish with it)
chroot_build() {
  local r=$1 ca=""
  # The install script fetches wheels from PyPI; a machine that reaches it through a
  # TLS-intercepting proxy trusts that proxy's CA in its own bundle: lend it for the build.
  [ -f /etc/ssl/certs/ca-certificates.crt ] && ca=/etc/ssl/certs/ca-certificates.crt
  cp /etc/resolv.conf "$r/etc/resolv.conf"
  mkdir -p "$r/tmp/podseg-build"
  unshare --mount --propagation private -- sh -euc '
    r=$1 ca=$2
    mount -t proc proc "$r/proc"
    mount --bind "$r/proc/sys" "$r/proc/sys"
    mount -o remount,bind,ro "$r/proc/sys"
    mount --rbind /dev "$r/dev"
    if [ -n "$ca" ]; then
      touch "$r/tmp/podseg-build/ca.crt"
      mount --bind -o ro "$ca" "$r/tmp/podseg-build/ca.crt"
      export PIP_CERT=/tmp/podseg-build/ca.crt
    fi
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 ${PIP_CERT:+PIP_CERT=$PIP_CERT} \
      ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} \
      chroot "$r" sh /tmp/podseg-src/scripts/image/build-rootfs.sh /tmp/podseg-src
  ' sh "$r" "$ca"
  rm -rf "$r/tmp/podseg-src" "$r/tmp/podseg-build" "$r/usr/sbin/policy-rc.d"
  : > "$r/etc/resolv.conf"
}

cmd_build() {
  mkdir -p "$dir" "$LOGS"
  local ref archive
  ref=$(image_ref)
  archive=$dir/podseg-${ref##*:}.tar
  if [ -f "$archive" ]; then
    say "$ref: cached ($archive)"
    echo "$ref"; return 0
  fi
  [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
  : > "$log"
  local t0=$SECONDS base
  base=$(base_tar)
  work=$(mktemp -d "$dir/build.XXXXXX")
  trap 'rm -rf --one-file-system "$work"' EXIT
  mkdir "$work/rootfs"
  tar -C "$work/rootfs" --numeric-owner -xpf "$base"
  mkdir -p "$work/rootfs/tmp/podseg-src"
  context_files | (cd "$repo" && xargs -d '\n' cp --parents -t "$work/rootfs/tmp/podseg-src")
  say "running scripts/image/build-rootfs.sh in the chroot"
  chroot_build "$work/rootfs" >> "$log" 2>&1 || die "scripts/image/build-rootfs.sh failed in the chroot"
  say "building podseg-cni (the Dockerfile's cni stage) into the image"
  PATH="$PATH:/usr/local/go/bin" bash "$repo/deploy/cni/build.sh" "$work/rootfs/usr/local/lib/podseg" \
    >> "$log" 2>&1 || die "deploy/cni/build.sh failed"
  local flags=()
  mapfile -t flags < <(python3 "$here/dockerfile-config.py" "$repo/Dockerfile" \
    --build-arg "REVISION=$(cd "$repo" && git rev-parse HEAD 2>/dev/null || echo unknown)")
  [ ${#flags[@]} -gt 0 ] || die "could not read the image configuration from the Dockerfile"
  python3 "$here/oci-image.py" --rootfs "$work/rootfs" --name "$ref" --mtime 0 "${flags[@]}" \
    --out "$archive" >> "$log" 2>&1 || die "could not write the OCI archive"
  # keep the three newest archives
  ls -t "$dir"/podseg-*.tar 2>/dev/null | tail -n +4 | xargs -r rm -f
  say "$ref built in $((SECONDS - t0))s: $(du -m "$archive" | cut -f1) MB uncompressed ($archive)"
  echo "$ref"
}

cmd_import() {
  local ref
  ref=$(cmd_build)
  # shellcheck source=image.sh
  . "$here/image.sh"
  local have; have=$(ctr_k8s images ls -q 2>/dev/null) ||
    die "the cluster's containerd does not answer ($CONTAINERD_SOCK): bash scripts/cluster.sh up"
  if ! grep -qxF "$ref" <<<"$have"; then
    image_load "$dir/podseg-${ref##*:}.tar" "$ref" || die "import of $ref failed"
    say "$ref imported"
  fi
  echo "$ref"
}

case "${1:-}" in
  build) cmd_build ;;
  import) cmd_import ;;
  ref) image_ref ;;
  *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
