#!/usr/bin/env bash
# Builds the fledge container image on this machine without a Docker engine or registry access: buildah
# (vfs storage, chroot isolation) assembles a distroless-style image FROM scratch holding the release binary
# (default policy embedded) and the few glibc libraries it links, runs it once to print `fledge --version`,
# and exports it as an OCI archive. The Dockerfile builds the same image where registries are reachable.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
tag=${FLEDGE_IMAGE:-localhost/fledge:dev}
out=${FLEDGE_IMAGE_ARCHIVE:-$root/target/fledge-image.oci.tar}

if ! command -v buildah >/dev/null; then
  echo "[image] installing buildah (Debian)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah crun >/dev/null
fi
"$root/scripts/setup.sh"
echo "[image] cargo build --release" >&2
(cd "$root" && cargo build --release --locked --bin fledge)
bin=$root/target/release/fledge

container=$(buildah from scratch)
trap 'buildah rm "$container" >/dev/null 2>&1 || true' EXIT
mnt=$(buildah mount "$container")
# The dynamic loader and every library the binary links, at the paths it expects.
for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  mkdir -p "$mnt$(dirname "$lib")"
  cp -L "$lib" "$mnt$lib"
done
install -D -m 0755 "$bin" "$mnt/usr/local/bin/fledge"
mkdir -p "$mnt/tmp" "$mnt/var/cache/fledge"
chmod 1777 "$mnt/tmp"
chown 65532:65532 "$mnt/var/cache/fledge"
buildah umount "$container" >/dev/null
buildah config --entrypoint '["/usr/local/bin/fledge"]' --cmd controller --user 65532:65532 \
  --env FLEDGE_POLICY_CACHE=/var/cache/fledge --port 8080 \
  --label org.opencontainers.image.source=https://github.com/fledge-dev/fledge "$container"
buildah commit --quiet "$container" "$tag" >/dev/null
echo "[image] built $tag ($(buildah images --format '{{.Size}}' "$tag"))" >&2

# Start it once: podman needs rlimit privileges many sandboxes lack, buildah's chroot isolation does not.
runner=$(buildah from "$tag")
buildah run --isolation chroot "$runner" -- /usr/local/bin/fledge --version
buildah rm "$runner" >/dev/null
rm -f "$out"
buildah push --quiet "$tag" "oci-archive:$out" >/dev/null
echo "[image] exported $out" >&2
