#!/usr/bin/env bash
# The disk test guest: the test guest (scripts/build-guest.sh) with a virtio-blk
# disk. An initramfs appended to the test guest's (the kernel unpacks both, the
# second overwriting /init) adds the virtio-blk modules of the same cloud kernel
# package and a disk writer (test-guest/disk/). Output: test-guest/build/initrd-disk.img.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/test-guest/build}"
bash "$ROOT/scripts/build-guest.sh" "$OUT"
OUT="$(cd "$OUT" && pwd)"
kdeb="$(ls "$OUT"/cache/linux-image-*.deb | head -n1)"
SRC="$ROOT/test-guest/disk"
stamp="$(cat "$OUT/initrd.img" "$kdeb" "$SRC"/*.sh "$0" | sha256sum | cut -c1-16)"
if [ -s "$OUT/initrd-disk.img" ] && [ "$(cat "$OUT/initrd-disk.stamp" 2>/dev/null)" = "$stamp" ]; then exit 0; fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$kdeb" "$tmp/k"
kver="$(ls "$tmp/k/lib/modules" | head -n1)"
ov="$tmp/overlay"
mkdir -p "$ov/lib/modules" "$ov/bin"
# Dependency order (each module's depends=): virtio_pci needs virtio_ring, virtio and the two virtio_pci_*_dev.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
  f="$(find "$tmp/k/lib/modules/$kver" -name "$m.ko" | head -n1)"
  if [ -z "$f" ]; then
    grep -q "/$m.ko\$" "$tmp/k/lib/modules/$kver/modules.builtin" && continue
    echo "build-disk-guest: module $m is neither in the package nor built in" >&2
    exit 1
  fi
  cp "$f" "$ov/lib/modules/"
  echo "$m" >>"$ov/lib/modules/load-order"
done
install -m 755 "$SRC/init.sh" "$ov/init"
install -m 755 "$SRC/disk-writer.sh" "$ov/bin/disk-writer"
(cd "$ov" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -9 >"$tmp/overlay.img"
cat "$OUT/initrd.img" "$tmp/overlay.img" >"$OUT/initrd-disk.img.tmp"
mv "$OUT/initrd-disk.img.tmp" "$OUT/initrd-disk.img"
echo "$stamp" >"$OUT/initrd-disk.stamp"
echo "build-disk-guest: $OUT/initrd-disk.img" >&2
