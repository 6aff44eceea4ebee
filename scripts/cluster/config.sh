# Settings of the podseg test cluster, sourced by scripts/cluster.sh and the
# helper scripts.  Every name it creates on the machine starts with psg; every
# address is in 198.19.0.0/16 (198.18.0.0/16 belongs to the other test tiers).
# Each setting may be overridden from the environment.

: "${PSG_CLUSTER_CACHE:=/var/cache/podseg-cluster}"   # binaries, Go caches, image archives (kept by down)
: "${PSG_CLUSTER_STATE:=/var/lib/podseg-cluster}"     # pki, configs, etcd, containerd, kubelet (removed by down)
: "${PSG_CLUSTER_RUN:=/run/podseg-cluster}"           # pidfiles, sockets, mount namespace (removed by down)
: "${PSG_CLUSTER_LOGS:=/var/log/podseg-cluster}"      # one log per component (kept by down, reset by up)
: "${PSG_CLUSTER_API_PORT:=36443}"                    # 127.0.0.1 port of the API relay in the root namespace

BIN=$PSG_CLUSTER_CACHE/bin
STATE=$PSG_CLUSTER_STATE
RUN=$PSG_CLUSTER_RUN
LOGS=$PSG_CLUSTER_LOGS
PIDS=$RUN/pids

NODE=psg-k8s-node1                 # network namespace, node name, cgroup parent
NET_NS=psg-k8s-net                 # "router" namespace holding the node network bridge
NET_BRIDGE=psgbr0                  # in $NET_NS
NET_GW=198.19.0.1                  # $NET_BRIDGE address, nodes' default gateway
NODE_IP=198.19.0.2                 # node1 eth0, apiserver/kubelet address
NODE_PREFIX=24
CLUSTER_CIDR=198.19.128.0/17       # pods; the controller-manager gives each node a /24
NODE_CIDR_MASK=24
SERVICE_CIDR=198.19.32.0/20
KUBERNETES_SVC_IP=198.19.32.1      # first address of $SERVICE_CIDR
CLUSTER_DNS=198.19.32.10            # reserved for a cluster DNS Service; nothing serves it (no CoreDNS)
CNI_BRIDGE=psgcni0                 # pod bridge inside the node namespace
CLUSTER_DOMAIN=cluster.local
API_PORT_IN_NODE=6443

MNTNS=$RUN/ns/mnt                  # private mount namespace of the node's processes
PIDNS=$RUN/ns/pid                  # PID namespace of the node's processes (PID 1: psg-pause)
NETNS_FILE=/run/netns/$NODE
CONTAINERD_SOCK=$RUN/containerd/containerd.sock
KUBECONFIG_ADMIN=$STATE/admin.kubeconfig
# The node's CNI directories are the usual /etc/cni/net.d and /opt/cni/bin, as on any node
# (podseg's DaemonSet chains podseg-cni there), but only inside the node's mount namespace:
# there they are bind mounts of these folders of our state (node_cni_dirs in cluster.sh).
CNI_CONF_DIR=$STATE/cni/net.d      # the node's /etc/cni/net.d
CNI_BIN_DIR=$STATE/cni/bin         # the node's /opt/cni/bin: Debian's plugins, copied at up
NODE_CNI_CONF_DIR=/etc/cni/net.d
NODE_CNI_BIN_DIR=/opt/cni/bin
SYSTEM_CNI_PLUGINS=/usr/lib/cni    # containernetworking-plugins (bridge, host-local, loopback)

# Image names the manifests use (e2e.test v1.36.3: test/utils/image/manifest.go)
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2
AGNHOST_IMAGE=registry.k8s.io/e2e-test-images/agnhost:2.63.0
BUSYBOX_IMAGE=registry.k8s.io/e2e-test-images/busybox:1.37.0-1
# podseg's own image, built locally (podseg-image.sh), tagged <version>-<hash of its inputs>;
# deploy/ names ghcr.io/podseg/podseg, which the test overlays swap for this.
PODSEG_IMAGE_REPO=localhost/podseg/podseg

# Debian packages the cluster needs (installed by `up` when missing)
APT_PACKAGES="containerd runc containernetworking-plugins busybox-static iproute2 nftables openssl curl util-linux python3 ca-certificates debootstrap"
