# Certificates and kubeconfigs of the podseg test cluster (sourced by cluster.sh).
# One throw-away CA per `up`; ECDSA P-256 keys (fast to make); all files under
# $STATE/pki.  The API server's serving certificate names 127.0.0.1 (the relay
# in the root namespace), the node address and the kubernetes Service address.

_pki_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

# _pki_cert NAME SUBJECT EXTENSIONS: key + cert signed by the CA, valid 1 year
_pki_cert() {
  local d=$STATE/pki name=$1 subj=$2 ext=$3
  _pki_key "$d/$name.key"
  openssl req -new -key "$d/$name.key" -subj "$subj" -out "$d/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" > "$d/$name.ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null
  rm -f "$d/$name.csr" "$d/$name.ext"
}

_pki_client() { _pki_cert "$1" "$2" $'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth'; }

# _kubeconfig FILE SERVER USER CERTNAME
_kubeconfig() {
  local f=$1 server=$2 user=$3 c=$4 d=$STATE/pki
  cat > "$f" <<KC
apiVersion: v1
kind: Config
clusters:
- name: psg-k8s
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 < "$d/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 < "$d/$c.crt")
    client-key-data: $(base64 -w0 < "$d/$c.key")
contexts:
- name: psg-k8s
  context: {cluster: psg-k8s, user: $user}
current-context: psg-k8s
KC
  chmod 600 "$f"
}

make_pki() {
  local d=$STATE/pki
  [ -f "$d/.done" ] && return 0
  mkdir -p "$d"
  _pki_key "$d/ca.key"
  openssl req -x509 -new -key "$d/ca.key" -subj "/CN=psg-k8s-ca" -days 365 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$d/ca.crt" 2>/dev/null
  _pki_cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:$KUBERNETES_SVC_IP,DNS:localhost,DNS:$NODE,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
  _pki_cert kubelet-serving "/CN=$NODE" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE"
  _pki_client admin "/O=system:masters/CN=psg-admin"
  # the API server's client identity towards kubelets (exec, logs, port-forward)
  _pki_client apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  _pki_client controller-manager "/CN=system:kube-controller-manager"
  _pki_client scheduler "/CN=system:kube-scheduler"
  _pki_client kube-proxy "/CN=system:kube-proxy"
  _pki_client kubelet "/O=system:nodes/CN=system:node:$NODE"
  # ServiceAccount token signing key pair
  _pki_key "$d/sa.key"
  openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  local inside=https://$NODE_IP:$API_PORT_IN_NODE
  _kubeconfig "$STATE/controller-manager.kubeconfig" "$inside" system:kube-controller-manager controller-manager
  _kubeconfig "$STATE/scheduler.kubeconfig" "$inside" system:kube-scheduler scheduler
  _kubeconfig "$STATE/kube-proxy.kubeconfig" "$inside" system:kube-proxy kube-proxy
  _kubeconfig "$STATE/kubelet.kubeconfig" "$inside" "system:node:$NODE" kubelet
  _kubeconfig "$STATE/admin-in-node.kubeconfig" "$inside" psg-admin admin
  _kubeconfig "$KUBECONFIG_ADMIN" "https://127.0.0.1:$PSG_CLUSTER_API_PORT" psg-admin admin
  touch "$d/.done"
}
