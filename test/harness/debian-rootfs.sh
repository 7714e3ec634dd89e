#!/usr/bin/env bash
# A minimal Debian bookworm (debootstrap --variant=minbase) imported as a Docker image, for the
# patch strategy's end-to-end test. The rootfs tarball is cached, so a second run only imports.
# Usage: debian-rootfs.sh <image-tag>   (prints the image id on its last line)
set -euo pipefail

tag="${1:?usage: debian-rootfs.sh <image-tag>}"
cache="${SHADOWLAYER_E2E_CACHE:-/var/cache/shadowlayer-e2e}"
suite=bookworm
mirror=http://deb.debian.org/debian
# The name changes whenever what goes into the tarball does, so a stale cache is never used.
tarball="$cache/$suite-minbase-v2.tar"

mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  if ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  work="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  echo "debootstrap $suite (minbase) into $work" >&2
  debootstrap --variant=minbase "$suite" "$work/root" "$mirror" >&2
  # The rootfs's own package lists, caches and downloaded .debs are not part of the image (as in
  # Debian's images).
  rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"*.bin
  find "$work/root/var/cache/apt/archives" -name '*.deb' -delete
  tar --numeric-owner -C "$work/root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi

# Import again only when the tarball changed: every import makes a new image id (its creation time).
stamp="$(basename "$tarball")-$(stat -c '%s-%Y' "$tarball")"
label=org.shadowlayer.test.rootfs
if [ "$(docker image inspect --format "{{index .Config.Labels \"$label\"}}" "$tag" 2>/dev/null || true)" != "$stamp" ]; then
  docker import --change 'CMD ["bash"]' --change "LABEL $label=$stamp" "$tarball" "$tag" >&2
fi
docker image inspect --format '{{.Id}}' "$tag"
