#!/usr/bin/env bash
# Peer policy enforcers on the test cluster, for the side-by-side race
# (scripts/bench/peer_race.py): each runs as a process inside the node's network, mount
# and PID namespaces (as a node daemon does), never in the machine's, and never two at once.
#
#   bash scripts/cluster.sh peer start kube-network-policies|kube-router
#   bash scripts/cluster.sh peer stop          stop the one that runs, remove its rules, chains,
#                                              sets and credentials from the node namespace
#   bash scripts/cluster.sh peer status        which runs (pid), and what it left in the node
#   bash scripts/cluster.sh peer leftovers     exit 1 if any peer rule, chain, set or table is
#                                              in the node namespace (printed)
#   bash scripts/cluster.sh peer pid           the pid of the running peer (root PID namespace)
#
# Binaries: scripts/cluster/build-peers.sh (from their Go modules, into $BIN).
# kube-network-policies: nftables table `inet kube-network-policies` + nfqueue 100 in the node
#   namespace; in-cluster credentials of the ServiceAccount kube-system/psg-peer (a token in
#   the node mount namespace's /run/secrets/kubernetes.io/serviceaccount). Stopped with SIGINT
#   (its own cleanup deletes the table).
# kube-router: only its network policy controller (--run-firewall; --run-router=false,
#   --run-service-proxy=false: no routes, BGP, IPVS or Service proxy), iptables (nf_tables
#   backend) and ipset in the node namespace, admin-in-node.kubeconfig. On stop its chains
#   (KUBE-ROUTER-*, KUBE-NWPLCY-*, KUBE-POD-FW-*) and sets (KUBE-SRC-*, KUBE-DST-*) are removed
#   by an iptables-save | filter | iptables-restore of each table, then `ipset destroy`.
# podseg must be uninstalled first (bash scripts/cluster.sh podseg uninstall).
set -euo pipefail
PEER_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../cluster.sh
. "$PEER_HERE/../cluster.sh"      # helpers only (start, alive, stop_pids, innode, kc)

PEERS="kube-network-policies kube-router"
SA_DIR=/run/secrets/kubernetes.io/serviceaccount    # inside the node mount namespace
KR_CHAINS='KUBE-ROUTER-|KUBE-NWPLCY-|KUBE-POD-FW-'
KR_SETS='^(inet6:)?(KUBE-SRC-|KUBE-DST-|KUBE-ROUTER-|kube-router-)'
pdie() { echo "peer: ERROR: $*" >&2; exit 1; }
psay() { echo "peer: $*"; }

running() {  # the name of the running peer, if any
  local p
  for p in $PEERS; do alive "peer-$p" && { echo "$p"; return 0; }; done
  return 0
}

knp_token() {
  kc -n kube-system get serviceaccount psg-peer >/dev/null 2>&1 ||
    kc -n kube-system create serviceaccount psg-peer >/dev/null
  kc get clusterrolebinding psg-peer >/dev/null 2>&1 ||
    kc create clusterrolebinding psg-peer --clusterrole=cluster-admin \
      --serviceaccount=kube-system:psg-peer >/dev/null
  local token
  token=$(kc -n kube-system create token psg-peer --duration=24h)
  innode sh -c "mkdir -p $SA_DIR && cat > $SA_DIR/token && echo kube-system > $SA_DIR/namespace" <<< "$token"
  innode cp "$STATE/pki/ca.crt" "$SA_DIR/ca.crt"
}

# nft_queue_supported: a `queue` rule loads in a throw-away table of the node namespace
nft_queue_supported() {
  local ok=0
  innode nft -f - <<'NFT' >/dev/null 2>&1 || ok=1
table inet psg-queue-check {
  chain c { queue num 100 bypass; }
}
NFT
  innode nft delete table inet psg-queue-check >/dev/null 2>&1 || true
  return $ok
}

cmd_start() {
  local name=${1:-} other
  case "$name" in kube-network-policies|kube-router) ;; *) pdie "usage: peer start kube-network-policies|kube-router" ;; esac
  need_root
  kc get --raw /readyz >/dev/null 2>&1 || pdie "the cluster is not up (bash scripts/cluster.sh up)"
  other=$(running)
  [ -z "$other" ] || pdie "$other runs; stop it first (bash scripts/cluster.sh peer stop)"
  ! kc -n podseg-system get daemonset podseg-agent >/dev/null 2>&1 ||
    pdie "podseg is installed; uninstall it first (bash scripts/cluster.sh podseg uninstall)"
  bash "$CL/build-peers.sh" >&2
  mkdir -p "$PIDS"
  if [ "$name" = kube-network-policies ]; then
    nft_queue_supported || pdie "this kernel has no nftables queue expression (CONFIG_NFT_QUEUE; nfqueue from nftables answers ENOENT), which kube-network-policies needs for every policy decision"
    knp_token
    # 9>&-: cluster.sh's copy of stderr, not for the daemon to keep open
    start "peer-$name" node env KUBERNETES_SERVICE_HOST="$NODE_IP" KUBERNETES_SERVICE_PORT="$API_PORT_IN_NODE" \
      "$BIN/kube-network-policies" --hostname-override="$NODE" --metrics-bind-address=127.0.0.1:9080 --v=1 9>&-
    wait_for "peer-$name" 60 "programming its nftables table" innode nft list table inet kube-network-policies
  else
    start "peer-$name" node "$BIN/kube-router" --kubeconfig="$STATE/admin-in-node.kubeconfig" \
      --hostname-override="$NODE" --service-cluster-ip-range="$SERVICE_CIDR" --run-firewall=true --run-router=false --run-service-proxy=false \
      --enable-ipv4=true --enable-ipv6=false --metrics-port=0 --health-port=20244 --v=1 9>&-
    wait_for "peer-$name" 60 "programming its iptables chains" innode iptables -w 5 -S KUBE-ROUTER-FORWARD
  fi
  psay "started $name (pid $(pid_of "peer-$name"), log $LOGS/peer-$name.log)"
}

# what any peer left in the node namespace, one line each
leftovers() {
  local t saved
  innode nft list tables 2>/dev/null | grep -E 'kube-network-policies' || true
  local t
  for t in filter nat mangle raw; do
    saved=$(innode iptables-save -t "$t" 2>/dev/null || true)
    grep -E "$KR_CHAINS|KUBE-SRC-|KUBE-DST-" <<< "$saved" | sed "s/^/$t: /" || true
  done
  innode ipset list -n 2>/dev/null | grep -E "$KR_SETS" | sed 's/^/ipset: /' || true
  innode sh -c "[ ! -e $SA_DIR ] || echo 'credentials: $SA_DIR'"
}

clean_kube_router() {
  local t saved s
  for t in filter nat mangle raw; do
    saved=$(innode iptables-save -t "$t" 2>/dev/null || true)   # whole, then grep: no SIGPIPE
    grep -qE "$KR_CHAINS" <<< "$saved" || continue
    grep -vE "^:($KR_CHAINS)|^-A ($KR_CHAINS)|-j ($KR_CHAINS)" <<< "$saved" | innode iptables-restore -w 5
  done
  for s in $(innode ipset list -n 2>/dev/null | grep -E "$KR_SETS" || true); do
    innode ipset destroy "$s"
  done
}

cmd_stop() {
  need_root
  local name pid
  name=$(running)
  if [ -n "$name" ]; then
    pid=$(pid_of "peer-$name")
    if [ "$name" = kube-network-policies ]; then
      kill -INT "$pid" 2>/dev/null || true     # its cleanup runs on SIGINT (SIGTERM skips it)
    else
      kill -TERM "$pid" 2>/dev/null || true
    fi
    local deadline=$((SECONDS + 15))
    while [ -d "/proc/$pid" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    stop_pids 1 "$pid"
    psay "stopped $name (pid $pid)"
  fi
  rm -f "$PIDS"/peer-*.pid
  # whatever either left: a crash, a SIGKILL, or (kube-router) by design
  innode nft delete table inet kube-network-policies 2>/dev/null || true
  clean_kube_router
  innode rm -rf /run/secrets
  kc delete clusterrolebinding psg-peer --ignore-not-found >/dev/null 2>&1 || true
  kc -n kube-system delete serviceaccount psg-peer --ignore-not-found >/dev/null 2>&1 || true
  local left
  left=$(leftovers)
  [ -z "$left" ] || pdie "left in $NODE after stop: $left"
  psay "nothing of a peer left in $NODE"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  status) n=$(running); echo "running: ${n:-none}${n:+ (pid $(pid_of "peer-$n"))}"; leftovers ;;
  leftovers) left=$(leftovers); [ -z "$left" ] || { echo "$left"; exit 1; } ;;
  pid) n=$(running); [ -n "$n" ] || exit 1; pid_of "peer-$n" ;;
  *) sed -n '2,26p' "$0" >&2; exit 2 ;;
esac
