#!/usr/bin/env bash
# The podseg real-cluster test bed: a one-node Kubernetes (v1.36.3, built from Go
# module pins by scripts/cluster/build.sh) running inside network namespaces this
# script owns, reachable from the root namespace only through a loopback relay.
#
#   bash scripts/cluster.sh up            build what is missing, start, wait for the node Ready,
#                                         install the network-policy-api CRDs (deploy/crds/)
#   bash scripts/cluster.sh down          stop everything by pid, remove namespaces, mounts, cgroups, state
#   bash scripts/cluster.sh status        each component with pid and running/dead
#   bash scripts/cluster.sh conformance   upstream NetworkPolicy e2e specs (see --help of that command)
#   bash scripts/cluster.sh conformance-anp   network-policy-api conformance (admin tiers; see its --help)
#   bash scripts/cluster.sh smoke         pods, pod-to-pod, ClusterIP Service, kubectl exec
#   bash scripts/cluster.sh podseg install|uninstall|status   podseg from this checkout, as a user installs it
#   bash scripts/cluster.sh peer start|stop|status kube-network-policies|kube-router
#                                         a peer policy enforcer in the node namespaces (cluster/peer.sh)
#   bash scripts/cluster.sh kubectl ARGS  kubectl with the admin kubeconfig
#
# Topology (all addresses in 198.19.0.0/16, all names psg*):
#   netns psg-k8s-net    bridge psgbr0 198.19.0.1/24, forwards between nodes (no uplink)
#   netns psg-k8s-node1  eth0 198.19.0.2/24 (veth into psgbr0), default via 198.19.0.1;
#                        etcd, kube-apiserver, controller-manager, scheduler, containerd,
#                        kubelet, kube-proxy (nftables); pod bridge psgcni0 198.19.128.1/24
#   root namespace       psg-relay 127.0.0.1:36443 -> 198.19.0.2:6443 (no interface, address
#                        or route is added to the root namespace)
# The node's processes also share one private mount namespace ($RUN/ns/mnt) and one
# PID namespace ($RUN/ns/pid: hostPID pods see the node's processes only), so
# container and volume mounts never appear in the machine's mount table.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CL=$HERE/cluster
# shellcheck source=cluster/config.sh
. "$CL/config.sh"
# shellcheck source=cluster/pki.sh
. "$CL/pki.sh"

CGROUP=/$NODE                       # kubelet cgroupRoot; our daemons in $CGROUP/daemons
COMPONENTS="node-init etcd kube-apiserver relay kube-controller-manager kube-scheduler containerd kubelet kube-proxy"

exec 9>&2                            # errors reach the terminal even from a silenced check
say()  { echo "cluster: $*"; }
die()  { echo "cluster: ERROR: $*" >&9; exit 1; }
# fail COMPONENT WHAT: the one-line error of a component that did not come up
fail() { die "$1 $2 (log: $LOGS/$1.log); clean up with: bash scripts/cluster.sh down"; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (namespaces, cgroups, mounts)"; }

innode() { nsenter --net="$NETNS_FILE" --mount="$MNTNS" -- "$@"; }
kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# ---------------------------------------------------------------- processes
pid_of() { [ -f "$PIDS/$1.pid" ] && cat "$PIDS/$1.pid" || true; }

# alive NAME: its recorded pid runs and is ours (command line names our paths),
# so a pid reused after a reboot is never taken for one of ours.
alive() {
  local pid cmd st
  pid=$(pid_of "$1"); [ -n "$pid" ] || return 1
  st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ] || return 1
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  # empty while the process is between two execs (setsid -> sh -> nsenter -> X)
  [ -n "$cmd" ] || return 0
  case "$cmd" in *"$BIN"*|*"$STATE"*|*"$RUN"*) return 0 ;; esac
  return 1
}

# start NAME node|root CMD...: start in the background, log to $LOGS/NAME.log.
# A node process is started by nsenter, which forks to enter the node's PID
# namespace: the pidfile records that child, the command itself.
start() {
  local name=$1 where=$2; shift 2
  local log=$LOGS/$name.log pid
  echo "=== $(date -u +%FT%TZ) $*" >> "$log"
  if [ "$where" = node ]; then
    setsid "$CL/run-in-node.sh" "$CGROUP/daemons" "$NETNS_FILE" "$MNTNS" "$PIDNS" "$@" >> "$log" 2>&1 < /dev/null &
    pid=$(forked_child $!)
  else
    setsid "$@" >> "$log" 2>&1 < /dev/null &
    pid=$!
    exec_settled "$pid"
  fi
  echo "$pid" > "$PIDS/$name.pid"
}

# exec_settled PID: wait (up to 5 s) until the background subshell PID has exec'd,
# so alive() never judges it by this script's own command line
exec_settled() {
  local me deadline=$((SECONDS + 5))
  me=$(readlink "/proc/$$/exe")
  while [ "$(readlink "/proc/$1/exe" 2>/dev/null)" = "$me" ] && [ $SECONDS -lt $deadline ]; do
    sleep 0.02
  done
}

# forked_child PID: the child nsenter PID forked into the node's PID namespace
# (PID itself if it has exited or not forked within 5 s; alive() judges it then)
forked_child() {
  local pid=$1 kids deadline=$((SECONDS + 5))
  while [ -d "/proc/$pid" ]; do
    kids=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null || true)
    if [ -n "$kids" ]; then echo "${kids%% *}"; return 0; fi
    [ $SECONDS -lt $deadline ] || break
    sleep 0.05
  done
  echo "$pid"
}

# wait_for NAME SECONDS WHAT CMD...: poll CMD until it succeeds; fail early if
# NAME's process died, or after SECONDS.
wait_for() {
  local name=$1 secs=$2 what=$3; shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    alive "$name" || fail "$name" "exited before $what"
    [ $SECONDS -lt $deadline ] || fail "$name" "not $what within ${secs}s"
    sleep 0.5
  done
}

# ---------------------------------------------------------------- prerequisites
ensure_packages() {
  local missing=() p
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" > "$LOGS/apt.log" 2>&1 || {
    apt-get update > "$LOGS/apt.log" 2>&1 &&
    apt-get install -y --no-install-recommends "${missing[@]}" >> "$LOGS/apt.log" 2>&1
  } || die "apt-get install ${missing[*]} failed (log: $LOGS/apt.log)"
  # Debian's containerd ships a service; PID 1 is not systemd here (and policy-rc.d
  # may forbid starts), so nothing should run, but say so if a system one does.
  local p2
  for p2 in /proc/[0-9]*; do
    [ "$(readlink "$p2/exe" 2>/dev/null)" = /usr/bin/containerd ] || continue
    tr '\0' ' ' < "$p2/cmdline" | grep -q -- "$STATE" ||
      say "warning: a containerd not started by us runs (pid ${p2#/proc/}); ours uses its own socket"
  done
}

check_kernel() {
  [ -d /sys/fs/cgroup/pids ] || die "no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids (this script expects the cgroup v1 layout, see design.md section 5)"
  grep -qw overlay /proc/filesystems || die "no overlay filesystem in the kernel"
}

# ---------------------------------------------------------------- namespaces
setup_netns() {
  ip netns add "$NET_NS"
  ip netns add "$NODE"
  ip -n "$NET_NS" link set lo up
  ip -n "$NODE" link set lo up
  ip -n "$NET_NS" link add "$NET_BRIDGE" type bridge
  ip -n "$NET_NS" addr add "$NET_GW/$NODE_PREFIX" dev "$NET_BRIDGE"
  ip -n "$NET_NS" link set "$NET_BRIDGE" up
  # the veth is made inside psg-k8s-net with its peer moved straight into the
  # node namespace: it never exists in the root namespace
  ip -n "$NET_NS" link add n1 type veth peer name eth0 netns "$NODE"
  ip -n "$NET_NS" link set n1 master "$NET_BRIDGE" up
  ip -n "$NODE" addr add "$NODE_IP/$NODE_PREFIX" dev eth0
  ip -n "$NODE" link set eth0 up
  ip -n "$NODE" route add default via "$NET_GW"
  # per-namespace sysctls (net.* under /proc/sys is the opener's namespace)
  ip netns exec "$NET_NS" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$NODE" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$NODE" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
    say "warning: net.bridge.bridge-nf-call-iptables not available in $NODE (Service traffic between pods on one bridge may fail)"
}

# One mount namespace for all node processes: kubelet and containerd must see
# each other's mounts (volumes, rootfs, pod netns files), the machine must not.
# It is a slave of the root namespace (netns files made later still show up in
# it) and is kept alive by a bind mount of its nsfs file at $MNTNS.
setup_mntns() {
  mkdir -p "$RUN/ns"
  if ! findmnt -n "$RUN/ns" >/dev/null; then
    mount --bind "$RUN/ns" "$RUN/ns"
    mount --make-private "$RUN/ns"
  fi
  touch "$MNTNS"
  unshare --mount="$MNTNS" --propagation slave true
}

# One PID namespace for all node processes, as on a machine of its own: pods with
# hostPID (podseg's agent and cleanup) see the node's processes under /proc, never
# the machine's (whose network namespaces belong to other test runs, or are the
# machine's own). Its PID 1 is psg-pause (reaps orphans: containerd's shims),
# in the node's network and mount namespaces; the namespace is kept at $PIDNS.
# Inside the node's mount namespace /proc is then that namespace's own.
setup_pidns() {
  touch "$PIDNS"
  setsid "$CL/run-in-node.sh" "$CGROUP/daemons" "$NETNS_FILE" - - \
    unshare --pid="$PIDNS" --fork --kill-child -- nsenter --mount="$MNTNS" -- "$BIN/psg-pause" \
    >> "$LOGS/node-init.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/node-init.pid"
  local deadline=$((SECONDS + 10))
  until findmnt -n "$PIDNS" >/dev/null 2>&1 && [ -n "$(cat "/proc/$!/task/$!/children" 2>/dev/null)" ]; do
    alive node-init || fail node-init "exited before making the node's PID namespace"
    [ $SECONDS -lt $deadline ] || fail node-init "no PID namespace at $PIDNS within 10s"
    sleep 0.05
  done
  nsenter --mount="$MNTNS" --pid="$PIDNS" -- mount -t proc proc /proc ||
    fail node-init "could not mount the node's /proc"
}

# The node's mount namespace, continued (needs the node's own /proc).
setup_node_mounts() {
  # The kubelet checks six machine-wide sysctls at start and writes the values it
  # wants (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1, ...).
  # In our mount namespace those /proc/sys files are shadowed by files with the
  # wanted values; with protectKernelDefaults the kubelet then neither writes
  # nor fails, and the machine's own values stay as they are.
  local kv k v f
  mkdir -p "$RUN/sysctl"
  for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
            kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    k=${kv%=*}; v=${kv#*=}; f=$RUN/sysctl/${k//\//.}
    echo "$v" > "$f"
    nsenter --mount="$MNTNS" -- mount --bind -o ro "$f" "/proc/sys/$k"
  done
  # /run, /var/lib and /var/log are private too (fixed paths of containerd, its
  # shims, runc, the CNI cache and the kubelet: see mntns-init.sh)
  nsenter --mount="$MNTNS" -- "$CL/mntns-init.sh" "$STATE/shadow/" "$STATE" "$RUN" "$PSG_CLUSTER_CACHE" "$LOGS"
  node_cni_dirs
}

# The node's /etc/cni/net.d and /opt/cni/bin, where containerd reads its CNI configuration and
# plugins and where podseg's DaemonSet (hostPaths of those paths) chains podseg-cni, as on a
# real node. Inside the node's mount namespace they are bind mounts of $CNI_CONF_DIR and
# $CNI_BIN_DIR (Debian's plugins copied in), so nothing is written to the machine's own.
# A missing mount point is made in an overlay of its nearest existing parent (upper in our
# state), never on the machine's filesystem.
node_cni_dirs() {
  mkdir -p "$CNI_CONF_DIR" "$CNI_BIN_DIR"
  cp -a "$SYSTEM_CNI_PLUGINS/." "$CNI_BIN_DIR/"
  nsenter --mount="$MNTNS" -- sh -eu -c '
    shadow=$1; shift
    while [ $# -ge 2 ]; do
      src=$1 dest=$2; shift 2
      p=$dest
      while [ ! -e "$p" ]; do p=$(dirname "$p"); done
      if [ "$p" != "$dest" ]; then
        [ "$p" != / ] || { echo "no parent of $dest to overlay" >&2; exit 1; }
        o=$shadow/overlay$(echo "$p" | tr / _)
        mkdir -p "$o/upper" "$o/work"
        mount -t overlay overlay -o "lowerdir=$p,upperdir=$o/upper,workdir=$o/work" "$p"
        mkdir -p "$dest"
      fi
      mount --bind "$src" "$dest"
    done' sh "$STATE/shadow" "$CNI_CONF_DIR" "$NODE_CNI_CONF_DIR" "$CNI_BIN_DIR" "$NODE_CNI_BIN_DIR" ||
    fail node-init "could not bind the node's CNI directories"
}

# cgroups: $CGROUP in every v1 hierarchy (the kubelet's cgroupRoot must exist in
# all of them), $CGROUP/daemons in the pids hierarchy for our own processes.
setup_cgroups() {
  local h
  for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    [ -f "$h/cgroup.procs" ] || continue
    mkdir -p "$h$CGROUP"
    if [ -f "$h/cpuset.cpus" ]; then
      cat "$h/cpuset.cpus" > "$h$CGROUP/cpuset.cpus"
      cat "$h/cpuset.mems" > "$h$CGROUP/cpuset.mems"
    fi
  done
  mkdir -p "/sys/fs/cgroup/pids$CGROUP/daemons"
}

# all pids in our pids cgroup tree (daemons, shims, containers)
cgroup_pids() {
  local d=/sys/fs/cgroup/pids$CGROUP
  [ -d "$d" ] || return 0
  find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

# ---------------------------------------------------------------- configs
render() {  # render TEMPLATE OUT [KEY=VALUE...]: replace @KEY@ (plus the common keys)
  local t=$CL/templates/$1 out=$2; shift 2
  local args=() kv
  for kv in STATE="$STATE" RUN="$RUN" NODE="$NODE" NODE_IP="$NODE_IP" CONTAINERD_SOCK="$CONTAINERD_SOCK" \
            PAUSE_IMAGE="$PAUSE_IMAGE" NODE_CNI_BIN_DIR="$NODE_CNI_BIN_DIR" NODE_CNI_CONF_DIR="$NODE_CNI_CONF_DIR" \
            CLUSTER_CIDR="$CLUSTER_CIDR" CLUSTER_DOMAIN="$CLUSTER_DOMAIN" CNI_BRIDGE="$CNI_BRIDGE" \
            CLUSTER_DNS="$CLUSTER_DNS" "$@"; do
    args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
  done
  sed "${args[@]}" "$t" > "$out"
  ! grep -q '@[A-Z_]*@' "$out" || die "unreplaced placeholder in $out: $(grep -o '@[A-Z_]*@' "$out" | head -1)"
}

write_configs() {
  mkdir -p "$CNI_CONF_DIR" "$STATE/cni/ipam" "$STATE/kubelet" "$RUN/containerd"
  render containerd.toml "$STATE/containerd.toml"
  render kubelet.yaml "$STATE/kubelet.yaml"
  render kube-proxy.yaml "$STATE/kube-proxy.yaml"
  # Pods get this resolver: the (reserved, unserved) cluster DNS Service address.
  # No CoreDNS runs; lookups fail fast inside our namespaces and go nowhere else.
  printf 'nameserver %s\noptions ndots:1 timeout:1 attempts:1\n' "$CLUSTER_DNS" > "$STATE/resolv.conf"
}

# ---------------------------------------------------------------- components
start_etcd() {
  start etcd node "$BIN/etcd" --name "$NODE" --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster "$NODE=http://127.0.0.1:2380" --listen-metrics-urls http://127.0.0.1:2381 \
    --unsafe-no-fsync --log-level warn
  # --unsafe-no-fsync: a throw-away test cluster on a disk shared with other test
  # runs; fsync latency would only slow every write.
  wait_for etcd 60 "healthy" innode curl -sf http://127.0.0.1:2379/health
}

start_apiserver() {
  local p=$STATE/pki
  start kube-apiserver node "$BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port="$API_PORT_IN_NODE" \
    --etcd-servers=http://127.0.0.1:2379 \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --client-ca-file="$p/ca.crt" --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" --kubelet-client-key="$p/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$p/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --authorization-mode=Node,RBAC --allow-privileged=true --profiling=false
}

start_relay() {
  start relay root "$BIN/psg-relay" -listen "127.0.0.1:$PSG_CLUSTER_API_PORT" \
    -netns "$NETNS_FILE" -to "$NODE_IP:$API_PORT_IN_NODE"
}

start_controllers() {
  local p=$STATE/pki k=$STATE/controller-manager.kubeconfig s=$STATE/scheduler.kubeconfig
  start kube-controller-manager node "$BIN/kube-controller-manager" \
    --kubeconfig="$k" --authentication-kubeconfig="$k" --authorization-kubeconfig="$k" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --root-ca-file="$p/ca.crt" --service-account-private-key-file="$p/sa.key" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size="$NODE_CIDR_MASK" \
    --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
  start kube-scheduler node "$BIN/kube-scheduler" \
    --kubeconfig="$s" --authentication-kubeconfig="$s" --authorization-kubeconfig="$s" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
}

start_containerd() {
  start containerd node /usr/bin/containerd --config "$STATE/containerd.toml"
  wait_for containerd 60 "serving its socket" ctr --address "$CONTAINERD_SOCK" version
  ( . "$CL/image.sh"; standard_images ) >> "$LOGS/images.log" 2>&1 ||
    fail images "could not be built or imported"
}

start_kubelet() {
  start kubelet node "$BIN/kubelet" --config="$STATE/kubelet.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" --node-ip="$NODE_IP" --hostname-override="$NODE" --v=1
}

start_kube_proxy() {
  start kube-proxy node "$BIN/kube-proxy" --config="$STATE/kube-proxy.yaml" --v=1
  wait_for kube-proxy 60 "syncing its nftables rules" innode nft list table ip kube-proxy
}

# The node's pod CIDR is assigned by the controller-manager after the kubelet
# registers; the CNI config (and the router's route to the pods) follow from it.
configure_pod_network() {
  local cidr="" deadline=$((SECONDS + 120))
  while [ -z "$cidr" ]; do
    alive kubelet || fail kubelet "exited before registering the node"
    [ $SECONDS -lt $deadline ] || fail kubelet "node $NODE not registered with a pod CIDR within 120s"
    cidr=$(kc get node "$NODE" -o 'jsonpath={.spec.podCIDR}' 2>/dev/null || true)
    [ -n "$cidr" ] || sleep 0.5
  done
  local base=${cidr%/*}
  local gw=${base%.*}.$(( ${base##*.} + 1 ))
  render cni.conflist "$CNI_CONF_DIR/10-psg.conflist" POD_CIDR="$cidr" POD_GW="$gw"
  ip -n "$NET_NS" route replace "$cidr" via "$NODE_IP"
  say "node $NODE pod CIDR $cidr"
}

# the API through the relay; a dead relay is its own error, not the apiserver's
api_ready() {
  alive relay || fail relay "exited (is 127.0.0.1:$PSG_CLUSTER_API_PORT taken? PSG_CLUSTER_API_PORT picks another)"
  kc get --raw /readyz
}

node_ready() {
  [ "$(kc get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

all_alive() {
  local c
  for c in $COMPONENTS; do alive "$c" || return 1; done
}

anything_left() {
  [ -e "$NETNS_FILE" ] || [ -e "/run/netns/$NET_NS" ] || [ -d "$PIDS" ] || [ -d "/sys/fs/cgroup/pids$CGROUP" ] ||
    findmnt -n "$PIDNS" >/dev/null 2>&1 ||
    findmnt -n "$RUN/ns" >/dev/null 2>&1
}

# The network-policy-api CRDs of deploy/crds/: podseg watches ClusterNetworkPolicy,
# AdminNetworkPolicy and BaselineAdminNetworkPolicy where they are served, as here.
install_admin_crds() {
  kc apply -k "$HERE/../deploy/crds" >/dev/null || die "kubectl apply -k deploy/crds/ failed"
  wait_established 60 clusternetworkpolicies.policy.networking.k8s.io \
    adminnetworkpolicies.policy.networking.k8s.io \
    baselineadminnetworkpolicies.policy.networking.k8s.io ||
    die "the network-policy-api CRDs are not established"
}

# Polls each CRD's Established condition until the deadline (seconds). `kubectl wait` fails at
# once on a CRD whose status has no conditions yet, which a just-created CRD can show.
wait_established() {
  local deadline=$((SECONDS + $1)) crd state
  shift
  for crd in "$@"; do
    while :; do
      state=$(kc get crd "$crd" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null || true)
      [ "$state" = True ] && break
      [ "$SECONDS" -lt "$deadline" ] || { echo "cluster: CRD $crd not established (condition: '${state:-none}')" >&2; return 1; }
      sleep 0.5
    done
  done
}

cmd_up() {
  need_root
  local t0=$SECONDS
  mkdir -p "$LOGS"
  if all_alive && node_ready; then
    install_admin_crds
    say "already up (node $NODE Ready); kubeconfig: $KUBECONFIG_ADMIN"
    return 0
  fi
  if anything_left; then
    say "a previous cluster is partly there; taking it down first"
    cmd_down
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PSG_CLUSTER_API_PORT") 2>/dev/null; then
    die "127.0.0.1:$PSG_CLUSTER_API_PORT (the API relay's port) is already in use; set PSG_CLUSTER_API_PORT"
  fi
  ensure_packages
  check_kernel
  # PSG_CLUSTER_NO_BUILD=1: use the binaries in the cache as they are
  if [ "${PSG_CLUSTER_NO_BUILD:-0}" = 1 ]; then
    [ -x "$BIN/psg-kube" ] || die "PSG_CLUSTER_NO_BUILD=1 but $BIN/psg-kube is missing"
  else
    bash "$CL/build.sh"
  fi
  mkdir -p "$LOGS" "$PIDS" "$STATE" "$RUN"
  rm -f "$LOGS"/*.log
  say "namespaces $NET_NS, $NODE; mount namespace $MNTNS; cgroup $CGROUP"
  setup_netns
  setup_mntns
  setup_cgroups
  setup_pidns
  setup_node_mounts
  make_pki
  write_configs
  say "starting etcd";               start_etcd
  say "starting kube-apiserver";     start_apiserver
  start_relay
  wait_for kube-apiserver 180 "ready (via relay 127.0.0.1:$PSG_CLUSTER_API_PORT)" api_ready
  say "starting controller-manager, scheduler"; start_controllers
  say "starting containerd and importing images"; start_containerd
  say "starting kubelet";            start_kubelet
  configure_pod_network
  say "starting kube-proxy (nftables)"; start_kube_proxy
  wait_for kube-controller-manager 60 "healthy" innode curl -skf https://127.0.0.1:10257/healthz
  wait_for kube-scheduler 60 "healthy" innode curl -skf https://127.0.0.1:10259/healthz
  wait_for kubelet 180 "reporting node $NODE Ready" node_ready
  say "installing the network-policy-api CRDs (deploy/crds/)"; install_admin_crds
  say "up in $((SECONDS - t0))s; node $NODE Ready"
  echo "$KUBECONFIG_ADMIN"
}

# ---------------------------------------------------------------- down
# stop_pids SECONDS PID...: SIGTERM, wait up to SECONDS, then SIGKILL
stop_pids() {
  local secs=$1; shift
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  local deadline=$((SECONDS + secs)) p left
  while :; do
    left=()
    for p in "$@"; do [ -d "/proc/$p" ] && left+=("$p"); done
    [ ${#left[@]} -eq 0 ] && return 0
    [ $SECONDS -lt $deadline ] || break
    sleep 0.2
  done
  kill -KILL "${left[@]}" 2>/dev/null || true
}

cmd_down() {
  need_root
  local c pid pids=()
  # 1. the relay, kube-proxy and the kubelet first (no new pods), then the rest
  for c in relay kube-proxy kubelet; do alive "$c" && pids+=("$(pid_of "$c")"); done
  stop_pids 10 ${pids[@]+"${pids[@]}"}
  pids=()
  for c in $COMPONENTS; do [ "$c" != node-init ] && alive "$c" && pids+=("$(pid_of "$c")"); done
  stop_pids 15 ${pids[@]+"${pids[@]}"}
  # 2. whatever is left in our cgroup: containerd shims, containers
  local deadline=$((SECONDS + 20)) left
  while left=$(cgroup_pids) && [ -n "$left" ]; do
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    [ $SECONDS -lt $deadline ] || { say "warning: processes left in cgroup $CGROUP: $(echo $left)"; break; }
    sleep 0.2
  done
  rm -rf "$PIDS"
  # 3. the mount namespace: dropping its last reference takes every mount made
  #    in it (overlay rootfs, volumes, pod netns files) with it
  if findmnt -n "$MNTNS" >/dev/null 2>&1; then umount "$MNTNS" || umount -l "$MNTNS"; fi
  if findmnt -n "$PIDNS" >/dev/null 2>&1; then umount "$PIDNS" || umount -l "$PIDNS"; fi
  if findmnt -n "$RUN/ns" >/dev/null 2>&1; then umount "$RUN/ns" || umount -l "$RUN/ns"; fi
  # 4. network namespaces (only our psg-k8s ones)
  for c in "$NODE" "$NET_NS"; do
    [ -e "/run/netns/$c" ] && { ip netns del "$c" || say "warning: could not delete netns $c"; }
  done
  # 5. cgroups, deepest first, in every hierarchy
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -d "${h%/}$CGROUP" ] && find "${h%/}$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -d "${h%/}$CGROUP" ] && say "warning: cgroup ${h%/}$CGROUP not removed"
  done
  # 6. state and runtime files (never across a mount point)
  for c in "$STATE" "$RUN"; do
    if grep -q " ${c}[/ ]" /proc/self/mountinfo; then
      say "warning: mounts left under $c, not removing it: $(grep -o " ${c}[^ ]*" /proc/self/mountinfo | head -3 | tr '\n' ' ')"
    else
      rm -rf --one-file-system "$c"
    fi
  done
  say "down"
}

# ---------------------------------------------------------------- status
cmd_status() {
  local c pid state rc=0
  printf '%-26s %-8s %s\n' COMPONENT PID STATE
  for c in $COMPONENTS; do
    pid=$(pid_of "$c")
    if alive "$c"; then state=running; else state=${pid:+dead}; state=${state:-stopped}; rc=1; fi
    printf '%-26s %-8s %s\n' "$c" "${pid:--}" "$state"
  done
  for c in "$NET_NS" "$NODE"; do
    [ -e "/run/netns/$c" ] && state=present || state=absent
    printf '%-26s %-8s %s\n' "netns $c" - "$state"
  done
  findmnt -n "$MNTNS" >/dev/null 2>&1 && state=present || state=absent
  printf '%-26s %-8s %s\n' "mount namespace" - "$state ($MNTNS)"
  if [ "$rc" = 0 ]; then
    node_ready && state=Ready || state=NotReady
    printf '%-26s %-8s %s\n' "node $NODE" - "$state"
    echo "kubeconfig: $KUBECONFIG_ADMIN   logs: $LOGS   pidfiles: $PIDS"
  fi
  return $rc
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    smoke) shift; exec bash "$CL/smoke.sh" "$@" ;;
    conformance) shift; exec bash "$CL/conformance.sh" "$@" ;;
    conformance-anp) shift; exec bash "$CL/conformance-anp.sh" "$@" ;;
    podseg) shift; exec bash "$CL/podseg.sh" "$@" ;;
    peer) shift; exec bash "$CL/peer.sh" "$@" ;;
    kubectl) shift; kc "$@" ;;
    build) shift; bash "$CL/build.sh" "$@" ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
  esac
fi
