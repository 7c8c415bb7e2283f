#!/usr/bin/env bash
# What `make images` needs to build and run OCI images without a daemon (tests/images/): Debian's
# buildah (builds a Dockerfile and runs a command in an image, both with --isolation chroot) and
# mmdebstrap (the Debian root filesystem of the stand-in bases). Idempotent.
set -euo pipefail
need=()
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
