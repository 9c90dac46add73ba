#!/usr/bin/env bash
# Builds presync's test guest: a Debian cloud kernel plus an initramfs holding
# busybox and the continuity workload (test-guest/workload.c).
#
#   scripts/build-guest.sh [OUTDIR]     (default: test-guest/build/)
#
# Outputs OUTDIR/vmlinuz and OUTDIR/initrd.img. Downloads are cached in
# OUTDIR/cache; a second run with unchanged inputs does nothing. The kernel is
# only extracted from its .deb, never installed on the host.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/test-guest/build}"
mkdir -p "$OUT/cache"
OUT="$(cd "$OUT" && pwd)"
CACHE="$OUT/cache"
SRC="$ROOT/test-guest/workload.c"

log() { echo "build-guest: $*" >&2; }

# --- kernel -----------------------------------------------------------------
if [ ! -s "$OUT/vmlinuz" ]; then
  # The meta package names the concrete kernel in its Depends; resolving it
  # locally avoids guessing versions.
  pkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  if [ -z "$pkg" ]; then
    log "cannot resolve linux-image-cloud-amd64 (run apt-get update?)"
    exit 1
  fi
  deb="$(ls "$CACHE"/"$pkg"_*.deb 2>/dev/null | head -n1 || true)"
  if [ -z "$deb" ]; then
    log "downloading $pkg"
    (cd "$CACHE" && apt-get download "$pkg" >&2)
    deb="$(ls "$CACHE"/"$pkg"_*.deb | head -n1)"
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
  cp "$(ls "$tmp"/boot/vmlinuz-* | head -n1)" "$OUT/vmlinuz.tmp"
  mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
  rm -rf "$tmp"
  trap - EXIT
  log "kernel: $OUT/vmlinuz ($pkg)"
fi

# --- busybox ------------------------------------------------------------------
BUSYBOX=""
if [ -x /bin/busybox ] && ! readelf -l /bin/busybox 2>/dev/null | grep -q 'program interpreter'; then
  BUSYBOX=/bin/busybox
elif [ -x "$CACHE/busybox-root/bin/busybox" ]; then
  BUSYBOX="$CACHE/busybox-root/bin/busybox"
else
  log "downloading busybox-static"
  (cd "$CACHE" && apt-get download busybox-static >&2)
  deb="$(ls "$CACHE"/busybox-static_*.deb | head -n1)"
  dpkg-deb -x "$deb" "$CACHE/busybox-root"
  BUSYBOX="$CACHE/busybox-root/bin/busybox"
fi

# --- workload -----------------------------------------------------------------
if [ ! -x "$OUT/workload" ] || [ "$SRC" -nt "$OUT/workload" ]; then
  gcc -static -O2 -Wall -Wextra -o "$OUT/workload.tmp" "$SRC"
  mv "$OUT/workload.tmp" "$OUT/workload"
  log "workload: $OUT/workload"
fi

# --- initramfs ------------------------------------------------------------------
stamp="$(cat "$OUT/workload" "$BUSYBOX" "$0" | sha256sum | cut -c1-16)"
if [ -s "$OUT/initrd.img" ] && [ "$(cat "$OUT/initrd.stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,etc}
cp "$BUSYBOX" "$root/bin/busybox"
cp "$OUT/workload" "$root/bin/workload"
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "presync-guest: init"
/bin/workload </dev/console >/dev/console 2>&1
echo "presync-guest: workload exited rc=$?"
# PID 1 must never exit: the kernel would panic.
while :; do sleep 3600; done
EOF
chmod 755 "$root/init"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -9 >"$OUT/initrd.img.tmp"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
echo "$stamp" >"$OUT/initrd.stamp"
log "initramfs: $OUT/initrd.img"
