#!/usr/bin/env bash
# Rollout figures on a real plane with the release binary: set image → scale-up latency, API requests per
# canary per interval, teardown time, controller RSS. Starts the plane and always stops it again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/setup.sh"
bin=$("$root/tests/controlplane/build.sh" | tail -n 1)
# Build before the plane starts, so the plane is not kept waiting on the compiler.
cargo bench --locked --bench rollout --no-run
kubeconfig=$("$root/tests/controlplane/up.sh" | tail -n 1)
trap '"$root/tests/controlplane/down.sh"' EXIT
export KUBECONFIG=$kubeconfig PATH="$bin:$PATH"
cargo bench --locked --bench rollout
