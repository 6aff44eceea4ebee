#!/usr/bin/env bash
# Smoke check of a running test cluster (bash scripts/cluster.sh smoke [--keep]):
# agnhost Deployment (2 pods) + ClusterIP Service; pod-to-pod TCP, Service via
# kube-proxy (nftables), kubectl exec and logs (API server -> kubelet -> containerd).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/config.sh"
kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
ns=psg-smoke keep=0
[ "${1:-}" = --keep ] && keep=1
passed=0 failed=0
check() {  # check NAME CMD...
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then passed=$((passed + 1)); echo "smoke: PASS $name${out:+: $(echo "$out" | tail -1)}"
  else failed=$((failed + 1)); echo "smoke: FAIL $name: $(echo "$out" | tail -3 | tr '\n' ' ')"; fi
}
# GET /hostname from inside POD with busybox nc (busybox-static's wget -T
# crashes with SIGSEGV on Debian bookworm); prints the answering pod's name
http_get() {
  local out
  out=$(kc -n "$ns" exec "$1" -- sh -c "printf 'GET /hostname HTTP/1.0\r\n\r\n' | nc -w 3 $2 $3") || return 1
  out=$(printf '%s' "$out" | tail -n 1)
  [[ "$out" == web-* ]] && echo "$out"
}
both_endpoints() {
  local i seen=""
  for i in 1 2 3 4 5 6 7 8 9 10 11 12; do seen+="$(http_get "$@")"$'\n'; done
  [ "$(printf '%s' "$seen" | sort -u | grep -c .)" = 2 ] && echo "answers from: $(printf '%s' "$seen" | sort -u | tr '\n' ' ')"
}
t0=$SECONDS
kc delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kc create namespace "$ns" >/dev/null
kc -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: agnhost
        image: $AGNHOST_IMAGE
        imagePullPolicy: Never
        args: ["netexec", "--http-port=8080", "--udp-port=8081"]
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
YAML
check "deployment ready" kc -n "$ns" rollout status deploy/web --timeout=180s
if [ "$failed" != 0 ]; then
  kc -n "$ns" get events --sort-by=.lastTimestamp | tail -5
  echo "smoke: $passed passed, $failed failed"
  exit 1
fi
mapfile -t pods < <(kc -n "$ns" get pods -l app=web -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}')
mapfile -t ips < <(kc -n "$ns" get pods -l app=web -o 'jsonpath={range .items[*]}{.status.podIP}{"\n"}{end}')
svc=$(kc -n "$ns" get svc web -o 'jsonpath={.spec.clusterIP}')
echo "smoke: pods ${pods[*]} ips ${ips[*]} service $svc"
if [ ${#pods[@]} -eq 2 ]; then
  check "kubectl exec" kc -n "$ns" exec "${pods[0]}" -- /agnhost connect --timeout=3s "127.0.0.1:8080"
  check "pod-to-pod tcp ${ips[0]} -> ${ips[1]}:8080" kc -n "$ns" exec "${pods[0]}" -- /agnhost connect --timeout=3s "${ips[1]}:8080"
  check "pod-to-pod http" http_get "${pods[0]}" "${ips[1]}" 8080
  check "service $svc:80 (kube-proxy nftables)" http_get "${pods[0]}" "$svc" 80
  check "service reaches both endpoints, hairpin included" both_endpoints "${pods[1]}" "$svc" 80
  check "pod reaches kubernetes service $KUBERNETES_SVC_IP:443" kc -n "$ns" exec "${pods[0]}" -- /agnhost connect --timeout=3s "$KUBERNETES_SVC_IP:443"
  check "kubectl logs" kc -n "$ns" logs "${pods[0]}" --tail=1
else
  failed=$((failed + 1)); echo "smoke: FAIL expected 2 pods, got ${#pods[@]}"
fi
[ "$keep" = 1 ] || kc delete namespace "$ns" --wait=false >/dev/null
echo "smoke: took $((SECONDS - t0))s"
echo "smoke: $passed passed, $failed failed"
[ "$failed" = 0 ]
