#!/usr/bin/env bash
# The seed story, live. Until the controller lands (issue: Canary lifecycle) this shows the real local
# plane the story will run on: a Ready KWOK node and Istio's CRDs, then stops it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
bin=$("$root/tests/controlplane/build.sh" | tail -n 1)
cargo build --locked --manifest-path "$root/Cargo.toml"
kubeconfig=$("$root/tests/controlplane/up.sh" | tail -n 1)
trap '"$root/tests/controlplane/down.sh"' EXIT
kc() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

echo "== the local control plane (kubeconfig: $kubeconfig)"
kc get nodes -o wide
kc get crds
echo
echo "The canary story (create a Canary, ship podinfo:3.1.1, watch 0→20→40→…→promoted, delete and restore)"
echo "arrives with the controller. fledge so far:"
"$root/target/debug/fledge" --help
