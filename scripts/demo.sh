#!/usr/bin/env bash
# The seed story, live on a real local control plane: a Canary initialises podinfo, podinfo:3.1.1 is
# shipped, the weights walk 0 → 20 → 40 → 60 until the primary is promoted, and deleting the Canary restores
# podinfo (its replicas, the Service's selector). The plane and the controller stop when the script ends.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
bin=$("$root/tests/controlplane/build.sh" | tail -n 1)
cargo build --locked --manifest-path "$root/Cargo.toml" --bin fledge
kubeconfig=$("$root/tests/controlplane/up.sh" | tail -n 1)
log=$(mktemp -t fledge-controller.XXXXXX.log)
controller_pid=
stop() {
  [ -n "$controller_pid" ] && kill "$controller_pid" 2>/dev/null && wait "$controller_pid" 2>/dev/null
  "$root/tests/controlplane/down.sh"
}
trap stop EXIT
kc() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
started=$SECONDS

show() {
  echo
  echo "=== $1 ($((SECONDS - started)) s)"
  kc -n test get canary podinfo 2>/dev/null || true
  kc -n test get deployments -o custom-columns='DEPLOYMENT:.metadata.name,IMAGE:.spec.template.spec.containers[0].image,REPLICAS:.spec.replicas,READY:.status.readyReplicas'
  kc -n test get services -o custom-columns='SERVICE:.metadata.name,SELECTOR:.spec.selector'
  kc -n test get virtualservice podinfo -o jsonpath='{range .spec.http[0].route[*]}{"VirtualService podinfo → "}{.destination.host}{" weight "}{.weight}{"\n"}{end}' 2>/dev/null || echo "VirtualService podinfo: none"
}

echo "== installing the Canary CRD and the seed story's podinfo (kubeconfig: $kubeconfig)"
kc apply --server-side -f "$root/deploy/crds.yaml" >/dev/null
# fledge's own namespace, as the install has it: the key of its Secret checksums is kept there.
kc apply -f "$root/deploy/namespace.yaml" >/dev/null
kc wait --for=condition=Established crd/canaries.fledge.dev --timeout=60s >/dev/null
kc apply -f "$root/examples/podinfo/namespace.yaml" >/dev/null
kc apply -f "$root/examples/podinfo/deployment.yaml" -f "$root/examples/podinfo/service.yaml" >/dev/null
kc -n test rollout status deployment/podinfo --timeout=60s >/dev/null
show "podinfo before fledge"

echo
echo "== starting fledge controller (log: $log)"
"$root/target/debug/fledge" controller --kubeconfig "$kubeconfig" --min-interval 3s --listen 127.0.0.1:${FLEDGE_DEMO_PORT:-18080} >"$log" 2>&1 &
controller_pid=$!
kc apply -f "$root/examples/podinfo/canary.yaml" >/dev/null

# watch NAME PHASE...: print the state at every change of phase or weight until one of PHASE is reached.
watch_until() {
  local last= state phase
  local deadline=$((SECONDS + 180))
  while [ $SECONDS -lt $deadline ]; do
    state=$(kc -n test get canary podinfo -o jsonpath='{.status.phase}/{.status.canaryWeight}' 2>/dev/null || true)
    phase=${state%/*}
    if [ "$state" != "$last" ] && [ -n "$phase" ]; then
      show "canary $phase, weight ${state#*/}"
      last=$state
    fi
    for want in "$@"; do
      [ "$phase" = "$want" ] && return 0
    done
    sleep 0.5
  done
  echo "timed out waiting for phase $*; controller log:" >&2
  tail -n 30 "$log" >&2
  return 1
}
watch_until Initialized

echo
echo "== shipping stefanprodan/podinfo:3.1.1"
kc -n test set image deployment/podinfo podinfod=stefanprodan/podinfo:3.1.1 >/dev/null
watch_until Succeeded Failed

echo
echo "== events on the canary"
kc -n test get events --field-selector involvedObject.kind=Canary --sort-by=.metadata.creationTimestamp \
  -o custom-columns='REASON:.reason,MESSAGE:.message' | awk '!seen[$0]++'
echo
rss_kib=$(ps -o rss= -p "$controller_pid" 2>/dev/null || echo 0)
echo "fledge controller RSS: $((rss_kib / 1024)) MiB"
echo "The primary now runs podinfo:3.1.1, the target is back at 0 and all traffic goes to the primary."

echo
echo "== deleting the Canary: fledge scales podinfo back up and points the Service at it before the primary goes"
kc -n test delete canary podinfo --timeout=120s >/dev/null
for _ in $(seq 1 60); do
  [ -z "$(kc -n test get deployment podinfo-primary --ignore-not-found -o name)" ] && break
  sleep 0.5
done
show "after deleting the Canary"
echo "Demo took $((SECONDS - started)) s."
