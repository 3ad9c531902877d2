#!/usr/bin/env bash
# Starts a real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and KWOK with one Ready fake Node, then installs Istio's VirtualService and DestinationRule CRDs.
# Every process is recorded by pid in $CP_STATE/pids so down.sh stops exactly these. Prints the kubeconfig path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

started=$SECONDS
bin=$("$here/build.sh" | tail -n 1)
if plane_running; then
  die "a plane is running already (state in $CP_STATE); run down.sh first, or set FLEDGE_PLANE_DIR for a second one"
fi
[ -s "$CP_STATE/pids" ] && log "clearing stale state of a plane whose processes are gone ($CP_STATE)"
rm -rf "$CP_STATE"
mkdir -p "$CP_STATE"/{pki,etcd,logs}
: >"$CP_STATE/pids"
# If anything below fails, stop what was started so no process is left behind.
trap 'code=$?; if [ $code -ne 0 ]; then log "start failed; stopping what started (logs in $CP_STATE/logs)"; tail -n 20 "$CP_STATE"/logs/*.log >&2 || true; FLEDGE_KEEP_LOGS=1 "$here/down.sh" || true; fi' EXIT

# --- ports: ask the kernel for free loopback ports, all at once so they are distinct.
read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)
printf 'ETCD_PORT=%s\nAPI_PORT=%s\n' "$ETCD_PORT" "$API_PORT" >"$CP_STATE/ports.env"

# --- certificates: a CA, the API server's serving cert, an admin client cert, the service-account key.
pki=$CP_STATE/pki
openssl_quiet() { openssl "$@" 2>/dev/null; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=fledge-plane-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt"
issue_cert() { # issue_cert NAME SUBJECT [EXTFILE]
  openssl_quiet req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr"
  openssl_quiet x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 7 -out "$pki/$1.crt" ${3:+-extfile "$3"}
}
cat >"$pki/serving.ext" <<EXT
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc
extendedKeyUsage = serverAuth
EXT
cat >"$pki/client.ext" <<EXT
extendedKeyUsage = clientAuth
EXT
issue_cert apiserver "/CN=kube-apiserver" "$pki/serving.ext"
issue_cert admin "/O=system:masters/CN=admin" "$pki/client.ext"
openssl_quiet genrsa -out "$pki/sa.key" 2048
openssl_quiet rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

# start NAME ARGS...: run a binary from the cache in the background, log to logs/NAME.log, record its pid.
start() {
  local name=$1
  shift
  "$bin/$name" "$@" >"$CP_STATE/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$CP_STATE/pids"
}
# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds, failing after SECONDS.
wait_for() {
  local what=$1 limit=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what not ready after ${limit}s"
    sleep 0.5
  done
  log "$what ready after $((SECONDS - started)) s"
}

# --- etcd
start etcd --name=fledge --data-dir="$CP_STATE/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="fledge=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync=true --log-level=warn
wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver (FLEDGE_PLANE_AUDIT=1 writes a metadata-level audit log, to count a client's requests)
audit_flags=()
if [ -n "${FLEDGE_PLANE_AUDIT:-}" ]; then
  printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n' >"$CP_STATE/audit-policy.yaml"
  audit_flags=(--audit-policy-file="$CP_STATE/audit-policy.yaml" --audit-log-path="$CP_STATE/logs/audit.log")
fi
start kube-apiserver "${audit_flags[@]}" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --secure-port="$API_PORT" --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" --client-ca-file="$pki/ca.crt" \
  --cert-dir="$pki" --service-account-issuer="https://127.0.0.1:$API_PORT" \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 --authorization-mode=RBAC \
  --disable-admission-plugins=ServiceAccount,TaintNodesByCondition --allow-privileged=true
api="https://127.0.0.1:$API_PORT"
wait_for kube-apiserver 60 curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$api/readyz"

# --- kubeconfig (admin, system:masters) used by the other components, the tests and the demo
cat >"$CP_KUBECONFIG" <<KC
apiVersion: v1
kind: Config
clusters:
- name: fledge-plane
  cluster:
    server: $api
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: fledge-plane
  context: {cluster: fledge-plane, user: admin}
current-context: fledge-plane
KC
kc() { "$bin/kubectl" --kubeconfig "$CP_KUBECONFIG" "$@"; }
kube_flags=(--kubeconfig="$CP_KUBECONFIG" --authentication-kubeconfig="$CP_KUBECONFIG"
  --authorization-kubeconfig="$CP_KUBECONFIG" --leader-elect=false --bind-address=127.0.0.1)

# No node-lifecycle controller runs (KWOK nodes send no heartbeats), so the not-ready taint that admission
# would put on a new Node would never be lifted: TaintNodesByCondition is disabled above for that reason.

# Client rate limits well above the defaults (20 and 50 requests/s), so `make scale`'s thousands of pods are
# limited by the plane's CPU, not by a client-side throttle; tests are unaffected (they create a few pods).
qps_flags=(--kube-api-qps=1000 --kube-api-burst=2000)

# --- controllers: only those a canary's life needs; endpoints controllers give Services their KWOK pods.
start kube-controller-manager "${kube_flags[@]}" --secure-port="$KCM_PORT" \
  --controllers=deployment-controller,replicaset-controller,garbage-collector-controller,namespace-controller,endpoints-controller,endpointslice-controller,horizontal-pod-autoscaler-controller \
  --concurrent-deployment-syncs=10 --concurrent-replicaset-syncs=10 "${qps_flags[@]}"
start kube-scheduler "${kube_flags[@]}" --secure-port="$SCHED_PORT" "${qps_flags[@]}"

# --- KWOK: fake nodes whose pods become Running and Ready
start kwok --kubeconfig="$CP_KUBECONFIG" --config="$bin/kwok-stages.yaml" --manage-all-nodes=true \
  --cidr=10.244.0.0/16 --node-ip=127.0.0.1 --server-address="127.0.0.1:$KWOK_PORT"
kc apply -f - >/dev/null <<'NODE'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "10000"}
  capacity: {cpu: "32", memory: 256Gi, pods: "10000"}
NODE
wait_for "node kwok-node-0" 60 kc wait --for=condition=Ready node/kwok-node-0 --timeout=1s

# --- Istio's traffic CRDs (FLEDGE_PLANE_ISTIO=0 leaves them out: a cluster without Istio)
# (kubectl warns about Istio's `format: binary`; the warning is noise, errors still fail the script)
if [ "${FLEDGE_PLANE_ISTIO:-1}" != 0 ]; then
  kc apply --server-side -f "$bin/istio-crds.yaml" >/dev/null 2>"$CP_STATE/logs/istio-crds.log"
  wait_for "istio CRDs" 60 kc wait --for=condition=Established --timeout=1s \
    crd/virtualservices.networking.istio.io crd/destinationrules.networking.istio.io
fi

trap - EXIT
log "plane ready in $((SECONDS - started)) s; stop it with tests/controlplane/down.sh"
echo "$CP_KUBECONFIG"
