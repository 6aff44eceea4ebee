#!/bin/sh
# run-in-node.sh CGROUP_PATH NETNS_FILE MNTNS_FILE PIDNS_FILE CMD [ARGS...]
# Join the pids cgroup CGROUP_PATH (so that `down` finds this process and all it
# starts, e.g. containerd's shims), then exec CMD inside the node's network, mount
# and PID namespaces; a namespace given as "-" is not entered.  Used by
# scripts/cluster.sh.  Entering a PID namespace forks (nsenter's child runs CMD
# there; nsenter waits for it), so the caller looks up that child's pid.
set -e
cg=$1 netns=$2 mntns=$3 pidns=$4
shift 4
echo $$ > "/sys/fs/cgroup/pids$cg/cgroup.procs"
set --  "$@"
ns=""
[ "$netns" = - ] || ns="$ns --net=$netns"
[ "$mntns" = - ] || ns="$ns --mount=$mntns"
[ "$pidns" = - ] || ns="$ns --pid=$pidns"
# shellcheck disable=SC2086  # $ns: paths of our own, without spaces
exec nsenter $ns -- "$@"
