#!/usr/bin/env bash
# Builds presync's test guest: a Debian cloud kernel plus an initramfs holding
# busybox, the continuity workload (test-guest/workload.c) and real programs
# from Debian packages (test-guest/apps/README.md), unpacked, never installed.
#
#   scripts/build-guest.sh [--apps] [OUTDIR]     (default: test-guest/build/)
#
# Outputs OUTDIR/vmlinuz and OUTDIR/initrd.img; with --apps also
# OUTDIR/initrd-apps.img, the same plus the real programs (~10 MB instead of
# ~1 MB, so the tests that need only the workload boot the small one). Downloads are cached in
# OUTDIR/cache; a second run with unchanged inputs does nothing. The kernel is
# only extracted from its .deb, never installed on the host.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
APPS=0
if [ "${1:-}" = "--apps" ]; then
  APPS=1
  shift
fi
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
# pack DIR FILE: a gzip'd newc cpio of DIR.
pack() {
  (cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -9 >"$2.tmp"
  mv "$2.tmp" "$2"
}
stamp="$(cat "$OUT/workload" "$BUSYBOX" "$0" | sha256sum | cut -c1-16)"
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
app=""
for x in $(cat /proc/cmdline); do
  case "$x" in presync.app=*) app="${x#presync.app=}" ;; esac
done
if [ -n "$app" ]; then
  # A real program instead of the continuity workload (test-guest/apps/README.md).
  mount -t tmpfs -o size=96m tmpfs /tmp
  echo "presync-guest: app $app"
  /usr/bin/run-app "$app" </dev/null >/dev/console 2>&1
  echo "presync-guest: app exited rc=$?"
else
  /bin/workload </dev/console >/dev/console 2>&1
  echo "presync-guest: workload exited rc=$?"
fi
# PID 1 must never exit: the kernel would panic.
while :; do sleep 3600; done
EOF
chmod 755 "$root/init"
if [ ! -s "$OUT/initrd.img" ] || [ "$(cat "$OUT/initrd.stamp" 2>/dev/null)" != "$stamp" ]; then
  pack "$root" "$OUT/initrd.img"
  echo "$stamp" >"$OUT/initrd.stamp"
  log "initramfs: $OUT/initrd.img"
fi
[ "$APPS" = 1 ] || exit 0

# --- real programs (test-guest/apps/README.md) ------------------------------------
# Debian packages, downloaded with apt-get download and unpacked (never
# installed); the programs and every shared library they load (ldd against the
# unpacked tree, libc included) go into the initramfs.
APP_PKGS="vim-tiny vim-common flac libflac12 libogg0 vpx-tools libvpx7 xz-utils liblzma5 sqlite3 libsqlite3-0 libreadline8 coreutils libacl1 libselinux1 libpcre2-8-0 libtinfo6 libc6 libstdc++6 libgcc-s1 zlib1g"
APP_BINS="usr/bin/vim.tiny usr/bin/flac usr/bin/vpxdec usr/bin/xz usr/bin/sqlite3 usr/bin/sort"
APPS_SRC="$ROOT/test-guest/apps"
DEBS="$CACHE/apps-debs"
APPROOT="$CACHE/apps-root"
mkdir -p "$DEBS"
missing=""
for p in $APP_PKGS; do
  ls "$DEBS/${p}"_*.deb >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  log "downloading$missing"
  (cd "$DEBS" && apt-get download $missing >&2)
fi
debs_stamp="$(ls "$DEBS" | sha256sum | cut -c1-16)"
if [ "$(cat "$APPROOT.stamp" 2>/dev/null)" != "$debs_stamp" ]; then
  rm -rf "$APPROOT"
  mkdir -p "$APPROOT"
  for d in "$DEBS"/*.deb; do dpkg-deb -x "$d" "$APPROOT"; done
  echo "$debs_stamp" >"$APPROOT.stamp"
fi
APPLIBS="$APPROOT/lib/x86_64-linux-gnu:$APPROOT/usr/lib/x86_64-linux-gnu"

if [ ! -x "$OUT/apptools" ] || [ "$APPS_SRC/apptools.c" -nt "$OUT/apptools" ]; then
  gcc -static -O2 -Wall -Wextra -o "$OUT/apptools.tmp" "$APPS_SRC/apptools.c" -lm
  mv "$OUT/apptools.tmp" "$OUT/apptools"
fi
# Media made at build time with the packages' own encoders, run from the unpacked tree.
if [ ! -s "$CACHE/song.flac" ]; then
  "$OUT/apptools" gen-wav 20 >"$CACHE/song.wav"
  LD_LIBRARY_PATH="$APPLIBS" "$APPROOT/usr/bin/flac" -5 -s -f -o "$CACHE/song.flac" "$CACHE/song.wav"
  rm -f "$CACHE/song.wav"
fi
if [ ! -s "$CACHE/clip.webm" ]; then
  "$OUT/apptools" gen-y4m 320 180 24 240 >"$CACHE/clip.y4m"
  LD_LIBRARY_PATH="$APPLIBS" "$APPROOT/usr/bin/vpxenc" --codec=vp8 --target-bitrate=300 --good --cpu-used=8 -q -o "$CACHE/clip.webm" "$CACHE/clip.y4m" >&2
  rm -f "$CACHE/clip.y4m"
fi
versions=""
for p in $APP_PKGS; do
  versions="$versions$(dpkg-deb -f "$(ls "$DEBS/${p}"_*.deb | head -n1)" Package Version | awk '{print $2}' | paste -sd' ') | "
done
# What went in, for the provenance of traces recorded in this guest.
echo "$versions" | tr '|' '\n' | sed 's/^ *//; /^$/d' >"$OUT/apps-versions.txt"
kdeb="$(ls "$CACHE"/linux-image-*.deb 2>/dev/null | head -n1 || true)"
[ -n "$kdeb" ] && dpkg-deb -f "$kdeb" Package Version | awk '{print $2}' | paste -sd' ' >"$OUT/kernel.txt"


apps_stamp="$(cat "$OUT/initrd.img" "$OUT/apptools" "$APPS_SRC/run-app.sh" "$CACHE/song.flac" "$CACHE/clip.webm" <(echo "$versions") | sha256sum | cut -c1-16)"
if [ -s "$OUT/initrd-apps.img" ] && [ "$(cat "$OUT/initrd-apps.stamp" 2>/dev/null)" = "$apps_stamp" ]; then
  exit 0
fi
mkdir -p "$root/usr/bin" "$root/lib/x86_64-linux-gnu" "$root/lib64" "$root/usr/share/presync"
cp "$OUT/apptools" "$root/usr/bin/apptools"
cp "$APPS_SRC/run-app.sh" "$root/usr/bin/run-app"
cp "$CACHE/song.flac" "$CACHE/clip.webm" "$root/usr/share/presync/"
cp "$OUT/apps-versions.txt" "$root/usr/share/presync/versions.txt"
for b in $APP_BINS; do
  cp "$APPROOT/$b" "$root/usr/bin/"
  LD_LIBRARY_PATH="$APPLIBS" ldd "$APPROOT/$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$lib" in
      "$APPROOT"/*) cp -L "$lib" "$root/lib/x86_64-linux-gnu/" ;;
      *) log "$b needs $lib, which no package in APP_PKGS provides"; exit 1 ;;
    esac
  done
done
cp -L "$APPROOT/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$root/lib/x86_64-linux-gnu/"
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"
pack "$root" "$OUT/initrd-apps.img"
echo "$apps_stamp" >"$OUT/initrd-apps.stamp"
log "initramfs with the real programs: $OUT/initrd-apps.img"
