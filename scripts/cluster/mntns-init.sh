#!/bin/sh
# mntns-init.sh SHADOW_ROOT KEEP_PATH... -- run INSIDE the node's private mount
# namespace by scripts/cluster.sh (nsenter --mount=...), never in the machine's.
#
# The kubelet, containerd, its shims, runc and the CNI plugins write to fixed
# machine paths whatever their configuration says: /run/containerd/s (shim
# sockets), /run/containerd/runc, /run/xtables.lock, /var/lib/cni (CNI result
# cache), /var/lib/kubelet/device-plugins, /var/log/pods, /var/log/containers.
# Here /run, /var/lib and /var/log are replaced by empty directories under
# SHADOW_ROOT, so those writes land in our state and vanish with it; each
# KEEP_PATH (our own state, runtime, cache and log folders) that lies below one
# of them is bound back at its usual path.
# Also shadows the six /proc/sys files the kubelet would write (see cluster.sh).
set -eu
shadow_root=$1; shift
for dir in /run /var/lib /var/log; do
  sh=$shadow_root$(echo "$dir" | tr / _)
  mkdir -p "$sh"
  for keep in "$@"; do
    case "$keep" in
      "$dir"/*) mkdir -p "$sh/${keep#"$dir"/}"; mount --bind "$keep" "$sh/${keep#"$dir"/}" ;;
    esac
  done
  mount --rbind "$sh" "$dir"
done
# Every mount shared within the node, as systemd makes them on a real node (a
# mount that came from the machine's stays a slave of it, so nothing propagates
# back to the machine): containerd refuses HostToContainer propagation from a
# private mount, and with it podseg's agent (hostPath /var/run/netns) sees the
# namespaces the runtime bind-mounts there after the agent started.
mount --make-rshared /
