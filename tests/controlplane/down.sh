#!/usr/bin/env bash
# Stops exactly the processes up.sh started (by recorded pid, newest first) and removes the plane's state.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

pidfile=$CP_STATE/pids
if [ ! -f "$pidfile" ]; then
  log "no plane state at $CP_STATE; nothing to stop"
  exit 0
fi
mapfile -t entries < <(tac "$pidfile")
for entry in "${entries[@]}"; do
  read -r pid name <<<"$entry"
  alive "$pid" "$name" && kill -TERM "$pid" 2>/dev/null
done
for entry in "${entries[@]}"; do
  read -r pid name <<<"$entry"
  for _ in $(seq 1 50); do alive "$pid" "$name" || break; sleep 0.1; done
  if alive "$pid" "$name"; then
    log "$name ($pid) ignored SIGTERM; killing"
    kill -KILL "$pid" 2>/dev/null
  fi
done
if [ -n "${FLEDGE_KEEP_LOGS:-}" ]; then
  rm -rf "$CP_STATE/etcd" "$pidfile"
  log "stopped; logs kept in $CP_STATE/logs"
else
  rm -rf "$CP_STATE"
  log "stopped"
fi
