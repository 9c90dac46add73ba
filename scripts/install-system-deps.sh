#!/usr/bin/env bash
# Installs the system packages the real-QEMU tests, the test guest and the
# report tests (headless chromium; DejaVu fonts for PNG charts) need.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

PKGS=(qemu-system-x86 busybox-static cpio iproute2 e2fsprogs chromium fonts-dejavu-core)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# build-guest.sh compiles the workload statically.
if ! command -v gcc >/dev/null 2>&1; then missing+=(gcc libc6-dev); fi

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-system-deps: all present" >&2
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "install-system-deps: installing ${missing[*]}" >&2
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
