# Shared settings of the control-plane scripts (sourced, not run).
# shellcheck shell=bash
cp_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$cp_here/versions.env"

# Binaries live outside the checkout so clean clones and CI reuse them; keyed on every pinned version and on
# the build recipe (CP_RECIPE: bump it when build.sh builds differently, so a stale cache is not reused).
CP_CACHE=${FLEDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fledge}
CP_RECIPE=2
CP_BIN=$CP_CACHE/controlplane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-istio-$ISTIO_API_VERSION-r$CP_RECIPE
# Runtime state (certs, etcd data, pids, logs, kubeconfig) at a fixed path, so every tool can find it.
CP_STATE=${FLEDGE_PLANE_DIR:-${TMPDIR:-/tmp}/fledge-plane}
CP_KUBECONFIG=$CP_STATE/kubeconfig

log() { printf '[controlplane] %s\n' "$*" >&2; }
die() { printf '[controlplane] error: %s\n' "$*" >&2; exit 1; }
# alive PID NAME: the pid still runs the binary we started (pids can be reused).
alive() { [ -r "/proc/$1/cmdline" ] && tr '\0' '\n' <"/proc/$1/cmdline" | head -n 1 | grep -q "/$2\$"; }
# plane_running: some process recorded in $CP_STATE/pids still runs (a plane left by a reboot or kill is stale).
plane_running() {
  [ -s "$CP_STATE/pids" ] || return 1
  local pid name
  while read -r pid name; do alive "$pid" "$name" && return 0; done <"$CP_STATE/pids"
  return 1
}
