#!/usr/bin/env bash
# Builds presync's real test VM (test-guest/README.md, "The real VM"): the
# Debian cloud kernel, a small initramfs that loads the kernel package's own
# virtio modules and switch_roots to an ext4 root file system on a virtio-blk
# disk image. The root holds busybox, the memory-continuity workload
# (test-guest/workload.c) and guestd (test-guest/real-vm/guestd.c: a TCP echo
# service and a disk writer). Debian packages are downloaded with
# apt-get download and unpacked, never installed; the file system is made with
# mkfs.ext4 -d (no loop mount, no root needed).
#
#   scripts/build-real-vm.sh [OUTDIR]      (default: test-guest/build/real-vm/)
#
# Outputs OUTDIR/vmlinuz, OUTDIR/initrd.img, OUTDIR/rootfs.img (a sparse raw
# image, used as read-write -drive: copy it per VM) and OUTDIR/versions.txt.
# The kernel and busybox come from scripts/build-guest.sh's cache; a second run
# with unchanged inputs does nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/test-guest/build/real-vm}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SRC="$ROOT/test-guest/real-vm"
DISK_MIB=128

log() { echo "build-real-vm: $*" >&2; }

# The kernel, busybox and the workload: build-guest.sh's, in its own directory.
GB="$ROOT/test-guest/build"
"$ROOT/scripts/build-guest.sh" "$GB" >/dev/null
CACHE="$GB/cache"
kdeb="$(ls "$CACHE"/linux-image-*-cloud-amd64_*.deb | head -n1)"
BUSYBOX=/bin/busybox
if ! [ -x /bin/busybox ] || readelf -l /bin/busybox 2>/dev/null | grep -q 'program interpreter'; then
  BUSYBOX="$CACHE/busybox-root/bin/busybox"
fi

if [ ! -x "$OUT/guestd" ] || [ "$SRC/guestd.c" -nt "$OUT/guestd" ]; then
  gcc -static -O2 -Wall -Wextra -o "$OUT/guestd.tmp" "$SRC/guestd.c"
  mv "$OUT/guestd.tmp" "$OUT/guestd"
fi

stamp="$(cat "$kdeb" "$BUSYBOX" "$GB/workload" "$OUT/guestd" "$SRC"/*.sh "$0" | sha256sum | cut -c1-16)"
if [ -s "$OUT/rootfs.img" ] && [ -s "$OUT/initrd.img" ] && [ -s "$OUT/vmlinuz" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
command -v mkfs.ext4 >/dev/null || { log "mkfs.ext4 not found: install e2fsprogs (scripts/install-system-deps.sh)"; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$kdeb" "$tmp/k"
kver="$(ls "$tmp/k/lib/modules" | head -n1)"
cp "$(ls "$tmp"/k/boot/vmlinuz-* | head -n1)" "$OUT/vmlinuz.tmp"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"

# --- initramfs: busybox + the virtio modules ------------------------------------
# Dependency order, from each module's depends= (see modules.dep on an installed
# system): virtio_pci needs virtio_ring, virtio, virtio_pci_modern_dev and
# virtio_pci_legacy_dev; virtio_net needs net_failover, which needs failover.
MODS="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net"
ird="$tmp/initramfs"
mkdir -p "$ird"/{bin,proc,sys,dev,lib/modules}
cp "$BUSYBOX" "$ird/bin/busybox"
for m in $MODS; do
  f="$(find "$tmp/k/lib/modules/$kver" -name "$m.ko" | head -n1)"
  if [ -z "$f" ]; then
    if grep -q "/$m.ko\$" "$tmp/k/lib/modules/$kver/modules.builtin"; then continue; fi
    log "module $m is neither in the package nor built in"
    exit 1
  fi
  cp "$f" "$ird/lib/modules/"
  echo "$m" >>"$ird/lib/modules/load-order"
done
cp "$SRC/initramfs-init.sh" "$ird/init"
chmod 755 "$ird/init"
(cd "$ird" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -9 >"$OUT/initrd.img.tmp"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"

# --- root file system ---------------------------------------------------------------
rfs="$tmp/rootfs"
mkdir -p "$rfs"/{bin,sbin,proc,sys,dev,tmp,etc,root,var/lib/presync}
cp "$BUSYBOX" "$rfs/bin/busybox"
for a in $("$BUSYBOX" --list); do
  [ "$a" = busybox ] || [ -e "$rfs/bin/$a" ] || ln -s busybox "$rfs/bin/$a"
done
cp "$GB/workload" "$rfs/bin/workload"
cp "$OUT/guestd" "$rfs/bin/guestd"
cp "$SRC/rootfs-init.sh" "$rfs/sbin/init"
chmod 755 "$rfs/sbin/init"
echo presync-real-vm >"$rfs/etc/hostname"
bbver="$("$BUSYBOX" | head -n1 | awk '{print $2}')"
{
  dpkg-deb -f "$kdeb" Package Version | awk '{print $2}' | paste -sd' '
  echo "busybox $bbver ($BUSYBOX)"
  echo "e2fsprogs $(mkfs.ext4 -V 2>&1 | head -n1 | awk '{print $2}')"
} >"$OUT/versions.txt"
cp "$OUT/versions.txt" "$rfs/etc/presync-versions"
rm -f "$OUT/rootfs.img.tmp"
truncate -s "${DISK_MIB}M" "$OUT/rootfs.img.tmp"
# lazy_itable_init=0: no background zeroing in the guest (disk writes that are not the disk writer's).
mkfs.ext4 -q -F -L presync-root -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 -d "$rfs" "$OUT/rootfs.img.tmp"
mv "$OUT/rootfs.img.tmp" "$OUT/rootfs.img"
echo "$stamp" >"$OUT/stamp"
log "kernel $kver, initramfs $(du -k "$OUT/initrd.img" | cut -f1) KiB, root file system $OUT/rootfs.img (${DISK_MIB} MiB raw, $(du -k "$OUT/rootfs.img" | cut -f1) KiB used)"
