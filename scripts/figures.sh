#!/usr/bin/env bash
# Rollout figures on a real plane with the release binary: set image → scale-up latency, API requests per
# canary per interval, teardown time, controller RSS; then Policy apply → Ready and RSS with 20 Policies.
# Starts the plane and always stops it again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/setup.sh"
bin=$("$root/tests/controlplane/build.sh" | tail -n 1)
cache=${FLEDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fledge}
# The Python example, for the policy load figures.
py=$(mktemp -d)/exponential.wasm
(cd "$root/examples/policies/contract-0.1/python-exponential" &&
  "$cache/py-venv-componentize-0.25.1/bin/componentize-py" -d ../../../../wit/v0.1.0 -w step-policy componentize app --stub-wasi -o "$py")
export FLEDGE_PYTHON_POLICY=$py FLEDGE_REGISTRY_BIN=$cache/docker-registry-2.8.2/usr/bin/docker-registry
# Build before the plane starts, so the plane is not kept waiting on the compiler.
cargo bench --locked --bench rollout --bench policy_store --no-run
# A plane of its own (free ports, private state), so a developer's plane at the default path never blocks this run.
export FLEDGE_PLANE_DIR=${FLEDGE_PLANE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fledge-plane-run.XXXXXX")}
kubeconfig=$("$root/tests/controlplane/up.sh" | tail -n 1)
trap '"$root/tests/controlplane/down.sh"' EXIT
export KUBECONFIG=$kubeconfig PATH="$bin:$PATH"
cargo bench --locked --bench rollout
cargo bench --locked --bench policy_store
