#!/bin/sh
# run-in-node.sh CGROUP_PATH NETNS_FILE MNTNS_FILE CMD [ARGS...]
# Join the pids cgroup CGROUP_PATH (so that `down` finds this process and all it
# starts, e.g. containerd's shims), then exec CMD inside the node's network and
# mount namespaces.  Used by scripts/cluster.sh; the pid stays the same through
# every exec, so the caller's $! is CMD's pid.
set -e
cg=$1 netns=$2 mntns=$3
shift 3
echo $$ > "/sys/fs/cgroup/pids$cg/cgroup.procs"
exec nsenter --net="$netns" --mount="$mntns" -- "$@"
