#!/usr/bin/env bash
# Scale figures on a real plane with the release binary: N canaries beside 11,000 noise objects, for each N in
# FLEDGE_SCALE_N (default 100,300,1000); see benches/scale.rs for what is measured. Each N gets a plane of its
# own (started here, always stopped again), so one run's leftovers never load the next.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/setup.sh"
bin=$("$root/tests/controlplane/build.sh" | tail -n 1)
# Build before any plane starts, so no plane is kept waiting on the compiler.
cargo bench --locked --bench scale --no-run
export PATH="$bin:$PATH"
summary=$(mktemp)
for n in $(echo "${FLEDGE_SCALE_N:-100,300,1000}" | tr ',' ' '); do
  export FLEDGE_PLANE_DIR
  FLEDGE_PLANE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fledge-plane-scale.XXXXXX")
  kubeconfig=$("$root/tests/controlplane/up.sh" | tail -n 1)
  trap '"$root/tests/controlplane/down.sh"' EXIT
  KUBECONFIG=$kubeconfig FLEDGE_SCALE_N=$n cargo bench --locked --bench scale | tee -a "$summary.log"
  "$root/tests/controlplane/down.sh"
  trap - EXIT
  grep '^ *[0-9]' "$summary.log" | tail -n 1 >>"$summary"
done
echo
echo "fledge at scale (release binary, local plane with KWOK, interval 10 s, 20 % steps to 60 %, noise present)"
grep -m 1 '^ *N ' "$summary.log"
cat "$summary"
